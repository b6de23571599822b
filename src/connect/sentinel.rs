//! Finding the master through Redis Sentinel.
//!
//! Every sentinel is asked (`SENTINEL MASTER <name>`), and the answer with the highest
//! `config-epoch` wins: each failover raises the epoch, so a sentinel that has not heard of the
//! latest one yet (it learns through the others within seconds) cannot send the writer to the old
//! master, which may be back, empty, and still calling itself a master until the sentinels turn
//! it into a replica. While a failover is under way (a sentinel reports the master `o_down` or
//! `failover_in_progress` at the latest epoch) no answer is trusted: the old master may come back
//! empty and, until the sentinels switch, they all still name it (their `SENTINEL MASTER` record
//! changes only when the failover ends). The writer waits (a transient failure, retried within
//! `retry_budget_ms`). A master only one sentinel thinks down (`s_down`) is that sentinel's view,
//! and the others decide. The caller also checks `ROLE` on the connection it makes and treats "not
//! a master" as a failover still under way. Every reconnect asks again, so the writer follows the
//! master wherever it moves.

use std::collections::HashMap;

use redis::Value;

use super::{authenticate, classify, client, Context};
use crate::config::topology::{join_host_port, SentinelSettings};
use crate::config::{Settings, Target};
use crate::error::Failure;

/// What one sentinel says about the master.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    host: String,
    port: u16,
    /// Raised by every failover: the highest one is the latest word.
    epoch: u64,
    /// What the sentinel thinks of that master right now.
    health: Health,
}

/// A sentinel's view of the master it names (from the `flags` field of `SENTINEL MASTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Up, as far as this sentinel sees.
    Up,
    /// This sentinel alone cannot reach it (`s_down`): other sentinels may.
    SubjectivelyDown,
    /// The sentinels agree it is down (`o_down`), or a failover is running
    /// (`failover_in_progress`): the master is about to change.
    FailingOver,
}

/// What the sentinels' answers, taken together, say.
#[derive(Debug, PartialEq, Eq)]
enum Verdict<'a> {
    /// Write here.
    Master(&'a Named),
    /// A failover is under way (or every sentinel sees the master down): wait and ask again.
    Wait,
}

/// The latest answer nobody contradicts: the highest epoch among masters that are up, unless a
/// sentinel at that epoch or later reports the master down or a failover running.
fn verdict(answers: &[Named]) -> Option<Verdict<'_>> {
    let latest_up = answers
        .iter()
        .filter(|n| n.health == Health::Up)
        .max_by_key(|n| n.epoch);
    let failing = answers
        .iter()
        .filter(|n| n.health == Health::FailingOver)
        .map(|n| n.epoch)
        .max();
    if answers.is_empty() {
        return None;
    }
    Some(match (latest_up, failing) {
        (Some(up), Some(f)) if f >= up.epoch => Verdict::Wait,
        (Some(up), _) => Verdict::Master(up),
        (None, _) => Verdict::Wait,
    })
}

/// The master the sentinels name (the latest failover's, when they differ).
pub fn master_target(settings: &Settings, s: &SentinelSettings) -> Result<Target, Failure> {
    let mut unreachable = Vec::new();
    let mut unknown = Vec::new();
    let mut answers = Vec::new();
    let mut addresses = Vec::new();
    for (host, port) in &s.sentinels {
        let address = join_host_port(host, *port);
        match ask(settings, s, host, *port) {
            Ok(Some(Answer::Named(named))) => answers.push(named),
            Ok(Some(Answer::AddressOnly(host, port))) => addresses.push((address, host, port)),
            Ok(None) => unknown.push(address),
            Err(f) if f.failure_type == crate::error::FailureType::Config => return Err(f),
            Err(f) => unreachable.push(f),
        }
    }
    let master_at = |host: &str, port: u16| Target::master(host, port, &s.master_name);
    if answers.is_empty() {
        if let Some((_, host, port)) = addresses.first() {
            // Only the address, no epoch nor flags: trusted only when every sentinel that
            // answered names the same one (while a failover spreads, they differ).
            if addresses.iter().all(|(_, h, p)| h == host && p == port) {
                return Ok(master_at(host, *port));
            }
            let named: Vec<String> = addresses
                .iter()
                .map(|(at, h, p)| format!("{at} names {}", join_host_port(h, *p)))
                .collect();
            return Err(Failure::transient(
                format!(
                    "The sentinels disagree on where master {:?} is ({}): a failover is spreading; waiting until they agree.",
                    s.master_name,
                    named.join(", ")
                ),
                "SENTINEL GET-MASTER-ADDR-BY-NAME answers differ",
            ));
        }
    }
    match verdict(&answers) {
        Some(Verdict::Master(named)) => return Ok(master_at(&named.host, named.port)),
        Some(Verdict::Wait) => {
            return Err(Failure::transient(
                format!(
                    "The sentinels ({}) report master {:?} down or a failover under way; waiting for them to name the new master.",
                    s.list(),
                    s.master_name
                ),
                format!("SENTINEL MASTER answers: {answers:?}"),
            ))
        }
        None => {}
    }
    if !unknown.is_empty() {
        return Err(Failure::config(
            format!(
                "The sentinels at {} monitor no master named {:?}: check \"topology.master_name\" (SENTINEL MASTERS lists the names).",
                unknown.join(", "),
                s.master_name
            ),
            "SENTINEL MASTER: no such master",
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

/// What one sentinel said.
enum Answer {
    /// `SENTINEL MASTER`: address, epoch and health.
    Named(Named),
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`, for a sentinel user allowed nothing else.
    AddressOnly(String, u16),
}

/// One sentinel's answer, or None when it monitors no such name.
fn ask(
    settings: &Settings,
    s: &SentinelSettings,
    host: &str,
    port: u16,
) -> Result<Option<Answer>, Failure> {
    let at = Target::sentinel(host, port);
    // A sentinel's replies are awaited at most the connect timeout.
    let ctx = Context::at(settings, &at, "asking for the master").connecting();
    let mut con = client(settings, &at)
        .and_then(|c| c.get_connection_with_timeout(settings.connect_timeout))
        .map_err(|e| classify(&e, &ctx))?;
    con.set_read_timeout(Some(settings.connect_timeout))
        .and_then(|()| con.set_write_timeout(Some(settings.connect_timeout)))
        .map_err(|e| classify(&e, &ctx))?;
    let auth = Context {
        during: "authenticating".into(),
        ..ctx.clone()
    };
    authenticate(
        &mut con,
        s.username.as_ref(),
        s.password.as_ref(),
        &auth,
        &mut Vec::new(),
    )?;
    let reply: redis::RedisResult<HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(&s.master_name)
        .query(&mut con);
    match reply {
        Ok(fields) => named(&fields).map(|n| Some(Answer::Named(n))).ok_or_else(|| {
            Failure::transient(
                format!(
                    "The sentinel at {} described master {:?} without a usable ip, port and config-epoch; check that it is a Redis Sentinel.",
                    join_host_port(host, port),
                    s.master_name
                ),
                format!("SENTINEL MASTER returned {fields:?}"),
            )
        }),
        Err(e) if e.to_string().contains("No such master") => Ok(None),
        Err(e) if e.code() == Some("NOPERM") => address_only(&mut con, s, &ctx),
        Err(e) => Err(classify(&e, &ctx)),
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the address alone (nil when no such master is monitored).
fn address_only(
    con: &mut redis::Connection,
    s: &SentinelSettings,
    ctx: &Context,
) -> Result<Option<Answer>, Failure> {
    let reply: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(&s.master_name)
        .query(con)
        .map_err(|e| {
            let mut f = classify(&e, ctx);
            if e.code() == Some("NOPERM") {
                f.message = format!(
                    "The sentinel at {} refused both SENTINEL MASTER and SENTINEL GET-MASTER-ADDR-BY-NAME to this user: allow one of them to the sentinel user (topology.sentinel_username).",
                    ctx.address
                );
            }
            f
        })?;
    Ok(match reply {
        None => None,
        Some((host, port)) => match port.parse() {
            Ok(port) => Some(Answer::AddressOnly(host, port)),
            Err(_) => {
                return Err(Failure::transient(
                    format!(
                        "The sentinel at {} named master {:?} at a port that is not a number; check that it is a Redis Sentinel.",
                        ctx.address, s.master_name
                    ),
                    format!("GET-MASTER-ADDR-BY-NAME port {port:?}"),
                ))
            }
        },
    })
}

/// The master's address and epoch out of `SENTINEL MASTER`'s fields.
fn named(fields: &HashMap<String, String>) -> Option<Named> {
    Some(Named {
        host: fields.get("ip")?.clone(),
        port: fields.get("port")?.parse().ok()?,
        epoch: fields.get("config-epoch")?.parse().ok()?,
        health: health(fields.get("flags").map_or("", String::as_str)),
    })
}

/// The master's health out of the `flags` field (`master,s_down,o_down,failover_in_progress`…).
fn health(flags: &str) -> Health {
    let has = |f: &str| flags.split(',').any(|x| x == f);
    if has("o_down") || has("failover_in_progress") {
        Health::FailingOver
    } else if has("s_down") {
        Health::SubjectivelyDown
    } else {
        Health::Up
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn named_reads_address_and_epoch() {
        let f = fields(&[
            ("name", "m"),
            ("ip", "10.0.0.7"),
            ("port", "6380"),
            ("config-epoch", "4"),
        ]);
        let n = named(&f).expect("complete");
        assert_eq!((n.host.as_str(), n.port, n.epoch), ("10.0.0.7", 6380, 4));
        assert_eq!(n.health, Health::Up);
    }

    #[test]
    fn health_reads_the_flags() {
        assert_eq!(health("master"), Health::Up);
        assert_eq!(health("master,disconnected"), Health::Up);
        assert_eq!(
            health("s_down,master,disconnected"),
            Health::SubjectivelyDown
        );
        assert_eq!(health("s_down,o_down,master"), Health::FailingOver);
        assert_eq!(health("master,failover_in_progress"), Health::FailingOver);
        assert_eq!(health("master,s_down_x"), Health::Up);
    }

    fn answer(port: u16, epoch: u64, health: Health) -> Named {
        Named {
            host: "127.0.0.1".into(),
            port,
            epoch,
            health,
        }
    }

    #[test]
    fn the_latest_master_that_is_up_wins() {
        let answers = [
            answer(1, 3, Health::Up),
            answer(2, 4, Health::Up),
            answer(1, 3, Health::Up),
        ];
        assert_eq!(verdict(&answers), Some(Verdict::Master(&answers[1])));
        assert_eq!(verdict(&[]), None);
    }

    #[test]
    fn a_failover_at_the_latest_epoch_means_wait() {
        // The old master is back (empty) and one sentinel sees it up again, while the leader is
        // still promoting the replica: both name the old address at the old epoch.
        let racing = [answer(1, 3, Health::Up), answer(1, 3, Health::FailingOver)];
        assert_eq!(verdict(&racing), Some(Verdict::Wait));
        // Every sentinel sees the master down: nothing to write to yet.
        let down = [
            answer(1, 3, Health::SubjectivelyDown),
            answer(1, 3, Health::FailingOver),
        ];
        assert_eq!(verdict(&down), Some(Verdict::Wait));
        let alone = [answer(1, 3, Health::SubjectivelyDown)];
        assert_eq!(verdict(&alone), Some(Verdict::Wait));
    }

    #[test]
    fn a_finished_failover_outvotes_sentinels_still_in_the_old_one() {
        let answers = [answer(1, 3, Health::FailingOver), answer(2, 4, Health::Up)];
        assert_eq!(verdict(&answers), Some(Verdict::Master(&answers[1])));
    }

    #[test]
    fn one_sentinel_that_cannot_see_the_master_is_outvoted() {
        let answers = [
            answer(1, 3, Health::SubjectivelyDown),
            answer(1, 3, Health::Up),
        ];
        assert_eq!(verdict(&answers), Some(Verdict::Master(&answers[1])));
    }

    #[test]
    fn named_refuses_what_it_cannot_use() {
        assert_eq!(named(&fields(&[("ip", "h"), ("port", "1")])), None);
        let bad_port = fields(&[("ip", "h"), ("port", "x"), ("config-epoch", "1")]);
        assert_eq!(named(&bad_port), None);
    }
}
