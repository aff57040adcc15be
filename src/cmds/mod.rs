//! The subcommands of `nvr-edge`: each file parses its arguments (clap) and formats its
//! output; the work is the library's. Exit status: 0 success, 1 failure (a self-test FAIL
//! included), 2 bad usage, input or config.

pub mod classify;
pub mod console;
pub mod events;
pub mod hash_pin;
pub mod household;
pub mod run;
pub mod selftest;
pub mod user;

use std::process::ExitCode;

use nvr_edge::config::{Config, ConfigError};
use nvr_edge::error_chain;

/// Load the config `path` names (the embedded default without one), or say what is wrong
/// with it, by key and line, and exit 2.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| config_error(&e))
}

pub fn config_error(e: &ConfigError) -> ExitCode {
    match e {
        ConfigError::Invalid { origin, problems } => {
            eprintln!("error: invalid config {origin}:");
            for p in problems {
                eprintln!("  {p}");
            }
        }
        other => eprintln!("error: {}", error_chain(other)),
    }
    ExitCode::from(2)
}

/// `nvr-edge check-config PATH`
pub fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(Some(path)) {
        Ok(cfg) => {
            println!("{}: ok ({} camera(s))", path.display(), cfg.cameras.len());
            ExitCode::SUCCESS
        }
        Err(e) => config_error(&e),
    }
}

/// Print a command's output, or its error and the exit status the error calls for.
pub fn finish<T: std::fmt::Display, E: std::error::Error>(
    r: Result<T, E>,
    code: impl Fn(&E) -> u8,
) -> ExitCode {
    match r {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(code(&e))
        }
    }
}
