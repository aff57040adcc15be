//! `nvr-edge user ...`: the people who may use the HTTP API. Passwords are read from
//! standard input (one line; with echo off on a terminal), never from the command line,
//! where other users of the box see it. API tokens are printed once, on stdout.

use std::io::{BufRead, IsTerminal, Read, Write};

use clap::Subcommand;
use serde_json::json;

use nvr_edge::config::Config;
use nvr_edge::users::{Role, UserError, UserStore, MAX_PASSWORD};

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user; the password is read from standard input.
    Add {
        name: String,
        /// admin (may change things) or viewer (reads)
        #[arg(long)]
        role: String,
    },
    /// The users, without their password hashes, as JSON.
    List,
    /// Remove a user.
    Remove { name: String },
    /// Set a user's password (read from standard input); signs their browsers out.
    Passwd { name: String },
    /// A new API token for a user (`Authorization: Bearer TOKEN`), printed once: only its
    /// digest is kept, so store it where the client needs it.
    Token {
        name: String,
        /// What the token is for (shown nowhere secret), e.g. "home-assistant".
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke every API token of a user.
    RevokeTokens { name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum UserCliError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error("reading the password from standard input")]
    Stdin(#[source] std::io::Error),
}

impl UserCliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            UserCliError::User(e) if !e.is_input_error() => 1,
            _ => 2,
        }
    }
}

/// One line from stdin; on a terminal, prompted with echo off.
fn read_password() -> Result<String, UserCliError> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let saved = if tty {
        eprint!("password: ");
        let _ = std::io::stderr().flush();
        let fd = std::io::stdin();
        rustix::termios::tcgetattr(&fd).ok().inspect(|t| {
            let mut quiet = t.clone();
            quiet.local_modes -= rustix::termios::LocalModes::ECHO;
            let _ = rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet);
        })
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin
        .lock()
        .take(MAX_PASSWORD as u64 + 2)
        .read_line(&mut line);
    if let Some(t) = saved {
        let _ =
            rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &t);
        eprintln!();
    }
    read.map_err(UserCliError::Stdin)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn run(cmd: &UserCmd, cfg: &Config) -> Result<serde_json::Value, UserCliError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Arguments are checked before the password is asked for.
    let role = match cmd {
        UserCmd::Add { role, .. } => Some(role.parse::<Role>()?),
        _ => None,
    };
    let users = UserStore::open_in(&cfg.storage.data_dir)?;
    Ok(match cmd {
        UserCmd::Add { name, .. } => {
            let password = read_password()?;
            let role = role.unwrap_or(Role::Viewer);
            let id = users.add(name, role, &password, now)?;
            json!({ "user_id": id, "name": name, "role": role })
        }
        UserCmd::List => json!({ "users": users.list()? }),
        UserCmd::Remove { name } => {
            users.remove(name)?;
            json!({ "removed_user": name })
        }
        UserCmd::Passwd { name } => {
            let password = read_password()?;
            users.set_password(name, &password)?;
            json!({ "password_changed": name })
        }
        UserCmd::Token { name, label } => {
            let token = users.add_token(name, label, now)?;
            json!({ "name": name, "label": label, "token": token })
        }
        UserCmd::RevokeTokens { name } => {
            json!({ "name": name, "revoked_tokens": users.revoke_tokens(name)? })
        }
    })
}
