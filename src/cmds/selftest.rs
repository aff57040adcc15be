//! `nvr-edge --self-test`: run the cameras briefly and print the PASS/FAIL table (or the
//! JSON report); exit 0 only if every row passes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use nvr_edge::clock::SystemClock;
use nvr_edge::config::Config;
use nvr_edge::error_chain;

pub struct Options<'a> {
    /// Seconds the cameras run (default: `selftest.seconds`).
    pub seconds: Option<f64>,
    /// Print the report as one JSON object instead of the table.
    pub json: bool,
    /// Also write the JSON report here (replaced atomically); the boot unit uses this.
    pub report: Option<&'a Path>,
}

pub fn run(cfg: &Config, opts: &Options<'_>) -> ExitCode {
    let seconds = opts.seconds.unwrap_or(cfg.selftest.seconds);
    if !(seconds.is_finite() && seconds > 0.0) {
        eprintln!("error: --seconds must be a number > 0");
        return ExitCode::from(2);
    }
    let report = match nvr_edge::selftest::run(cfg, seconds, Arc::new(SystemClock)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: self-test: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let json = match serde_json::to_string(&report) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: self-test report: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = opts.report {
        let tmp = path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, &json).and_then(|()| std::fs::rename(&tmp, path)) {
            eprintln!("error: writing the report to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if opts.json {
        println!("{json}");
    } else {
        print!("{}", report.render_table());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
