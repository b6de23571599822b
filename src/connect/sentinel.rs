//! Finding the master through Redis Sentinel.
//!
//! Each sentinel is asked in turn (`SENTINEL GET-MASTER-ADDR-BY-NAME`) until one names the master.
//! Right after a failover a sentinel may still name the old master, so the caller checks `ROLE`
//! on the connection it makes and treats "not a master" as a failover still under way (transient).
//! Every reconnect asks again, so the writer follows the master wherever it moves.

use redis::Value;

use super::{authenticate, classify, client, Context};
use crate::config::Settings;
use crate::error::Failure;
use crate::topology::{join_host_port, SentinelSettings};

/// `settings` pointed at the master the sentinels name.
pub fn master_settings(settings: &Settings, s: &SentinelSettings) -> Result<Settings, Failure> {
    let mut unreachable = Vec::new();
    let mut unknown = Vec::new();
    for (host, port) in &s.sentinels {
        let address = join_host_port(host, *port);
        match ask(settings, s, host, *port) {
            Ok(Some((master_host, master_port))) => {
                let mut m = settings.clone();
                m.shown_address = Some(format!(
                    "{} (master {:?} of the sentinels)",
                    join_host_port(&master_host, master_port),
                    s.master_name
                ));
                m.host = master_host;
                m.port = master_port;
                return Ok(m);
            }
            Ok(None) => unknown.push(address),
            Err(f) if f.failure_type == crate::error::FailureType::Config => return Err(f),
            Err(f) => unreachable.push(f),
        }
    }
    if !unknown.is_empty() {
        return Err(Failure::config(
            format!(
                "The sentinels at {} monitor no master named {:?}: check \"topology.master_name\" (SENTINEL MASTERS lists the names).",
                unknown.join(", "),
                s.master_name
            ),
            "SENTINEL GET-MASTER-ADDR-BY-NAME returned nil",
        ));
    }
    let first = unreachable.swap_remove(0);
    Err(Failure::transient(
        format!(
            "None of the sentinels ({}) answered; the first said: {} Check \"topology.sentinels\" and that the sentinels run.",
            s.list(),
            first.message
        ),
        first.internal,
    ))
}

/// One sentinel's answer: the master's address, or None when it monitors no such name.
fn ask(
    settings: &Settings,
    s: &SentinelSettings,
    host: &str,
    port: u16,
) -> Result<Option<(String, u16)>, Failure> {
    let mut at = settings.clone();
    at.host = host.to_string();
    at.port = port;
    at.shown_address = Some(format!("sentinel {}", join_host_port(host, port)));
    at.username = s.username.clone();
    at.password = s.password.clone();
    let ctx = Context::new(&at, "asking for the master");
    let mut con = client(&at)
        .and_then(|c| c.get_connection_with_timeout(at.connect_timeout))
        .map_err(|e| classify(&e, &ctx))?;
    con.set_read_timeout(Some(at.connect_timeout))
        .and_then(|()| con.set_write_timeout(Some(at.connect_timeout)))
        .map_err(|e| classify(&e, &ctx))?;
    authenticate(&mut con, &at, &mut Vec::new())?;
    let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(&s.master_name)
        .query(&mut con)
        .map_err(|e| classify(&e, &ctx))?;
    Ok(reply)
}

/// Fails (transient) unless the server behind `con` is a master: right after a failover the
/// sentinels may still name the old one, now a replica.
pub fn ensure_master(con: &mut redis::Connection, ctx: &Context) -> Result<(), Failure> {
    let role: Vec<Value> = redis::cmd("ROLE")
        .query(con)
        .map_err(|e| classify(&e, ctx))?;
    let is_master = match role.first() {
        Some(Value::BulkString(b)) => b == b"master",
        Some(Value::SimpleString(s)) => s == "master",
        _ => false,
    };
    if is_master {
        Ok(())
    } else {
        Err(Failure::transient(
            format!(
                "Redis at {} is not a master (yet): a failover is under way; waiting for the sentinels to name the new master.",
                ctx.address
            ),
            format!("ROLE returned {role:?}"),
        ))
    }
}
