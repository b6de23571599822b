//! `check`: proves that a sync can write, before any data moves.
//!
//! Connects (AUTH, SELECT), PINGs, loads the scripts, and runs the append script once on a throwaway
//! stream under the reserved prefix, which exercises exactly the rights a sync needs (read, write,
//! scripting); then removes the probe's keys. The probe is removed before the status is printed,
//! because PyAirbyte stops the process as soon as it reads the status.

use redis::Value;

use crate::config::Settings;
use crate::connect::{self, classify, Context};
use crate::error::Failure;
use crate::keys::{self, StreamKeys, TOKEN_TTL_SECONDS};
use crate::scripts::APPEND_BATCH;
use crate::write::writer::load_scripts;

/// Runs every check; returns the warnings to log on success.
pub fn run(settings: &Settings) -> Result<Vec<String>, Failure> {
    let route = connect::route(settings)?;
    let settings = &route.settings;
    let connected = connect::connect(settings, settings.connect_timeout)?;
    let mut warnings = route.warnings.clone();
    warnings.extend(connected.warnings);
    let mut con = connected.con;
    let ctx = Context::new(settings, "during the check");
    redis::cmd("PING")
        .query::<()>(&mut con)
        .map_err(|e| classify(&e, &ctx))?;
    load_scripts(&mut con, &ctx)?;
    for counter in crate::write::overwrite::recover(&mut con, &ctx)? {
        warnings.push(format!(
            "Finished the publish of stream key {counter:?} that an earlier sync left under way."
        ));
    }
    probe_write(&mut con, &ctx)?;
    if let Some(w) = eviction_warning(&mut con) {
        warnings.push(w);
    }
    Ok(warnings)
}

fn probe_write(con: &mut redis::Connection, ctx: &Context) -> Result<(), Failure> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| Failure::system("No randomness for the probe key.", e))?;
    let run: String = id.iter().map(|b| format!("{b:02x}")).collect();
    // The probe stream's counter is `_airbyte_redis:check:<run>`; written through the real script.
    let keys = StreamKeys {
        counter: keys::probe_counter(&run),
        record_prefix: format!("{}:", keys::probe_counter(&run)),
    };
    let token = keys.token(&run);
    let ctx = Context {
        during: "while probing write rights".into(),
        ..ctx.clone()
    }
    .with_keys(format!("{} and {}", keys.counter, token));
    let result: Result<Value, _> = redis::cmd("EVALSHA")
        .arg(&APPEND_BATCH.sha)
        .arg(2)
        .arg(&keys.counter)
        .arg(&token)
        .arg(1)
        .arg(&keys.record_prefix)
        .arg(TOKEN_TTL_SECONDS)
        .arg(0)
        .arg("{\"probe\":true}")
        .query(con);
    let cleanup: Result<(), _> = redis::cmd("DEL")
        .arg(&keys.counter)
        .arg(keys.record(1))
        .arg(&token)
        .query(con);
    match result {
        Ok(Value::Int(1)) => {}
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

/// A warning when the server may evict keys (records could vanish), if it lets us ask.
fn eviction_warning(con: &mut redis::Connection) -> Option<String> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(con)
        .ok()?;
    let policy = reply.get(1)?;
    (policy.starts_with("allkeys") || policy.starts_with("volatile")).then(|| {
        format!("The server's maxmemory-policy is {policy}: under memory pressure Redis may evict records (or, for volatile-*, keys with a TTL). Use noeviction to keep every record.")
    })
}
