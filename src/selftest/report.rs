//! The self-test's report: one row per check (measured, target, PASS/FAIL), the system
//! it ran on, and the table and JSON forms. The JSON shape is stable: `{"verdict",
//! "checks": [{"name", "camera", "measured", "target", "unit", "pass", "op", "detail"}],
//! ...}`. New checks add rows, never fields.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<=")]
    AtMost,
}

impl Op {
    fn holds(self, measured: f64, target: f64) -> bool {
        // NaN never passes.
        match self {
            Op::AtLeast => measured >= target,
            Op::AtMost => measured <= target,
        }
    }
    fn symbol(self) -> &'static str {
        match self {
            Op::AtLeast => ">=",
            Op::AtMost => "<=",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub camera: Option<String>,
    pub measured: f64,
    pub target: f64,
    pub unit: String,
    pub pass: bool,
    pub op: Op,
    /// What a technician needs to make sense of a FAIL.
    pub detail: Option<String>,
}

impl Check {
    pub fn new(
        name: &str,
        camera: Option<&str>,
        measured: f64,
        op: Op,
        target: f64,
        unit: &str,
    ) -> Self {
        Self {
            name: name.into(),
            camera: camera.map(Into::into),
            measured,
            target,
            unit: unit.into(),
            pass: op.holds(measured, target),
            op,
            detail: None,
        }
    }

    /// A check that could not be measured (the detail says why): it never passes.
    pub(super) fn failed(name: &str, op: Op, target: f64, unit: &str) -> Self {
        Self::new(name, None, f64::NAN, op, target, unit)
    }

    pub(super) fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub checks: Vec<Check>,
    pub version: &'static str,
    pub seconds: f64,
    pub cameras: Vec<CameraReport>,
    pub process_memory: Option<ProcessMemory>,
    /// Every model the run loaded; `placeholder` true means its results mean nothing.
    pub models: Vec<ModelInfo>,
    /// The identity (face) models, or why they are off.
    pub identity: Option<String>,
    pub system: SystemInfo,
}

/// What the report ran on: the first questions of any support call.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    pub arch: &'static str,
    /// The CPU's name as the kernel gives it (`/proc/cpuinfo`): speed figures mean little
    /// without it.
    pub cpu_model: String,
    pub kernel: String,
    pub page_size: usize,
    pub cpus: usize,
    /// The household matcher's vector kernel.
    pub simd_kernel: &'static str,
    /// Whose kernels run the dense layers (X-CLIP) and 1x1 convolutions (identity models):
    /// nvr-edge's (AVX-512 or AVX2+FMA) or tract's.
    pub dense_kernel: &'static str,
    /// The instruction-set rung tract's own kernels run at (`fma` for AVX2+FMA, `avx512`,
    /// `neon`, `sve2`): emulated checks assert the tier of the boards they stand for.
    pub tract_isa: &'static str,
    /// nvr-edge's own kernel tier (`portable`, `avx2+fma`, `avx512`, `neon`; capped by
    /// `NVR_KERNEL_TIER`).
    pub kernel_tier: &'static str,
}

impl SystemInfo {
    pub fn current() -> Self {
        let u = rustix::system::uname();
        Self {
            arch: std::env::consts::ARCH,
            cpu_model: cpu_model(),
            kernel: u.release().to_string_lossy().into_owned(),
            page_size: rustix::param::page_size(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            simd_kernel: nvr_linalg::Kernel::best().name(),
            // What the graph rewrite uses: on aarch64 the NEON products exist but tract's
            // run until they are measured on a board.
            dense_kernel: match nvr_linalg::dense::in_graphs() {
                Some(nvr_linalg::Tier::Avx512) => "avx512f (nvr-edge)",
                Some(_) => "avx2+fma (nvr-edge)",
                None => "tract",
            },
            tract_isa: tract_linalg::isa::native().nickname(),
            kernel_tier: nvr_linalg::Tier::current().name(),
        }
    }

    /// The first line of every bench: the CPU and the kernel tiers the figures below it
    /// were measured on.
    pub fn bench_line(&self) -> String {
        format!(
            "cpu: {} ({}, {} CPUs); nvr-edge kernels {} (matching {}, dense and 1x1 {}); tract kernels {}",
            self.cpu_model,
            self.arch,
            self.cpus,
            self.kernel_tier,
            self.simd_kernel,
            self.dense_kernel,
            self.tract_isa
        )
    }
}

/// `model name` (x86) from `/proc/cpuinfo`; on Arm, which has none, the implementer and
/// part numbers (`CPU implementer 0x41, part 0xd0b` is a Cortex-A76).
fn cpu_model() -> String {
    let text = crate::fsio::read_regular_string(std::path::Path::new("/proc/cpuinfo"), 1 << 20)
        .unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(name) = field("model name") {
        return name;
    }
    match (field("CPU implementer"), field("CPU part")) {
        (Some(i), Some(p)) => format!("CPU implementer {i}, part {p}"),
        _ => "unknown CPU".into(),
    }
}

impl Report {
    pub fn from_checks(checks: Vec<Check>, seconds: f64, cameras: Vec<CameraReport>) -> Report {
        let verdict = if !checks.is_empty() && checks.iter().all(|c| c.pass) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        Report {
            verdict,
            checks,
            version: env!("CARGO_PKG_VERSION"),
            seconds,
            cameras,
            process_memory: memory::process_memory().ok(),
            models: Vec::new(),
            identity: None,
            system: SystemInfo::current(),
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// The human table: fixed columns, one check per line, fits an 80-column console.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "nvr-edge {} self-test: {} camera(s), {:.1} s",
            self.version,
            self.cameras.len(),
            self.seconds
        );
        let sys = &self.system;
        let _ = writeln!(
            s,
            "system: {}, {} {}, {} CPUs, {} KiB pages, nvr-edge kernels {} (matching {}, dense and 1x1 {}), tract kernels {}",
            sys.cpu_model,
            sys.arch,
            sys.kernel,
            sys.cpus,
            sys.page_size / 1024,
            sys.kernel_tier,
            sys.simd_kernel,
            sys.dense_kernel,
            sys.tract_isa
        );
        for m in &self.models {
            let _ = writeln!(s, "model: {}", m.describe());
        }
        if let Some(i) = &self.identity {
            let _ = writeln!(s, "identity: {i}");
        }
        for c in &self.cameras {
            let _ = match &c.stats.source {
                Some(src) => writeln!(
                    s,
                    "camera {}: {} {}x{} @ {:.2} fps granted ({})",
                    c.id, src.driver, src.width, src.height, src.fps, src.detail
                ),
                None => writeln!(s, "camera {}: not opened", c.id),
            };
        }
        let _ = writeln!(
            s,
            "{:<24} {:<8} {:>14} {:>16}  RESULT",
            "CHECK", "CAMERA", "MEASURED", "TARGET"
        );
        for c in &self.checks {
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:>14} {:>16}  {}",
                c.name,
                c.camera.as_deref().unwrap_or("-"),
                format!("{} {}", fmt_num(c.measured), c.unit),
                format!("{} {} {}", c.op.symbol(), fmt_num(c.target), c.unit),
                if c.pass { "PASS" } else { "FAIL" }
            );
            if let Some(d) = &c.detail {
                if !c.pass {
                    let _ = writeln!(s, "    {d}");
                }
            }
        }
        if let Some(m) = &self.process_memory {
            let _ = writeln!(
                s,
                "process memory (jemalloc): allocated {:.1} MiB, resident {:.1} MiB, retained {:.1} MiB",
                m.allocated as f64 / MIB,
                m.resident as f64 / MIB,
                m.retained as f64 / MIB
            );
        }
        let passed = self.checks.iter().filter(|c| c.pass).count();
        let _ = writeln!(
            s,
            "VERDICT: {} ({passed}/{} checks passed)",
            if self.passed() { "PASS" } else { "FAIL" },
            self.checks.len()
        );
        s
    }
}

pub(super) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a == 0.0 {
        "0".into()
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        // Differences of results (1e-4 targets) would otherwise all read 0.000.
        format!("{v:.1e}")
    }
}

/// Run `f` once (a plan's first run allocates its scratch space: not what a clip window
/// costs), then `n` times timed. The worst time in ms and the last result, or the first
/// error.
pub(super) fn worst_of<R, E>(n: usize, mut f: impl FnMut() -> Result<R, E>) -> Result<(f64, R), E> {
    let mut last = f()?;
    let mut worst = 0.0f64;
    for _ in 0..n {
        let t0 = Instant::now();
        last = f()?;
        worst = worst.max(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((worst, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_needs_every_check_and_at_least_one() {
        let ok = Check::new("a", None, 2.0, Op::AtLeast, 1.0, "x");
        let bad = Check::new("b", None, 2.0, Op::AtMost, 1.0, "x");
        let nan = Check::new("c", None, f64::NAN, Op::AtMost, 1.0, "x");
        assert!(ok.pass && !bad.pass && !nan.pass);
        assert!(Report::from_checks(vec![ok.clone()], 1.0, vec![]).passed());
        assert!(!Report::from_checks(vec![ok, bad], 1.0, vec![]).passed());
        assert!(!Report::from_checks(vec![], 1.0, vec![]).passed());
    }
}
