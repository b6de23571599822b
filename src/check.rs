//! `check`: proves that a sync can write, before any data moves.
//!
//! Connects (AUTH, SELECT), PINGs, loads the scripts, and runs the append script once on a throwaway
//! stream under the reserved prefix, which exercises exactly the rights a sync needs (read, write,
//! scripting); then removes the probe's keys. The probe is removed before the status is printed,
//! because PyAirbyte stops the process as soon as it reads the status.
//!
//! In cluster mode the slot map must be complete and the cluster state ok, and every master must
//! answer and accept the scripts; in sentinel mode the sentinels must name a reachable master.

use redis::Value;

use crate::config::Settings;
use crate::connect::nodes::Nodes;
use crate::connect::{self, classify, Context};
use crate::error::Failure;
use crate::java_staging;
use crate::keys::{self, StreamKeys};
use crate::scripts::APPEND_BATCH;
use crate::write::batch::{Batch, Expiry, StreamCall};

/// Runs every check; returns the warnings to log on success.
pub fn run(settings: &Settings) -> Result<Vec<String>, Failure> {
    let route = connect::route(settings)?;
    // Every reply of a check is awaited at most the connect timeout.
    let mut settings = settings.clone();
    settings.reply_timeout = settings.connect_timeout;
    settings.reply_timeout_field = "connect_timeout_ms";
    let settings = &settings;
    // Connecting loads the scripts on the server (on every master of a cluster).
    let mut nodes = Nodes::open(settings, &route.entry, settings.reply_timeout)?;
    let mut warnings = route.warnings.clone();
    warnings.extend(nodes.take_warnings());
    for addr in nodes.open_addrs() {
        let link = nodes.link(&addr)?;
        let ctx = Context {
            during: "during the check".into(),
            ..link.ctx.clone()
        };
        redis::cmd("PING")
            .query::<()>(&mut link.con)
            .map_err(|e| classify(&e, &ctx))?;
        if let Some(w) = eviction_warning(&mut link.con, &ctx.address) {
            warnings.push(w);
        }
    }
    let recovery = crate::write::overwrite::recover(&mut nodes)?;
    warnings.extend(recovery.finished_messages());
    warnings.extend(recovery.stuck_messages());
    probe_write(&mut nodes)?;
    // A user who may not read tmp:* keys has none to delete either: nothing to report then.
    if let Ok(found) = java_staging::sweep(&mut nodes, false, java_staging::CHECK_STEPS) {
        if let Some(w) = java_staging_warning(&found, settings.delete_java_staging) {
            warnings.push(w);
        }
    }
    Ok(warnings)
}

/// What `check` says about the Java connector's leftover staging, if it found any.
fn java_staging_warning(found: &java_staging::Found, deleting: bool) -> Option<String> {
    let example = found.example.as_deref()?;
    let scope = if found.complete {
        ""
    } else {
        " in the first million keys of a node (there may be more)"
    };
    let what_to_do = if deleting {
        "delete_java_staging is on: the next sync deletes them before it writes."
    } else {
        "set \"delete_java_staging\": true to delete them when the next sync starts (only while no Java sync runs)."
    };
    Some(format!(
        "Found {} record(s){scope} that a failed sync of the Java Redis connector left staged under tmp: (e.g. {example:?}); they belong to no stream, and the Java connector's next sync would publish them as duplicates. {what_to_do}",
        found.records
    ))
}

fn probe_write(nodes: &mut Nodes) -> Result<(), Failure> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| Failure::system("No randomness for the probe key.", e))?;
    let run: String = id.iter().map(|b| format!("{b:02x}")).collect();
    // The probe stream's counter is `_airbyte_redis:check:<run>`; written through the real script.
    let keys = StreamKeys {
        counter: keys::probe_counter(&run),
        record_prefix: format!("{}:", keys::probe_counter(&run)),
    };
    let call = StreamCall::new(&APPEND_BATCH, keys.clone(), &run, Expiry::NONE);
    let token = call.token.clone();
    let mut probe = Vec::new();
    call.encode(&Batch::single(0, 1, 0, b"{\"probe\":true}"), &mut probe);
    let link = nodes.link_for(&keys.counter)?;
    let con = &mut link.con;
    let ctx = Context {
        during: "while probing write rights".into(),
        ..link.ctx.clone()
    }
    .with_keys(format!("{} and {}", keys.counter, token));
    // The very call a sync's first batch makes.
    let result = redis::ConnectionLike::req_packed_command(con, &probe);
    let cleanup: Result<(), _> = redis::cmd("DEL")
        .arg(&keys.counter)
        .arg(keys.record(1))
        .arg(&token)
        .query(con);
    match result {
        Ok(Value::Int(1)) => {}
        Ok(Value::ServerError(e)) => return Err(classify(&redis::RedisError::from(e), &ctx)),
        Ok(other) => {
            return Err(Failure::system(
                "The write probe's script call answered unexpectedly.",
                format!("{other:?}"),
            ))
        }
        Err(e) => return Err(classify(&e, &ctx)),
    }
    cleanup.map_err(|e| classify(&e, &ctx))
}

/// A warning when the server at `at` may evict keys (records could vanish), if it lets us ask.
fn eviction_warning(con: &mut redis::Connection, at: &str) -> Option<String> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(con)
        .ok()?;
    let policy = reply.get(1)?;
    (policy.starts_with("allkeys") || policy.starts_with("volatile")).then(|| {
        format!("The maxmemory-policy of Redis at {at} is {policy}: under memory pressure Redis may evict records (or, for volatile-*, keys with a TTL). Use noeviction to keep every record.")
    })
}
