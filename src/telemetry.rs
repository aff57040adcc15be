//! Logging setup: tracing to stderr (stdout is kept for reports such as `--json`), as
//! text for people or JSON for log collectors. The filter can be changed at run time (the
//! console's `log <filter>`), so debug output can be turned on in place on a device.

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Install the global subscriber. `RUST_LOG` wins over the configured filter so a
/// technician can turn on debug output without editing the device's config.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    // Colour only for a person at a terminal: journald and log files would store the
    // escape codes as text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour_for(std::io::stderr().is_terminal()));
    // A second init (tests) is harmless: the first subscriber stays.
    let ok = match format {
        LogFormat::Text => registry.with(fmt).try_init().is_ok(),
        LogFormat::Json => registry.with(fmt.json()).try_init().is_ok(),
    };
    if ok {
        let _ = FILTER.set(handle);
    }
}

/// Whether text logs get ANSI colour: on a terminal, unless `NO_COLOR` is set
/// (<https://no-color.org>).
pub fn colour_for(stderr_is_terminal: bool) -> bool {
    stderr_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("filter {filter:?}")]
    Invalid {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("logging is not initialised")]
    NotInitialised,
    #[error("log filter")]
    Reload(#[from] tracing_subscriber::reload::Error),
}

/// Replace the log filter of the running process.
pub fn set_filter(filter: &str) -> Result<(), FilterError> {
    let f = EnvFilter::try_new(filter).map_err(|source| FilterError::Invalid {
        filter: filter.to_string(),
        source,
    })?;
    Ok(FILTER.get().ok_or(FilterError::NotInitialised)?.reload(f)?)
}
