//! The `nvr-edge` binary: parse the command line and hand off to a command in `cmds/`.
//! Exit status: 0 success, 1 failure (a self-test FAIL included), 2 bad usage or config.

mod cmds;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvr_edge::telemetry::{self, LogFormat};

use cmds::classify::ClassifyArgs;
use cmds::events::EventsCmd;
use cmds::household::HouseholdCmd;
use cmds::user::UserCmd;

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
    /// People who may use the HTTP API (password from standard input, never argv).
    #[command(subcommand)]
    User(UserCmd),
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
    // The config, loaded and validated (exit 2 naming the key when it is wrong), then
    // logging as it asks for; `logs` false for an interactive terminal.
    let with_config =
        |logs: bool, f: &dyn Fn(&nvr_edge::config::Config) -> ExitCode| match cmds::load_config(
            cli.config.as_deref(),
        ) {
            Ok(cfg) => {
                if logs {
                    telemetry::init(&cfg.log.filter, cli.log_format);
                }
                f(&cfg)
            }
            Err(code) => code,
        };
    match (&cli.cmd, cli.self_test) {
        (Some(_), true) => {
            eprintln!("error: --self-test cannot be combined with a subcommand");
            ExitCode::from(2)
        }
        (None, true) => with_config(true, &|cfg| {
            cmds::selftest::run(
                cfg,
                &cmds::selftest::Options {
                    seconds: cli.seconds,
                    json: cli.json,
                    report: cli.report.as_deref(),
                },
            )
        }),
        (None, false) => {
            eprintln!("error: nothing to do: give --self-test or a subcommand (see --help)");
            ExitCode::from(2)
        }
        (Some(Cmd::HashPin), false) => cmds::hash_pin::run(),
        (Some(Cmd::CheckConfig { path }), false) => cmds::check_config(path),
        (Some(Cmd::Console { socket }), false) => {
            with_config(false, &|cfg| cmds::console::run(cfg, socket.as_deref()))
        }
        (Some(Cmd::Run), false) => with_config(true, &cmds::run::run),
        (Some(Cmd::Classify(args)), false) => with_config(true, &|cfg| {
            cmds::finish(cmds::classify::run(args, cfg), |e| e.exit_code())
        }),
        (Some(Cmd::Events(cmd)), false) => with_config(true, &|cfg| {
            cmds::finish(cmds::events::run(cmd, cfg), |e| e.exit_code())
        }),
        (Some(Cmd::Household(cmd)), false) => with_config(true, &|cfg| {
            cmds::finish(cmds::household::run(cmd, cfg), |e| e.exit_code())
        }),
        (Some(Cmd::User(cmd)), false) => with_config(false, &|cfg| {
            cmds::finish(cmds::user::run(cmd, cfg), |e| e.exit_code())
        }),
    }
}
