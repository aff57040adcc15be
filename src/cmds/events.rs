//! `nvr-edge events ...`: the recorded events as JSON, or every kept one as CSV.

use clap::Subcommand;

use nvr_edge::config::Config;
use nvr_edge::events::{Event, EventStore};
use nvr_edge::store::StoreError;

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Newest events first, as JSON.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        camera: Option<String>,
    },
    /// One event, as JSON.
    Show { id: i64 },
    /// Every kept event, as CSV (or JSON with --format json).
    Export {
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EventsCliError {
    #[error("no event with id {0}")]
    NoEvent(i64),
    #[error("format {0:?}: csv or json")]
    Format(String),
    #[error("events database")]
    Store(#[from] StoreError),
}

impl EventsCliError {
    /// Exit status: 2 when the input was at fault, 1 for the database.
    pub fn exit_code(&self) -> u8 {
        match self {
            EventsCliError::Store(_) => 1,
            _ => 2,
        }
    }
}

/// Run an events command; returns what to print.
pub fn run(cmd: &EventsCmd, cfg: &Config) -> Result<String, EventsCliError> {
    if let EventsCmd::Export { format } = cmd {
        // Checked before the database is opened (or created).
        if format != "csv" && format != "json" {
            return Err(EventsCliError::Format(format.clone()));
        }
    }
    let store = EventStore::open_in(&cfg.storage.data_dir, cfg.events.clone())?;
    Ok(match cmd {
        EventsCmd::List { limit, camera } => {
            serde_json::to_string_pretty(&store.list(*limit, camera.as_deref())?)
                .unwrap_or_default()
        }
        EventsCmd::Show { id } => match store.get(*id)? {
            Some(e) => serde_json::to_string_pretty(&e).unwrap_or_default(),
            None => return Err(EventsCliError::NoEvent(*id)),
        },
        EventsCmd::Export { format } => {
            let all = store.list(u32::MAX, None)?;
            if format == "json" {
                serde_json::to_string(&all).unwrap_or_default()
            } else {
                csv(&all)
            }
        }
    })
}

fn csv(all: &[Event]) -> String {
    let mut out = String::from(
        "id,camera,start_us,end_us,action,category,risk,model_risk,risk_note,confidence,clips,model,model_placeholder,video,video_state\n",
    );
    let q = |s: Option<&str>| {
        s.map(|v| format!("\"{}\"", v.replace('"', "\"\"")))
            .unwrap_or_default()
    };
    for e in all {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            e.id,
            q(Some(&e.camera)),
            e.start_us,
            e.end_us.map(|v| v.to_string()).unwrap_or_default(),
            q(e.action.as_deref()),
            q(e.category.as_deref()),
            e.risk.map_or("", |r| r.as_str()),
            e.model_risk.map_or("", |r| r.as_str()),
            q(e.risk_note.as_deref()),
            e.confidence.map(|c| c.to_string()).unwrap_or_default(),
            e.clips,
            q(e.model.as_deref()),
            e.model_placeholder,
            q(e.video.as_ref().map(|v| v.file.as_str())),
            e.video.as_ref().map_or("", |v| v.state.as_str()),
        ));
    }
    out
}
