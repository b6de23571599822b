//! Durable checkpoints on one connection: before a state is echoed, `WAIT` for the configured
//! replicas, or `WAITAOF` for the AOF fsyncs; too few confirmations in time fail the sync.

use std::time::Duration;

use crate::config::Settings;
use crate::connect::classify;
use crate::connect::nodes::Link;
use crate::error::Failure;

/// Durable checkpoints on one connection: WAIT for the replicas, or WAITAOF.
///
/// Both block up to `wait_timeout_ms` by design, so while they run the connection's reply timeout is
/// raised above it: a `wait_timeout_ms` longer than `reply_timeout_ms` must give "too few replicas",
/// not a lost connection.
pub fn wait_durable_on(link: &mut Link, settings: &Settings) -> Result<(), WaitFailure> {
    let needed = settings.durability.timeout + WAIT_MARGIN;
    let raise = needed > settings.reply_timeout;
    if raise {
        let _ = link.con.set_read_timeout(Some(needed));
    }
    let result = wait(link, settings);
    if raise {
        let _ = link.con.set_read_timeout(Some(settings.reply_timeout));
    }
    result
}

/// Why a durable wait failed.
#[derive(Debug)]
pub enum WaitFailure {
    /// The server answered: fewer replicas (or AOF fsyncs) than configured confirmed in time.
    TooFew(Failure),
    /// The wait itself failed (a lost connection, a refusal).
    Failed(Failure),
}

impl WaitFailure {
    /// The failure to report.
    pub fn into_failure(self) -> Failure {
        match self {
            WaitFailure::TooFew(f) | WaitFailure::Failed(f) => f,
        }
    }
}

/// How much longer than `wait_timeout_ms` a WAIT's reply may take to arrive.
const WAIT_MARGIN: Duration = Duration::from_secs(5);

fn wait(link: &mut Link, settings: &Settings) -> Result<(), WaitFailure> {
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
        }).map_err(WaitFailure::Failed)?;
        if local < 1 || replicas < i64::from(d.replicas) {
            return Err(WaitFailure::TooFew(Failure::transient(
                format!("The writes behind a state were fsynced to the AOF on {local} of 1 master and {replicas} of {} replicas of {at} within {ms} ms; the state was not echoed. Check the replicas' health or raise wait_timeout_ms.", d.replicas),
                format!("WAITAOF returned [{local}, {replicas}]"),
            )));
        }
    } else if d.replicas > 0 {
        let acked: i64 = redis::cmd("WAIT")
            .arg(d.replicas)
            .arg(ms)
            .query(&mut link.con)
            .map_err(|e| WaitFailure::Failed(classify(&e, &link.ctx)))?;
        if acked < i64::from(d.replicas) {
            return Err(WaitFailure::TooFew(Failure::transient(
                format!("Only {acked} of {} replicas of {at} acknowledged the writes behind a state within {ms} ms; the state was not echoed. Check the replicas (INFO replication) or raise wait_timeout_ms.", d.replicas),
                format!("WAIT returned {acked}"),
            )));
        }
    }
    Ok(())
}
