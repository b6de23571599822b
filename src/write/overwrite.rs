//! Overwrite and truncate refreshes: a stream's new generation is staged, then published.
//!
//! Every step below is safe to stop at any Redis command and to repeat (proved by
//! `tests/it/overwrite_stops.rs`, which cuts an overwrite at each of its commands in turn):
//!
//! * **Prepare** (before a stream's first staged batch): staging of another generation, or of a
//!   stream whose source cannot resume (`is_resumable: false`), is discarded; staging of the same
//!   generation (a failed attempt being retried) is kept up to where the source restarted: the new
//!   attempt's first record is compared with the record at position 1 and after each mark (a mark is
//!   the position of an echoed state); the latest equal one is the restart point, and without one
//!   everything up to the last mark is kept. The logical view (staging counter, marks) shrinks first
//!   in one script call (`staging_trim.lua`, which remembers the highest staged id), and the staged
//!   records above it are deleted afterwards.
//! * **Publish** (the stream completed): first a read-only pass finds any key in the way of records
//!   1..n that is not a record (`publish_check.lua`: a `config_error`, nothing published). Then a
//!   roll-forward series of short calls: a marker records (n, old counter, moved); staged records are
//!   RENAMEd over records 1..n, each step advancing the marker's `moved` in the same call (so a
//!   missing staged record is an error unless the marker says it moved); records n+1..old are
//!   deleted by range; leftovers above that are swept with SCAN only when a probe finds one; the
//!   counter becomes n. Any run that finds a marker finishes the publish first, so after any failure
//!   plus recovery a stream holds exactly its old or exactly its new records; one that cannot finish
//!   (a key in the way) blocks only its own stream.
//! * **After a publish** the generation's metadata and marks stay for a week: the platform retries a
//!   failed sync from its last echoed state, which may come before the publish, and that attempt
//!   resumes the published records (live records 1..restart point count as staged) instead of
//!   publishing only what it resends.
//! * Staged records and the staging bookkeeping expire a week after their last use (a generation
//!   never resumed does not stay forever); the publish removes the expiry from the records it moves.

use std::time::Instant;

use redis::Value;

use crate::connect::nodes::Nodes;
use crate::connect::{classify, Context};
use crate::error::{Failure, FailureType};
use crate::keys::{self, StagingKeys, StreamKeys, STAGING_TTL_SECONDS};
use crate::scripts::{
    LuaScript, DELETE_RANGE, EXPIRE_RANGE, PUBLISH_BEGIN, PUBLISH_CHECK, PUBLISH_FINISH,
    PUBLISH_STEP, SCAN_DELETE, STAGING_TRIM,
};

/// Keys per publish or delete call: each call stays in the low milliseconds.
pub const CHUNK: u64 = 500;
/// Records per publish step: each one may free an old record (RENAME over it) and moves an expiry,
/// so a step of 250 takes about as long as a check or delete call of 500.
pub const MOVE_CHUNK: u64 = 250;
/// SCAN COUNT hint of one sweep step.
const SCAN_COUNT: u64 = 1000;
/// Sweep steps at most: a bound on the loop (ten billion keys scanned, beyond any real keyspace).
const MAX_SCAN_STEPS: u64 = 10_000_000;

/// A stream written by overwrite: its live keys, its staging keys, its generation.
#[derive(Debug, Clone)]
pub struct OverwriteStream {
    /// The stream's own keys.
    pub live: StreamKeys,
    /// Its staging keys.
    pub staging: StagingKeys,
    /// The generation being written.
    pub generation: i64,
    /// Whether the source can resume the stream from a state (the catalog's `is_resumable`; true
    /// when it does not say). Staging of an earlier attempt of a stream that cannot resume is
    /// discarded: its source starts over, and a content match could not tell.
    pub resumable: bool,
}

impl OverwriteStream {
    /// The overwrite keys of a stream with these live keys.
    pub fn new(live: StreamKeys, generation: i64, resumable: bool) -> Self {
        let staging = StagingKeys::for_counter(&live.counter);
        OverwriteStream {
            live,
            staging,
            generation,
            resumable,
        }
    }

    /// The keys the append script writes for this stream: the staging counter and records.
    pub fn staging_as_stream(&self) -> StreamKeys {
        StreamKeys {
            counter: self.staging.counter.clone(),
            record_prefix: self.staging.record_prefix.clone(),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    /// Records the stream holds now.
    pub published: u64,
    /// Records it held before.
    pub old: u64,
    /// Keys under the stream's prefix that were not records and were left alone.
    pub skipped: u64,
    /// Script calls the publish made.
    pub calls: u64,
    /// How long it took, in milliseconds.
    pub millis: u128,
    /// An earlier attempt of this generation had published it whole; nothing was left to do.
    pub earlier: bool,
}

fn eval(
    con: &mut redis::Connection,
    script: &LuaScript,
    keys: &[&str],
    args: &[&str],
    ctx: &Context,
) -> Result<Value, Failure> {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(&script.sha).arg(keys.len());
    for k in keys {
        cmd.arg(*k);
    }
    for a in args {
        cmd.arg(*a);
    }
    match cmd.query::<Value>(con) {
        Err(e) if e.code() == Some("NOSCRIPT") => {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script.body)
                .query::<String>(con)
                .map_err(|e| classify(&e, ctx))?;
            cmd.query(con).map_err(|e| classify(&e, ctx))
        }
        other => other.map_err(|e| classify(&e, ctx)),
    }
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) => *n,
                Value::BulkString(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                _ => 0,
            })
            .collect(),
        Value::Int(n) => vec![*n],
        _ => Vec::new(),
    }
}

/// Deletes records `from..=to` under `prefix` in chunks; returns the keys left alone (not records).
fn delete_range(
    con: &mut redis::Connection,
    prefix: &str,
    from: u64,
    to: u64,
    ctx: &Context,
    calls: &mut u64,
) -> Result<u64, Failure> {
    let mut skipped = 0;
    let mut start = from;
    while start <= to {
        let end = (start + CHUNK - 1).min(to);
        let r = eval(
            con,
            &DELETE_RANGE,
            &[],
            &[prefix, &start.to_string(), &end.to_string()],
            ctx,
        )?;
        *calls += 1;
        skipped += ints(&r).get(1).copied().unwrap_or(0) as u64;
        start = end + 1;
    }
    Ok(skipped)
}

/// The staging metadata's `generation`, `published` and `live`.
type StagingMeta = (Option<i64>, Option<u64>, Option<u64>);

/// What [`prepare`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Records of the generation kept from earlier attempts: this run's records follow them.
    pub kept: u64,
    /// The generation was published whole by an earlier attempt and this attempt brings no records
    /// (it resumed after the last state): there is nothing to publish.
    pub already_published: bool,
}

/// Readies a stream's staging for this run.
///
/// Staging of another generation, or of a stream whose source cannot resume (`is_resumable:
/// false`), is discarded. Staging of the same generation is kept up to where the source restarted
/// (see `restart_point`); when an earlier attempt already published the generation, its live
/// records count as staged up to that point, and the publish later moves only what follows. Safe
/// to stop at any command and repeat: the logical view (counter, marks) shrinks first, in one
/// script call, and the records above it are deleted afterwards.
pub fn prepare(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    first_data: Option<&[u8]>,
    ctx: &Context,
) -> Result<Prepared, Failure> {
    let ctx = &Context {
        during: format!("preparing the staging of stream key {:?}", s.live.counter),
        ..ctx.clone()
    };
    let q = |e: redis::RedisError| classify(&e, ctx);
    let (meta, count): (StagingMeta, Option<u64>) = redis::pipe()
        .cmd("HMGET")
        .arg(&s.staging.meta)
        .arg("generation")
        .arg("published")
        .arg("live")
        .cmd("GET")
        .arg(&s.staging.counter)
        .query(con)
        .map_err(q)?;
    let (generation, published, live) = meta;
    let same = generation == Some(s.generation) && s.resumable;
    let (keep, live) = match (same, published) {
        (false, _) => (0, 0),
        // Generation 0 carries no identity (the platform sends it to connectors without refresh
        // support, for every sync): a published generation 0 is never resumed.
        (true, Some(_)) if s.generation == 0 => (0, 0),
        (true, Some(n)) => match first_data {
            None => {
                return Ok(Prepared {
                    kept: n,
                    already_published: true,
                })
            }
            Some(_) => {
                // Only a positive match after an echoed state resumes: PyAirbyte stamps every sync
                // with the same generation, and a new sync must replace, not extend, the old one.
                let keep = restart_point(con, s, n, n, first_data, Unmatched::StartOver, ctx)?;
                (keep, keep)
            }
        },
        (true, None) => {
            let count = count.unwrap_or(0);
            let live = live.unwrap_or(0).min(count);
            let keep = restart_point(con, s, count, live, first_data, Unmatched::LastMark, ctx)?;
            (keep, live.min(keep))
        }
    };
    let mut calls = 0;
    let reply = eval(
        con,
        &STAGING_TRIM,
        &[&s.staging.counter, &s.staging.marks, &s.staging.meta],
        &[
            &s.generation.to_string(),
            &keep.to_string(),
            &STAGING_TTL_SECONDS.to_string(),
            &live.to_string(),
        ],
        ctx,
    )?;
    let high = whole_number(&reply, "staging_trim.lua")?;
    if high > keep {
        delete_range(
            con,
            &s.staging.record_prefix,
            keep + 1,
            high,
            ctx,
            &mut calls,
        )?;
        redis::cmd("HSET")
            .arg(&s.staging.meta)
            .arg("high")
            .arg(keep)
            .query::<()>(con)
            .map_err(q)?;
    }
    refresh_expiry(con, &s.staging.record_prefix, live + 1, keep, ctx)?;
    Ok(Prepared {
        kept: keep,
        already_published: false,
    })
}

/// What [`restart_point`] keeps when the first record matches no candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unmatched {
    /// Everything up to the last mark (staging of a failed attempt: never lose a record).
    LastMark,
    /// Nothing (a published generation: a source that matches no state is a new sync).
    StartOver,
}

/// Where a resumed source restarted: the number of the generation's records to keep (of `count`;
/// records 1..=`live` are live records, the rest staged). The new attempt's first record is
/// compared with the record at position 1 and after each mark; the latest equal one tells the
/// restart point, and without one `unmatched` decides.
fn restart_point(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    count: u64,
    live: u64,
    first_data: Option<&[u8]>,
    unmatched: Unmatched,
    ctx: &Context,
) -> Result<u64, Failure> {
    let q = |e: redis::RedisError| classify(&e, ctx);
    let mut marks: Vec<u64> = redis::cmd("LRANGE")
        .arg(&s.staging.marks)
        .arg(0)
        .arg(-1)
        .query(con)
        .map_err(q)?;
    marks.retain(|m| *m <= count);
    marks.sort_unstable();
    marks.dedup();
    let last_mark = match unmatched {
        Unmatched::LastMark => marks.last().copied().unwrap_or(0),
        Unmatched::StartOver => 0,
    };
    let Some(first) = first_data else {
        return Ok(last_mark);
    };
    let mut candidates = vec![0];
    candidates.extend(marks.iter().copied().filter(|m| *m > 0));
    candidates.retain(|c| *c < count);
    if candidates.is_empty() {
        return Ok(last_mark);
    }
    let mut pipe = redis::pipe();
    for c in &candidates {
        let id = c + 1;
        let key = if id <= live {
            s.live.record(id)
        } else {
            format!("{}{id}", s.staging.record_prefix)
        };
        pipe.cmd("HGET").arg(key).arg("_airbyte_data");
    }
    let stored: Vec<Option<Vec<u8>>> = pipe.query(con).map_err(q)?;
    // The latest match: a source restarting from its last state is the common case, and taking an
    // earlier match on duplicate data would drop records the source will not resend.
    Ok(candidates
        .iter()
        .zip(stored)
        .filter(|(_, d)| d.as_deref() == Some(first))
        .map(|(c, _)| *c)
        .max()
        .unwrap_or(last_mark))
}

/// Gives staged records `first..=last` a fresh expiry (a resumed generation is in use again).
fn refresh_expiry(
    con: &mut redis::Connection,
    prefix: &str,
    first: u64,
    last: u64,
    ctx: &Context,
) -> Result<(), Failure> {
    let mut start = first;
    while start <= last {
        let end = (start + CHUNK - 1).min(last);
        eval(
            con,
            &EXPIRE_RANGE,
            &[],
            &[
                prefix,
                &start.to_string(),
                &end.to_string(),
                &STAGING_TTL_SECONDS.to_string(),
            ],
            ctx,
        )?;
        start = end + 1;
    }
    Ok(())
}

/// A script's integer reply, or a `system_error` naming the script.
fn whole_number(reply: &Value, script: &str) -> Result<u64, Failure> {
    match reply {
        Value::Int(n) if *n >= 0 => Ok(*n as u64),
        other => Err(Failure::system(
            format!("{script} answered unexpectedly."),
            format!("{other:?}"),
        )),
    }
}

/// Records that a state was echoed when `position` records of the stream were staged, and keeps
/// the staging bookkeeping of a generation in use from expiring.
pub fn mark(pipe: &mut redis::Pipeline, s: &OverwriteStream, position: u64) {
    pipe.cmd("RPUSH")
        .arg(&s.staging.marks)
        .arg(position)
        .ignore()
        .cmd("EXPIRE")
        .arg(&s.staging.marks)
        .arg(STAGING_TTL_SECONDS)
        .ignore()
        .cmd("EXPIRE")
        .arg(&s.staging.meta)
        .arg(STAGING_TTL_SECONDS)
        .ignore();
}

/// Fails with a `config_error` naming the first key in records 1..=`n` of the stream that is not
/// one of the destination's records: found before the publish writes anything.
fn check_publish_range(
    con: &mut redis::Connection,
    live: &StreamKeys,
    n: u64,
    ctx: &Context,
    calls: &mut u64,
) -> Result<(), Failure> {
    let mut start = 1;
    while start <= n {
        let end = (start + CHUNK - 1).min(n);
        let reply = eval(
            con,
            &PUBLISH_CHECK,
            &[],
            &[&live.record_prefix, &start.to_string(), &end.to_string()],
            ctx,
        )?;
        *calls += 1;
        match reply {
            Value::BulkString(key) if key.is_empty() => {}
            Value::BulkString(key) => {
                let key = String::from_utf8_lossy(&key);
                return Err(Failure::config(
                    format!(
                        "Key {key:?} is in the way of the new records of stream key {:?}: it is not a record of this destination (another tool's key, or another stream's in the Java layout). Nothing was published and the old records are unchanged: rename or delete that key, then sync again (the staged records are kept for a week and the next attempt resumes them).",
                        live.counter
                    ),
                    format!("publish_check.lua found {key}"),
                ));
            }
            other => {
                return Err(Failure::system(
                    "publish_check.lua answered unexpectedly.",
                    format!("{other:?}"),
                ))
            }
        }
        start = end + 1;
    }
    Ok(())
}

/// Publishes a stream's staged generation (see the module documentation).
///
/// The stream joins the registry of publishes under way before its marker is written and leaves
/// it after its marker is gone; the registry is one key (its own cluster slot), the rest of the
/// publish runs on the node that holds the stream.
pub fn publish(
    nodes: &mut Nodes,
    s: &OverwriteStream,
    sweep: bool,
) -> Result<PublishReport, Failure> {
    let started = Instant::now();
    let registry = keys::publish_registry();
    let during = format!("publishing stream key {:?}", s.live.counter);
    let mut checks = 0;
    {
        let link = nodes.link_for(&s.live.counter)?;
        let ctx = Context {
            during: during.clone(),
            ..link.ctx.clone()
        };
        let (marker, staged): (bool, Option<u64>) = redis::pipe()
            .cmd("EXISTS")
            .arg(&s.staging.marker)
            .cmd("GET")
            .arg(&s.staging.counter)
            .query(&mut link.con)
            .map_err(|e| classify(&e, &ctx))?;
        if !marker {
            check_publish_range(
                &mut link.con,
                &s.live,
                staged.unwrap_or(0),
                &ctx,
                &mut checks,
            )?;
        }
    }
    let link = nodes.link_for(&registry)?;
    let ctx = Context {
        during: during.clone(),
        ..link.ctx.clone()
    };
    redis::cmd("SADD")
        .arg(&registry)
        .arg(&s.live.counter)
        .query::<()>(&mut link.con)
        .map_err(|e| classify(&e, &ctx))?;
    let link = nodes.link_for(&s.live.counter)?;
    let ctx = &Context {
        during,
        ..link.ctx.clone()
    };
    let con = &mut link.con;
    let r = eval(
        con,
        &PUBLISH_BEGIN,
        &[
            &s.live.counter,
            &s.staging.counter,
            &s.staging.marker,
            &s.staging.meta,
        ],
        &[&s.generation.to_string()],
        ctx,
    )?;
    let v = ints(&r);
    let (n, old) = (
        v.first().copied().unwrap_or(0) as u64,
        v.get(1).copied().unwrap_or(0) as u64,
    );
    let mut report = finish_publish(con, &s.live, &s.staging, n, old, sweep, ctx)?;
    unregister(nodes, &s.live.counter, ctx)?;
    report.calls += 1 + checks;
    report.millis = started.elapsed().as_millis();
    Ok(report)
}

/// Removes a stream whose publish is finished (or never began) from the registry.
fn unregister(nodes: &mut Nodes, counter: &str, ctx: &Context) -> Result<(), Failure> {
    let registry = keys::publish_registry();
    let link = nodes.link_for(&registry)?;
    let ctx = Context {
        address: link.ctx.address.clone(),
        ..ctx.clone()
    };
    redis::cmd("SREM")
        .arg(&registry)
        .arg(counter)
        .query::<()>(&mut link.con)
        .map_err(|e| classify(&e, &ctx))
}

/// Steps 2 to 4 of a publish whose marker says (n, old); idempotent.
fn finish_publish(
    con: &mut redis::Connection,
    live: &StreamKeys,
    staging: &StagingKeys,
    n: u64,
    old: u64,
    sweep: bool,
    ctx: &Context,
) -> Result<PublishReport, Failure> {
    let mut report = PublishReport {
        published: n,
        old,
        ..PublishReport::default()
    };
    let mut start = 1;
    while start <= n {
        let end = (start + MOVE_CHUNK - 1).min(n);
        eval(
            con,
            &PUBLISH_STEP,
            &[&staging.marker],
            &[
                &staging.record_prefix,
                &live.record_prefix,
                &start.to_string(),
                &end.to_string(),
            ],
            ctx,
        )?;
        report.calls += 1;
        start = end + 1;
    }
    if old > n {
        report.skipped +=
            delete_range(con, &live.record_prefix, n + 1, old, ctx, &mut report.calls)?;
    }
    let probe = live.record(n.max(old) + 1);
    let stray: bool = redis::cmd("EXISTS")
        .arg(&probe)
        .query(con)
        .map_err(|e| classify(&e, ctx))?;
    if sweep || stray {
        report.skipped += sweep_leftovers(con, live, n, ctx, &mut report.calls)?;
    }
    eval(
        con,
        &PUBLISH_FINISH,
        &[
            &live.counter,
            &staging.counter,
            &staging.marker,
            &staging.meta,
            &staging.marks,
        ],
        &[&STAGING_TTL_SECONDS.to_string()],
        ctx,
    )?;
    report.calls += 1;
    Ok(report)
}

/// SCANs the stream's record keys and deletes the records with ids above `keep`.
pub fn sweep_leftovers(
    con: &mut redis::Connection,
    live: &StreamKeys,
    keep: u64,
    ctx: &Context,
    calls: &mut u64,
) -> Result<u64, Failure> {
    let pattern = format!("{}*", keys::escape_glob(&live.record_prefix));
    let mut cursor = "0".to_string();
    let mut skipped = 0;
    for _ in 0..MAX_SCAN_STEPS {
        let r = eval(
            con,
            &SCAN_DELETE,
            &[],
            &[
                &cursor,
                &pattern,
                &live.record_prefix,
                &keep.to_string(),
                &SCAN_COUNT.to_string(),
            ],
            ctx,
        )?;
        *calls += 1;
        let Value::Array(items) = r else {
            return Err(Failure::system(
                "The leftover sweep answered unexpectedly.",
                format!("{r:?}"),
            ));
        };
        cursor = match items.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => {
                return Err(Failure::system(
                    "The leftover sweep answered unexpectedly.",
                    format!("{other:?}"),
                ))
            }
        };
        skipped += ints(&Value::Array(items)).get(2).copied().unwrap_or(0) as u64;
        if cursor == "0" {
            break;
        }
    }
    Ok(skipped)
}

/// What [`recover`] found: publishes it finished, and publishes that cannot finish.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Counter keys of the streams whose interrupted publish is now finished.
    pub finished: Vec<String>,
    /// Counter keys of the streams whose publish cannot finish, with why (a key in the way, a
    /// staged record gone): each blocks only its own stream.
    pub stuck: Vec<(String, Failure)>,
}

impl Recovery {
    /// One line per publish it finished.
    pub fn finished_messages(&self) -> Vec<String> {
        self.finished
            .iter()
            .map(|counter| {
                format!("Finished the publish of stream key {counter:?} that an earlier sync left under way.")
            })
            .collect()
    }

    /// One warning per publish that cannot finish (each blocks only its own stream).
    pub fn stuck_messages(&self) -> Vec<String> {
        self.stuck
            .iter()
            .map(|(counter, f)| {
                format!("The publish of stream key {counter:?} that an earlier sync left under way cannot finish: {} Other streams are not affected; the next sync of that stream fails until it is fixed.", f.message)
            })
            .collect()
    }

    /// The failure of a stuck publish of one of `counters` (a stream this sync writes), if any.
    pub fn blocking(&self, counters: &[&str]) -> Option<Failure> {
        self.stuck
            .iter()
            .find(|(c, _)| counters.contains(&c.as_str()))
            .map(|(counter, f)| Failure {
                message: format!(
                    "Stream key {counter:?} cannot be written: the publish an earlier sync left under way cannot finish. {}",
                    f.message
                ),
                ..f.clone()
            })
    }
}

/// Finishes every publish a failed or killed run left under way. A publish that cannot finish (not
/// a transient failure) is reported in [`Recovery::stuck`] and stays registered: it must not block
/// the syncs of other streams, and its own stream's next sync reports it.
pub fn recover(nodes: &mut Nodes) -> Result<Recovery, Failure> {
    let during = "finishing a publish that an earlier run left under way";
    let registry = keys::publish_registry();
    let link = nodes.link_for(&registry)?;
    // Named for what it does: most runs find no publish under way at all.
    let ctx = Context {
        during: format!(
            "while reading {registry} (the publishes an earlier run may have left under way)"
        ),
        ..link.ctx.clone()
    };
    let counters: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&registry)
        .query(&mut link.con)
        .map_err(|e| classify(&e, &ctx))?;
    let mut recovery = Recovery::default();
    for counter in &counters {
        let staging = StagingKeys::for_counter(counter);
        let link = nodes.link_for(counter)?;
        let ctx = Context {
            during: format!("{during} (stream key {counter:?})"),
            ..link.ctx.clone()
        };
        let (n, old): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&staging.marker)
            .arg("n")
            .arg("old")
            .query(&mut link.con)
            .map_err(|e| classify(&e, &ctx))?;
        let live = StreamKeys {
            counter: counter.clone(),
            record_prefix: format!("{counter}:"),
        };
        if let (Some(n), Some(old)) = (n, old) {
            match finish_publish(&mut link.con, &live, &staging, n, old, false, &ctx) {
                Ok(_) => recovery.finished.push(counter.clone()),
                Err(f) if f.failure_type == FailureType::Transient => return Err(f),
                Err(f) => {
                    recovery.stuck.push((counter.clone(), f));
                    continue;
                }
            }
        }
        unregister(nodes, counter, &ctx)?;
    }
    Ok(recovery)
}
