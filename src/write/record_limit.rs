//! The largest record the servers accept: their `proto-max-bulk-len`, the limit on one argument.
//!
//! Read with `CONFIG GET` (the smallest over a cluster's masters). A user that may not run
//! `CONFIG` (most managed services, or `rename-command CONFIG ""`) cannot read it, and a record
//! above it would get "Protocol error: invalid bulk length" and a closed connection mid-batch,
//! which looks like a network failure and would be retried forever. So where the value could not
//! be read, a record larger than any size already shown to pass is first tried on a connection of
//! its own: an argument of exactly its size, in a `PING` with one argument too many. The server
//! reads the whole argument and answers "wrong number of arguments" when it accepts the size, and
//! "invalid bulk length" (then hangs up) when it does not. Nothing is written. Every Redis accepts
//! 1 MiB (the smallest value `proto-max-bulk-len` may take), so smaller records are never tried.

use std::time::Duration;

use crate::config::{Settings, Target};
use crate::connect::{connect, nodes::Nodes};
use crate::error::Failure;

/// The smallest `proto-max-bulk-len` a Redis (or Valkey) server may have.
const ALWAYS_ACCEPTED: u64 = 1024 * 1024;

/// The piece in which a probe's argument is sent (so a probe never holds a copy of the record).
const PROBE_PIECE: usize = 1024 * 1024;

/// What is known of the servers' limit on one argument.
pub struct RecordLimit {
    /// The smallest limit read with `CONFIG GET`, if any server answered.
    read: Option<u64>,
    /// Servers whose limit could not be read, to be tried (empty when every limit was read).
    unread: Vec<Target>,
    /// The config (credentials, TLS) to connect to them with.
    settings: Settings,
    /// The largest size shown to pass on every unread server.
    proven: u64,
    reply_timeout: Duration,
}

/// Why a record cannot be written.
#[derive(Debug)]
pub enum TooLarge {
    /// Above the limit read from the server.
    AboveRead(u64),
    /// Refused by the server named (whose limit could not be read).
    Refused(String),
}

impl TooLarge {
    /// The `config_error` for `record` (which names its line, stream and size).
    pub fn failure(&self, record: &str) -> Failure {
        let why = match self {
            TooLarge::AboveRead(limit) => {
                format!("more than the server's proto-max-bulk-len of {limit} bytes")
            }
            TooLarge::Refused(server) => format!(
                "and Redis at {server} refuses an argument that large (its proto-max-bulk-len is lower; this user may not read it with CONFIG GET)"
            ),
        };
        Failure::config(
            format!("{record}, {why}: raise proto-max-bulk-len on the server, or make the source send smaller records."),
            "record above proto-max-bulk-len",
        )
    }
}

impl RecordLimit {
    /// Reads the limit of every open connection of `nodes`.
    pub fn read(nodes: &mut Nodes, settings: &Settings, reply_timeout: Duration) -> Self {
        let mut read: Option<u64> = None;
        let mut unread = Vec::new();
        for addr in nodes.open_addrs() {
            let Ok(link) = nodes.link(&addr) else {
                continue;
            };
            let value = redis::cmd("CONFIG")
                .arg("GET")
                .arg("proto-max-bulk-len")
                .query::<Vec<String>>(&mut link.con)
                .ok()
                .and_then(|v| v.get(1).and_then(|n| n.parse::<u64>().ok()));
            match value {
                Some(n) => read = Some(read.map_or(n, |r| r.min(n))),
                None => unread.push(link.target.clone()),
            }
        }
        RecordLimit {
            read,
            unread,
            settings: settings.clone(),
            proven: ALWAYS_ACCEPTED,
            reply_timeout,
        }
    }

    /// Whether a record of `size` bytes can be written; tries the size on the servers whose
    /// limit is unknown when it is larger than any tried before.
    pub fn admit(&mut self, size: u64) -> Result<(), TooLarge> {
        if let Some(read) = self.read {
            if size > read {
                return Err(TooLarge::AboveRead(read));
            }
        }
        if size <= self.proven || self.unread.is_empty() {
            return Ok(());
        }
        for server in &self.unread {
            // A hang-up is the refusal only when it happens twice (a network failure is not).
            let refused = |_| !accepts(&self.settings, server, size, self.reply_timeout);
            if (0..2).all(refused) {
                return Err(TooLarge::Refused(server.shown.clone()));
            }
        }
        self.proven = size;
        Ok(())
    }
}

/// Whether the server takes an argument of `size` bytes. A connection that cannot be made, or
/// that fails for another reason, counts as accepting: the write then meets the same trouble and
/// reports it (a refused size is never guessed).
fn accepts(settings: &Settings, server: &Target, size: u64, reply_timeout: Duration) -> bool {
    let Ok(connected) = connect(settings, server, reply_timeout) else {
        return true;
    };
    let mut con = connected.con;
    let header = format!("*3\r\n$4\r\nPING\r\n$1\r\nx\r\n${size}\r\n");
    let mut sent = con.send_packed_command(header.as_bytes());
    let piece = vec![b'x'; PROBE_PIECE];
    let mut left = size;
    while sent.is_ok() && left > 0 {
        let n = left.min(PROBE_PIECE as u64) as usize;
        sent = con.send_packed_command(&piece[..n]);
        left -= n as u64;
    }
    if sent.is_ok() {
        // A failed send is not told apart: the reply (or the hang-up) says what happened.
        let _ = con.send_packed_command(b"\r\n");
    }
    // The refusal is in the reply, or the server hung up (then the reply may be lost with the
    // connection: the caller asks twice before taking a hang-up for a refusal).
    let refusal = |text: String| text.contains("invalid bulk length");
    match con.recv_response() {
        Ok(redis::Value::ServerError(e)) => !refusal(e.to_string()),
        Ok(_) => true,
        Err(e) => !(e.is_io_error() || refusal(e.to_string())),
    }
}
