//! `nvr-edge hash-pin`: the argon2id `console.pin_hash` of a PIN read from standard input
//! (never from the command line, where other users see it).

use std::io::{BufRead, Read};
use std::process::ExitCode;

pub fn run() -> ExitCode {
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
    ExitCode::SUCCESS
}
