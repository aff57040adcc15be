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
/// With a pool, the whole run goes *onto* one of the pool's threads, and the pool's other
/// threads spin for the length of the run, taking shares of parallel ops as they appear
/// (yielding the core to the OS scheduler whenever they find nothing, so capture threads
/// are not starved); they sleep again between runs. This is what onnxruntime's pool does.
/// Measured here on the committed tiny X-CLIP graph at 2 threads (1.7 ms on 1 thread):
/// the run beside the pool (tract's `multithread_tract_scope` alone: each parallel op woke
/// the sleeping pool and parked the caller, three threads on two cores) 1.4-1.9 ms; on a
/// pool thread 1.3-1.5 ms; with the helper spinning 1.2-1.3 ms. The full-size graph's ops
/// are long enough that only the first step shows (181-187 -> 167-178 ms).
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
        use std::sync::atomic::{AtomicBool, Ordering};
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let Executor::MultiThread(pool) = &self.0 else {
            return multithread_tract_scope(self.0.clone(), f);
        };
        /// Ends the helpers' spin however `f` ends (a panic included: the scope waits for
        /// them before it unwinds).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        pool.install(|| {
            let graph_thread = rayon::current_thread_index();
            let done = AtomicBool::new(false);
            rayon::scope(|s| {
                for _ in 1..pool.current_num_threads() {
                    s.spawn(|_| {
                        // Helpers are pushed before any of f's work, so other threads
                        // steal them first (the oldest end of the deque); should the
                        // graph's own thread still pick one up while it waits inside f,
                        // it must not spin there.
                        if rayon::current_thread_index() == graph_thread {
                            return;
                        }
                        while !done.load(Ordering::Acquire) {
                            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                                std::thread::yield_now();
                            }
                        }
                    });
                }
                let _done = Done(&done);
                // The executor is a thread-local setting: set on the thread that runs f.
                multithread_tract_scope(self.0.clone(), f)
            })
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// A share of work pushed while the graph's thread is busy is taken by the other pool
    /// thread, not left until the graph's thread comes back.
    #[test]
    fn a_pool_helper_takes_work_during_a_run() {
        let taken = AtomicBool::new(false);
        let (graph, other) = GraphThreads::new(2).run(|| {
            rayon::join(
                || {
                    let t = Instant::now();
                    while !taken.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(10) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    rayon::current_thread_index()
                },
                || {
                    taken.store(true, Ordering::Release);
                    rayon::current_thread_index()
                },
            )
        });
        assert!(graph.is_some() && other.is_some(), "ran outside the pool");
        assert_ne!(
            graph, other,
            "the second share waited for the graph's thread"
        );
    }

    /// A panic in the run reaches the caller; the helpers stop spinning, so it does not
    /// hang, and the pool still runs the next graph.
    #[test]
    fn a_panic_in_a_run_reaches_the_caller() {
        let threads = GraphThreads::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            threads.run(|| panic!("boom"))
        }));
        assert!(r.is_err());
        assert_eq!(threads.run(|| 6 * 7), 42);
    }
}
