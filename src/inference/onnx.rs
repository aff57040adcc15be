//! Loading ONNX graphs with tract the same way for every model: each graph's input names,
//! element types and shapes are checked against its contract and an error names the file
//! and the expectation when they differ, so a wrong or corrupt model fails at start with a
//! sentence, not mid-run with a shape panic.

use std::sync::Arc;

use tract_onnx::prelude::*;

/// An optimised graph, shareable across threads.
pub type Plan = Arc<TypedRunnableModel>;

/// A model file that is missing, unreadable, not ONNX, or not the expected graph.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    pub path: String,
    pub message: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// A reader that hashes what passes through it: a model file's sha256 from the same read
/// that loads it, not a second pass over hundreds of megabytes.
pub struct Sha256Reader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: std::io::Read> Sha256Reader<R> {
    pub fn new(inner: R) -> Self {
        use sha2::Digest;
        Self {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    /// The sha256 of everything read so far, as hex.
    pub fn hex(self) -> String {
        use sha2::Digest;
        hex(&self.hasher.finalize())
    }
}

impl<R: std::io::Read> std::io::Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The threads a graph runs on: the calling thread alone, or a pool of its own.
///
/// With a pool, the whole run goes *onto* one of the pool's threads: a parallel op then
/// starts its first share at once on the thread already running and only its second share
/// waits for the other thread to wake. Run from outside the pool (tract's
/// `multithread_tract_scope` alone), every parallel op woke both pool threads and parked
/// the caller: three threads on two cores. Measured here, the committed tiny X-CLIP graph
/// took 1.6-2.2 ms at 2 threads that way (1.85 ms at 1 thread) and 1.50 ms run inside
/// the pool; the full-size one 181-187 ms and 177-179 ms.
#[derive(Clone, Default)]
pub struct GraphThreads(tract_linalg::multithread::Executor);

impl GraphThreads {
    /// `threads` <= 1: the calling thread only.
    pub fn new(threads: usize) -> Self {
        use tract_linalg::multithread::Executor;
        Self(if threads > 1 {
            Executor::multithread_with_name(threads, "nvr-graph")
        } else {
            Executor::SingleThread
        })
    }

    /// `f` (which runs graphs) with tract's ops using these threads.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        match &self.0 {
            Executor::MultiThread(pool) => {
                // The executor is a thread-local setting: set on the pool thread that runs f.
                pool.install(|| multithread_tract_scope(self.0.clone(), f))
            }
            single => multithread_tract_scope(single.clone(), f),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_err(path: &str, message: impl Into<String>) -> LoadError {
    LoadError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// tract's optimiser with nvr-edge's fused ops (see [`super::ops`]) around it.
pub fn optimise(model: TypedModel) -> TractResult<Plan> {
    let mut model = model.into_decluttered()?;
    super::ops::fuse(&mut model)?;
    let mut model = model.into_optimized()?;
    super::ops::speed_up(&mut model)?;
    model.into_runnable()
}

/// Expected input: name, element type, and shape where `None` is a free (symbolic) size.
pub struct Expect {
    pub name: &'static str,
    pub dt: DatumType,
    pub shape: Vec<Option<i64>>,
}

fn describe_shape(shape: &[Option<i64>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("N".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", dims.join(","))
}

/// Load an ONNX graph from `bytes` (named `path` in errors), check its inputs against
/// `expect` and its output count, and optimise it for running.
pub fn build(
    path: &str,
    bytes: &[u8],
    expect: &[Expect],
    outputs: usize,
) -> Result<Plan, LoadError> {
    build_read(path, &mut std::io::Cursor::new(bytes), expect, outputs)
}

/// As [`build`], reading the graph from `reader` (a file: tract reads it into one buffer
/// and decodes the weights in place, so no second copy of a big model is held).
pub fn build_read(
    path: &str,
    reader: &mut dyn std::io::Read,
    expect: &[Expect],
    outputs: usize,
) -> Result<Plan, LoadError> {
    let model = super::ops::onnx()
        .model_for_read(reader)
        .map_err(|e| load_err(path, format!("not a loadable ONNX model: {e}")))?;
    let typed = model
        .into_typed()
        .map_err(|e| load_err(path, format!("cannot type the graph: {e:#}")))?;
    if typed.inputs.len() != expect.len() {
        return Err(load_err(
            path,
            format!(
                "has {} inputs; expected {} ({})",
                typed.inputs.len(),
                expect.len(),
                expect.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    for (i, e) in expect.iter().enumerate() {
        let name = &typed.node(typed.inputs[i].node).name;
        let fact = typed
            .input_fact(i)
            .map_err(|err| load_err(path, err.to_string()))?;
        let dims: Vec<Option<i64>> = fact.shape.iter().map(|d| d.to_i64().ok()).collect();
        let shape_ok = dims.len() == e.shape.len()
            && dims
                .iter()
                .zip(&e.shape)
                .all(|(got, want)| want.is_none() || got == want);
        if name != e.name || fact.datum_type != e.dt || !shape_ok {
            return Err(load_err(
                path,
                format!(
                    "input {i} is {name:?} {:?} {}; expected {:?} {:?} {}",
                    fact.datum_type,
                    describe_shape(&dims),
                    e.name,
                    e.dt,
                    describe_shape(&e.shape)
                ),
            ));
        }
    }
    if typed.outputs.len() != outputs {
        return Err(load_err(
            path,
            format!("has {} outputs; expected {outputs}", typed.outputs.len()),
        ));
    }
    optimise(typed).map_err(|e| load_err(path, format!("cannot optimise the graph: {e:#}")))
}

/// As [`build`], for graphs exported with free input sizes and stale stored shapes (as
/// PaddleOCR's are): stored value info is ignored, the inputs are checked by name and type
/// against `expect`, then pinned to `shapes` so tract can plan fixed-size kernels.
pub fn build_fixed(
    path: &str,
    bytes: &[u8],
    expect: &[Expect],
    outputs: usize,
    shapes: &[&[usize]],
) -> Result<Plan, LoadError> {
    let mut model = super::ops::onnx()
        .with_ignore_value_info(true)
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| load_err(path, format!("not a loadable ONNX model: {e}")))?;
    if model.inputs.len() != expect.len() || shapes.len() != expect.len() {
        return Err(load_err(
            path,
            format!(
                "has {} inputs; expected {} ({})",
                model.inputs.len(),
                expect.len(),
                expect.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    for (i, (e, shape)) in expect.iter().zip(shapes).enumerate() {
        let name = model.node(model.inputs[i].node).name.clone();
        if name != e.name {
            return Err(load_err(
                path,
                format!("input {i} is {name:?}; expected {:?}", e.name),
            ));
        }
        model
            .set_input_fact(i, InferenceFact::dt_shape(e.dt, *shape))
            .map_err(|err| load_err(path, err.to_string()))?;
    }
    if model.outputs.len() != outputs {
        return Err(load_err(
            path,
            format!("has {} outputs; expected {outputs}", model.outputs.len()),
        ));
    }
    model
        .into_typed()
        .and_then(optimise)
        .map_err(|e| load_err(path, format!("cannot optimise the graph: {e:#}")))
}

/// Time spent per kind of op in one run of `plan`: what to look at before optimising a
/// model (the benches print it on request). Sorted by time, most first.
#[derive(Debug, Clone)]
pub struct OpTime {
    pub op: String,
    pub ms: f64,
    pub calls: usize,
}

/// Run `plan` on `inputs` `runs` times after one warm-up and return the mean time per run
/// of each kind of op.
pub fn profile(plan: &Plan, inputs: &[Tensor], runs: usize) -> TractResult<Vec<OpTime>> {
    use std::collections::HashMap;
    let mut by_op: HashMap<String, (f64, usize)> = HashMap::new();
    for run in 0..=runs {
        let mut state = tract_onnx::tract_core::model::typed::TypedSimpleState::new(plan)?;
        let inputs: TVec<TValue> = inputs.iter().map(|t| t.clone().into_tvalue()).collect();
        state.run_plan_with_eval(inputs, |ctx, op_state, node, node_inputs| {
            let t = std::time::Instant::now();
            let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, node_inputs);
            if run > 0 {
                let e = by_op.entry(node.op().name().to_string()).or_default();
                e.0 += t.elapsed().as_secs_f64() * 1e3;
                e.1 += 1;
            }
            out
        })?;
    }
    let runs = runs.max(1);
    let mut v: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, (ms, calls))| OpTime {
            op,
            ms: ms / runs as f64,
            calls: calls / runs,
        })
        .collect();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(v)
}
