//! What the benches share: percentiles, and running a peer script (onnxruntime, faiss)
//! with the python that an environment variable names.

use std::ffi::OsStr;
use std::process::Command;

/// p50 and p99 of `v` (nearest rank).
#[allow(dead_code)] // not every bench that includes this module uses every helper
pub fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.99))
}

/// Run `benches/<script>` with the python named by `$python_env` and `args`; its stdout's
/// first two numbers (p50 and p99). None when the variable is unset or the peer fails
/// (said on stderr).
pub fn python_peer<S: AsRef<OsStr>>(
    python_env: &str,
    script: &str,
    args: &[S],
) -> Option<(f64, f64)> {
    let python = std::env::var(python_env).ok()?;
    let path = format!("{}/benches/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python).arg(&path).args(args).output().ok()?;
    if !out.status.success() {
        eprintln!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some((it.next()?.ok()?, it.next()?.ok()?))
}
