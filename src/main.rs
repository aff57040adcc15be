//! The `nvr-edge` binary: parse the command line, load the config, hand off to the library.
//! Exit status: 0 success, 1 failure (a self-test FAIL included), 2 bad usage or config.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nvr_edge::clock::SystemClock;
use nvr_edge::config::Config;
use nvr_edge::error_chain;
use nvr_edge::events::{EventStore, EventsCmd};
use nvr_edge::household::cli::HouseholdCmd;
use nvr_edge::inference::cli::ClassifyArgs;
use nvr_edge::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "nvr-edge",
    version,
    about = "Smart video recorder for small boards"
)]
struct Cli {
    /// Run the cameras briefly, print a PASS/FAIL table of measured figures, exit 0 only if all pass.
    #[arg(long)]
    self_test: bool,
    /// With --self-test: print the report as one JSON object on stdout.
    #[arg(long, requires = "self_test")]
    json: bool,
    /// With --self-test: also write the JSON report to FILE (replaced atomically), and print
    /// the table on stdout. The boot unit uses this.
    #[arg(long, requires = "self_test", value_name = "FILE")]
    report: Option<PathBuf>,
    /// With --self-test: seconds to run the cameras (default: selftest.seconds).
    #[arg(long, requires = "self_test")]
    seconds: Option<f64>,
    /// Config file (TOML); the embedded default when omitted.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log output format on stderr: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the recorder until SIGINT/SIGTERM.
    Run,
    /// Parse and validate a config file; print what is wrong, by key.
    CheckConfig { path: PathBuf },
    /// Household members and vehicles (database in storage.data_dir).
    #[command(subcommand)]
    Household(HouseholdCmd),
    /// Classify JPEG frames with X-CLIP; prints the result (raw logits included) as JSON.
    Classify(ClassifyArgs),
    /// Recorded events (database in storage.data_dir).
    #[command(subcommand)]
    Events(EventsCmd),
    /// Read a console PIN from standard input (one line; never from the command line,
    /// where other users see it) and print its `console.pin_hash` (argon2id).
    HashPin,
    /// Attach this terminal to the running recorder's console (the serial console's
    /// commands, over the unix socket `console.socket`; root or the service's group).
    /// Ctrl-] leaves.
    Console {
        /// The socket (default: `console.socket` of the config).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::HashPin) = &cli.cmd {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().take(1024).read_line(&mut line) {
            eprintln!("error: reading the PIN from standard input: {e}");
            return ExitCode::from(2);
        }
        let pin = line.trim_end_matches(['\r', '\n']);
        if pin.is_empty() || pin.chars().any(char::is_whitespace) {
            eprintln!("error: give the PIN on standard input, one line without spaces (e.g. `read -rs PIN; echo \"$PIN\" | nvr-edge hash-pin`)");
            return ExitCode::from(2);
        }
        println!("pin_hash = {:?}", nvr_edge::console::hash_pin(pin));
        return ExitCode::SUCCESS;
    }
    if let Some(Cmd::CheckConfig { path }) = &cli.cmd {
        return match Config::load(Some(path)) {
            Ok(cfg) => {
                println!("{}: ok ({} camera(s))", path.display(), cfg.cameras.len());
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        };
    }
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    if let Some(Cmd::Console { socket }) = &cli.cmd {
        let path = socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(&cfg.console.socket));
        return match nvr_edge::console::attach(&path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "error: console socket {}: {e} (is `nvr-edge run` running, and are you root or in its group?)",
                    path.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    telemetry::init(&cfg.log.filter, cli.log_format);
    if let Some(Cmd::Classify(args)) = &cli.cmd {
        return finish(nvr_edge::inference::cli::run(args, &cfg), |e| e.exit_code());
    }
    if let Some(Cmd::Events(cmd)) = &cli.cmd {
        let out = EventStore::open_in(&cfg.storage.data_dir, cfg.events.clone())
            .and_then(|store| nvr_edge::events::run_cli(cmd, &store));
        return match out {
            Ok(Err(msg)) => {
                eprintln!("error: {msg}");
                ExitCode::from(2)
            }
            // What is left: the output, or a database error.
            other => finish(other.map(Result::unwrap_or_default), |_| 1),
        };
    }
    if let Some(Cmd::Household(cmd)) = &cli.cmd {
        return finish(nvr_edge::household::cli::run(cmd, &cfg), |e| e.exit_code());
    }
    let clock = Arc::new(SystemClock);
    let outcome = match (&cli.cmd, cli.self_test) {
        (None, true) => self_test(&cfg, &cli, clock),
        (Some(Cmd::Run), false) => nvr_edge::service::run(&cfg, clock)
            .context("nvr-edge run")
            .map(|()| ExitCode::SUCCESS),
        (Some(_), true) => {
            eprintln!("error: --self-test cannot be combined with a subcommand");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!("error: nothing to do: give --self-test or a subcommand (see --help)");
            return ExitCode::from(2);
        }
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

fn self_test(cfg: &Config, cli: &Cli, clock: Arc<SystemClock>) -> anyhow::Result<ExitCode> {
    let seconds = cli.seconds.unwrap_or(cfg.selftest.seconds);
    if !(seconds.is_finite() && seconds > 0.0) {
        eprintln!("error: --seconds must be a number > 0");
        return Ok(ExitCode::from(2));
    }
    let report = nvr_edge::selftest::run(cfg, seconds, clock).context("self-test")?;
    let json = serde_json::to_string(&report)?;
    if let Some(path) = &cli.report {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if cli.json {
        println!("{json}");
    } else {
        print!("{}", report.render_table());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn config_error(e: &nvr_edge::config::ConfigError) -> ExitCode {
    use nvr_edge::config::ConfigError;
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

/// Print a command's output, or its error and the exit status the error calls for.
fn finish<T: std::fmt::Display, E: std::error::Error>(
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
