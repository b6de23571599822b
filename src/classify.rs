//! Redis and connection errors → one sentence for the user and an Airbyte failure type.
//!
//! The table follows DESIGN.md: credentials, permissions, memory, wrong key types and collisions
//! with existing records are the user's to fix (`config_error`); refused or lost connections,
//! timeouts and a server that is loading or busy may pass (`transient_error`); anything else is
//! unexpected (`system_error`). The raw error always goes to `internal_message`.

use std::io::ErrorKind as IoKind;

use redis::RedisError;

use crate::config::{Settings, Target};
use crate::error::Failure;

/// Where an error happened, for the message.
#[derive(Debug, Clone)]
pub struct Context {
    /// `host:port` of the server.
    pub address: String,
    /// The host alone, for resolution errors.
    pub host: String,
    /// What was being done, e.g. "while writing stream \"ns\".\"users\"".
    pub during: String,
    /// Keys involved, if known (named in WRONGTYPE messages).
    pub keys: Option<String>,
    /// Whether the connection uses TLS (a silent server may then be a plain port).
    pub tls: bool,
    /// Whether the master can move (sentinel and cluster mode): a READONLY reply then means a
    /// failover.
    pub failover: bool,
    /// The config field whose timeout ran out when the server did not answer in time.
    pub timeout_field: &'static str,
}

impl Context {
    /// A context for an operation on the configured destination.
    pub fn new(settings: &Settings, during: impl Into<String>) -> Self {
        Self::at(settings, &Target::configured(settings), during)
    }

    /// A context for an operation on the server of one connection.
    pub fn at(settings: &Settings, target: &Target, during: impl Into<String>) -> Self {
        Context {
            address: target.shown.clone(),
            host: target.host.clone(),
            during: during.into(),
            keys: None,
            tls: settings.tls != crate::config::tls::Tls::Off,
            failover: settings.master_can_move(),
            timeout_field: settings.reply_timeout_field,
        }
    }

    /// The same context for making the TCP connection (bounded by `connect_timeout_ms`).
    pub fn connecting(mut self) -> Self {
        self.timeout_field = "connect_timeout_ms";
        self
    }

    /// The same context naming the keys involved.
    pub fn with_keys(mut self, keys: impl Into<String>) -> Self {
        self.keys = Some(keys.into());
        self
    }
}

/// Maps a redis-rs error to a [`Failure`].
pub fn classify(err: &RedisError, ctx: &Context) -> Failure {
    let raw = err.to_string();
    let at = &ctx.address;
    let during = &ctx.during;
    if let Some(f) = classify_tls(&raw, ctx) {
        return f;
    }
    if err.kind() == redis::ErrorKind::Parse {
        // An HTTP server, a TLS port spoken to in plain text, or anything else that is not RESP.
        return Failure::config(
            format!("The server at {at} is not a Redis server: it answered something other than the Redis protocol {during}. Check host and port (and ssl: a TLS port answers plain-text clients this way)."),
            raw,
        );
    }
    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
        return classify_io(err, ctx, raw);
    }
    let code = error_code(err);
    let keys = ctx.keys.as_deref().unwrap_or("its keys");
    if let Some(script) = ScriptCode::parse(code) {
        return script_failure(script, err, ctx, raw);
    }
    match code {
        "WRONGPASS" => Failure::config(format!("Redis at {at} refused the credentials: check \"username\" and \"password\"."), raw),
        "ERR" if raw.contains("invalid password") || raw.contains("invalid username-password") => {
            Failure::config(format!("Redis at {at} refused the password: check \"password\"."), raw)
        }
        "NOAUTH" => Failure::config(format!("Redis at {at} requires authentication: set \"password\" (and \"username\" for an ACL user)."), raw),
        "NOPERM" => Failure::config(
            format!("The Redis user lacks a permission {during} ({}): grant it with ACL SETUSER, e.g. +@write +@read +@scripting and a key pattern covering the streams' keys and _airbyte_redis:*.", err.detail().unwrap_or(code)),
            raw,
        ),
        "OOM" => Failure::config(format!("Redis at {at} is out of memory (maxmemory reached) {during}: raise maxmemory, free memory, or use an eviction-free policy; no part of the refused batch was written."), raw),
        "WRONGTYPE" => Failure::config(format!("A key the destination writes holds another type of value {during} ({keys}): delete or rename that key, or write to another namespace or database."), raw),
        "READONLY" if ctx.failover => Failure::transient(format!("Redis at {at} has become a replica {during}: a failover is under way; the writer asks the sentinels for the new master."), raw),
        "READONLY" => Failure::config(format!("Redis at {at} is a read-only replica: point \"host\" at the master."), raw),
        "MOVED" | "ASK" => Failure::transient(format!("The cluster moved a slot away from {at} {during} ({}): a failover or resharding is under way; the writer follows the cluster's new slot map.", first_line(&raw)), raw),
        "ERR" if raw.contains("max number of clients reached") => Failure::transient(format!("Redis at {at} refused the connection {during}: max number of clients reached (its maxclients setting). Close idle clients or raise maxclients, then retry the sync."), raw),
        "ERR" if raw.contains("non local key") => Failure::transient(format!("A slot is being migrated away from {at} {during} (a resharding is under way); the writer retries once it has moved."), raw),
        "ERR" if raw.contains("cluster support disabled") => Failure::config(format!("Redis at {at} is not a cluster node (cluster-enabled no): use topology mode \"standalone\" for it."), raw),
        "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" => Failure::transient(format!("Redis at {at} is temporarily unable to serve {during} ({code}); retry the sync."), raw),
        "ERR" if raw.contains("DB index is out of range") => Failure::config(format!("Redis at {at} has no database of that index: lower \"db\" (the server's \"databases\" setting limits it)."), raw),
        "ERR" if raw.contains("unknown command") || raw.contains("Unknown Redis command called from Lua") => Failure::config(format!("Redis at {at} does not know a command the destination needs {during}: it may be disabled or renamed on this server."), raw),
        _ => Failure::system(format!("Redis at {at} answered with an unexpected error {during}: {}", first_line(&raw)), raw),
    }
}

/// The failure for an error one of the destination's scripts raised.
fn script_failure(script: ScriptCode, err: &RedisError, ctx: &Context, raw: String) -> Failure {
    let at = &ctx.address;
    let during = &ctx.during;
    let keys = ctx.keys.as_deref().unwrap_or("its keys");
    match script {
        ScriptCode::NoPermission => Failure::config(
            format!("The Redis user lacks a permission {during} ({}): grant it with ACL SETUSER, e.g. +@write +@read +@scripting and a key pattern covering the streams' keys and _airbyte_redis:*.", err.detail().unwrap_or(script.as_str())),
            raw,
        ),
        ScriptCode::BadCounter => Failure::config(format!("The counter key {} does not hold a whole number {during}: it is not a stream counter of this destination; delete or rename it.", err.detail().unwrap_or(keys)), raw),
        ScriptCode::KeyExists => Failure::config(
            format!("Key {} is in the way of the next records {during}: the stream's counter says that id is free, but the key exists (another stream's counter or record in the Java layout, another tool's key, or a record whose counter was deleted, evicted or reset). The batch was refused whole and nothing of it was written: rename or delete that key, or set the counter to the highest record id, then sync again.", err.detail().unwrap_or(keys)),
            raw,
        ),
        ScriptCode::Foreign => Failure::config(
            format!("Key {} is in the way of a publish {during}: it is not a record of this destination (another tool's key). Rename or delete it; the next sync finishes the publish (until then the stream's other records are those of the old and the new generation, and other streams are not affected).", err.detail().unwrap_or(keys)),
            raw,
        ),
        ScriptCode::MissingStaged => Failure::config(
            format!("Staged record {} of a publish under way is gone {during} (deleted, or expired after a week): the publish cannot finish. Delete the stream's publish marker (_airbyte_redis:publish:<stream key>) and run a full sync of the stream.", err.detail().unwrap_or(keys)),
            raw,
        ),
        ScriptCode::BadIndex => Failure::config(
            format!("The primary-key index {} of an append_dedup stream holds an entry this destination did not write, or one above the stream's counter (was the counter deleted?), {during}: delete the index and the stream's records, then sync the stream again from the start.", err.detail().unwrap_or(keys)),
            raw,
        ),
        ScriptCode::Unindexed => {
            let detail = err.detail().unwrap_or(keys);
            let (counter, n) = detail.split_once(' ').unwrap_or((detail, "some"));
            Failure::config(
                format!("Stream key {counter} holds {n} records at {counter}:<id> without a primary-key index entry (written by append or overwrite, or with record_key \"sequence\"), so upserts cannot replace them ({during}; nothing was written). Delete the stream's records and counter (or rename them away) and sync the stream again from the start, or keep the stream's sync mode and record key."),
                raw,
            )
        }
        ScriptCode::Format => {
            // `<key> <stored> <wanted>`: the key may hold spaces, the format names never do.
            let detail = err.detail().unwrap_or(keys);
            let mut parts = detail.rsplitn(3, ' ');
            let (wanted, stored, key) = (
                parts.next().unwrap_or("this one"),
                parts.next().unwrap_or("another format"),
                parts.next().unwrap_or(keys),
            );
            Failure::config(format_mismatch(key, stored, wanted, during), raw)
        }
        ScriptCode::Superseded => {
            let detail = err.detail().unwrap_or(keys);
            let (key, run) = detail.rsplit_once(' ').unwrap_or((detail, "another run"));
            Failure::config(
                format!("Another run ({run}) of the same load began while this one was writing and took the load over ({key}), so this run stopped {during}; nothing of its refused batch was written, and the other run loads from the last committed record. Run one load of a load id at a time."),
                raw,
            )
        }
        ScriptCode::OutOfOrder | ScriptCode::NoMarker | ScriptCode::BadArguments => Failure::system(format!("Redis at {at} answered with an unexpected error {during}: {}", first_line(&raw)), raw),
    }
}

/// The error codes the destination's own scripts answer with (`redis.error_reply('<CODE> …')` in
/// `lua/`): one list, which a test in `scripts.rs` holds against the scripts' text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptCode {
    /// `ABSEQ`: the batch would overtake an earlier batch of its stream (its sequence token).
    OutOfOrder,
    /// `ABEXISTS <key>`: a key the batch would create exists already.
    KeyExists,
    /// `ABCOUNTER <key>`: the stream's counter does not hold a whole number.
    BadCounter,
    /// `ABNOPERM`: the user may not write the batch's keys (Redis 7's ACL check in the script).
    NoPermission,
    /// `ABFOREIGN <key>`: a publish would overwrite a key that is not a record.
    Foreign,
    /// `ABSTAGED <key>`: a staged record of a publish under way is gone.
    MissingStaged,
    /// `ABMARKER`: a publish step found no publish under way.
    NoMarker,
    /// `ABARGS`: the script was called with malformed arguments (a defect).
    BadArguments,
    /// `ABINDEX <key>`: an `append_dedup` stream's index holds an entry that is not `<id>:<cursor>`.
    BadIndex,
    /// `ABUNINDEXED <counter> <n>`: an `append_dedup` stream has records but no index.
    Unindexed,
    /// `ABFORMAT <stream key> <stored format> <format of the batch>`: the stream's records are
    /// stored in another value format.
    Format,
    /// `ABSUPERSEDED <load key> <run>`: another run of the same load began after this one (it
    /// owns the load now), so this run's batches are refused.
    Superseded,
}

impl ScriptCode {
    /// Every code.
    pub const ALL: [ScriptCode; 12] = [
        ScriptCode::OutOfOrder,
        ScriptCode::KeyExists,
        ScriptCode::BadCounter,
        ScriptCode::NoPermission,
        ScriptCode::Foreign,
        ScriptCode::MissingStaged,
        ScriptCode::NoMarker,
        ScriptCode::BadArguments,
        ScriptCode::BadIndex,
        ScriptCode::Unindexed,
        ScriptCode::Format,
        ScriptCode::Superseded,
    ];

    /// The code as the scripts spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptCode::OutOfOrder => "ABSEQ",
            ScriptCode::KeyExists => "ABEXISTS",
            ScriptCode::BadCounter => "ABCOUNTER",
            ScriptCode::NoPermission => "ABNOPERM",
            ScriptCode::Foreign => "ABFOREIGN",
            ScriptCode::MissingStaged => "ABSTAGED",
            ScriptCode::NoMarker => "ABMARKER",
            ScriptCode::BadArguments => "ABARGS",
            ScriptCode::BadIndex => "ABINDEX",
            ScriptCode::Unindexed => "ABUNINDEXED",
            ScriptCode::Format => "ABFORMAT",
            ScriptCode::Superseded => "ABSUPERSEDED",
        }
    }

    /// The script code an error code is, if it is one.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

/// The sentence for a stream whose records are stored in value format `stored` when the sync
/// writes `wanted` (stream key `key`).
pub fn format_mismatch(key: &str, stored: &str, wanted: &str, during: &str) -> String {
    format!("The stream at {key} holds records in value_format {stored:?}, and this sync would write {wanted:?} {during}: formats are never mixed in one stream, and nothing was written. Set value_format {stored:?} for this stream (in stream_options), or delete the stream's keys (and _airbyte_redis:format:{key}) to start it over in {wanted:?}.")
}

/// The error code of a Redis error reply, looking through the wrapping that Redis before 7.0 puts
/// around an error raised by a command inside a script: `ERR Error running script (call to f_…):
/// @user_script:32: WRONGTYPE …`, `… @user_script: 1: -OOM command not allowed …`, and for ACL
/// refusals `… The user executing the script can't …` (NOPERM). Redis 7 answers the inner code as is.
pub fn error_code(err: &RedisError) -> &str {
    let code = err.code().unwrap_or("");
    if code != "ERR" {
        return code;
    }
    err.detail().and_then(script_error_code).unwrap_or(code)
}

fn script_error_code(detail: &str) -> Option<&str> {
    // Redis 7 answers an ACL refusal inside a script as a bare ERR with this sentence.
    if detail.starts_with("The user executing the script can't") {
        return Some("NOPERM");
    }
    let inner = detail.strip_prefix("Error running script")?;
    if inner.contains("The user executing the script can't") {
        return Some("NOPERM");
    }
    // Segments after "(call to f_…)": "@user_script:32", "WRONGTYPE Operation …" or "-OOM …".
    inner.split(": ").skip(1).find_map(|segment| {
        let word = segment.trim_start_matches('-').split(' ').next()?;
        (word.len() >= 2 && word.bytes().all(|b| b.is_ascii_uppercase())).then_some(word)
    })
}

/// TLS handshake failures, recognised by rustls's wording.
fn classify_tls(raw: &str, ctx: &Context) -> Option<Failure> {
    let at = &ctx.address;
    let message = if raw.contains("UnknownIssuer") || raw.contains("BadSignature") {
        format!("The TLS certificate of Redis at {at} is not signed by a trusted authority: set ssl_mode.ca_certificate to the CA that signed it.")
    } else if raw.contains("not valid for name") || raw.contains("NotValidForName") {
        format!("The TLS certificate of Redis at {at} is not valid for the host name {:?}: connect with a name the certificate lists, or fix the certificate.", ctx.host)
    } else if raw.contains("CertificateRequired") || raw.contains("certificate required") {
        format!("Redis at {at} requires a TLS client certificate: set ssl_mode.client_certificate and ssl_mode.client_key.")
    } else if raw.contains("BadCertificate")
        || raw.contains("UnknownCA")
        || raw.contains("DecryptError")
    {
        format!("Redis at {at} refused the TLS client certificate: use one signed by a CA the server trusts.")
    } else if raw.contains("invalid peer certificate") {
        format!("The TLS certificate of Redis at {at} was refused: check the server's certificate and ssl_mode.")
    } else if raw.contains("InvalidContentType") || raw.contains("corrupt message") {
        format!("The TLS handshake with {at} failed: the server does not speak TLS on this port (set \"ssl\": false, or use its TLS port).")
    } else if raw.contains("Unable to extract private key")
        || raw.contains("private key") && raw.contains("PEM")
    {
        "The TLS client key could not be used: check ssl_mode.client_key (PEM; PKCS#8, PKCS#1 or SEC1).".to_string()
    } else {
        return None;
    };
    Some(Failure::config(message, raw))
}

fn classify_io(err: &RedisError, ctx: &Context, raw: String) -> Failure {
    let at = &ctx.address;
    if raw.contains("failed to lookup address") || raw.contains("Name or service not known") {
        return Failure::config(
            format!("The host {:?} does not resolve: check \"host\".", ctx.host),
            raw,
        );
    }
    if err.is_connection_refusal() || err.kind() == redis::ErrorKind::Io && raw.contains("refused")
    {
        return Failure::transient(
            format!("Could not connect to Redis at {at}: the connection was refused. Check \"host\" and \"port\", and that the server is running."),
            raw,
        );
    }
    let io_kind = std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    if err.is_timeout() || matches!(io_kind, Some(IoKind::TimedOut | IoKind::WouldBlock)) {
        let tls = if ctx.tls {
            " (TLS is on: is this the server's TLS port?)"
        } else {
            ""
        };
        return Failure::transient(
            format!("Redis at {at} did not answer in time {}: check that host and port lead to a Redis server{tls} and that it is not overloaded, or raise {:?}.", ctx.during, ctx.timeout_field),
            raw,
        );
    }
    Failure::transient(
        format!(
            "The connection to Redis at {at} failed {}; retry the sync.",
            ctx.during
        ),
        raw,
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::script_error_code;

    // Replies of Redis 6.0.16 (Debian bullseye) to errors inside scripts, as the redis crate
    // splits them: code "ERR", then this detail.
    #[test]
    fn pre_7_script_errors_give_the_inner_code() {
        let wrongtype = "Error running script (call to f_e4b6): @user_script:1: WRONGTYPE Operation against a key holding the wrong kind of value";
        let oom = "Error running script (call to f_8977): @user_script:1: @user_script: 1: -OOM command not allowed when used memory > 'maxmemory'.";
        let noperm = "Error running script (call to f_4a1e): @user_script:1: @user_script: 1: The user executing the script can't access at least one of the keys mentioned in the command arguments";
        let unknown = "Error running script (call to f_d5b7): @user_script:1: @user_script: 1: Unknown Redis command called from Lua script";
        assert_eq!(script_error_code(wrongtype), Some("WRONGTYPE"));
        assert_eq!(script_error_code(oom), Some("OOM"));
        assert_eq!(script_error_code(noperm), Some("NOPERM"));
        assert_eq!(script_error_code(unknown), None);
        assert_eq!(script_error_code("DB index is out of range"), None);
        // Redis 7.0.15's own wording (code ERR) for a command the user may not run in a script.
        let noperm7 = "The user executing the script can't run this command or subcommand script: 336010622d36ab3af5826d84c837e11aadc6d539, on @user_script:196.";
        assert_eq!(script_error_code(noperm7), Some("NOPERM"));
    }
}
