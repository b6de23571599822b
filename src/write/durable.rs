//! Durable checkpoints on one connection: before a state is echoed, `WAIT` for the configured
//! replicas, or `WAITAOF` for the AOF fsyncs; too few confirmations in time fail the sync.

use crate::config::Settings;
use crate::connect::classify;
use crate::connect::nodes::Link;
use crate::error::Failure;

/// Durable checkpoints on one connection: WAIT for the replicas, or WAITAOF.
pub fn wait_durable_on(link: &mut Link, settings: &Settings) -> Result<(), Failure> {
    let d = settings.durability;
    let ms = d.timeout.as_millis() as u64;
    let at = &link.ctx.address;
    if d.aof {
        let reply: Result<(i64, i64), _> = redis::cmd("WAITAOF")
            .arg(1)
            .arg(d.replicas)
            .arg(ms)
            .query(&mut link.con);
        let (local, replicas) = reply.map_err(|e| {
            if e.to_string().contains("unknown command") {
                Failure::config("wait_aof needs Redis 7.2 or newer (WAITAOF): upgrade the server, or set wait_aof false.", e)
            } else if e.to_string().contains("appendonly") {
                Failure::config("wait_aof needs appendonly yes on the server (WAITAOF): turn on the AOF, or set wait_aof false.", e)
            } else {
                classify(&e, &link.ctx)
            }
        })?;
        if local < 1 || replicas < i64::from(d.replicas) {
            return Err(Failure::transient(
                format!("The writes behind a state were fsynced to the AOF on {local} of 1 master and {replicas} of {} replicas of {at} within {ms} ms; the state was not echoed. Check the replicas' health or raise wait_timeout_ms.", d.replicas),
                format!("WAITAOF returned [{local}, {replicas}]"),
            ));
        }
    } else if d.replicas > 0 {
        let acked: i64 = redis::cmd("WAIT")
            .arg(d.replicas)
            .arg(ms)
            .query(&mut link.con)
            .map_err(|e| classify(&e, &link.ctx))?;
        if acked < i64::from(d.replicas) {
            return Err(Failure::transient(
                format!("Only {acked} of {} replicas of {at} acknowledged the writes behind a state within {ms} ms; the state was not echoed. Check the replicas (INFO replication) or raise wait_timeout_ms.", d.replicas),
                format!("WAIT returned {acked}"),
            ));
        }
    }
    Ok(())
}
