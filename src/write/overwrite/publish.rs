//! Publish: the read-only check of the range, then the roll-forward of staged records into place
//! (marker, moves, tail delete, sweep, finish). See the module above for the protocol.

use std::time::Instant;

use super::{
    calls, delete_range, OverwriteStream, RecordRule, Removed, CHUNK, MAX_SCAN_STEPS, MOVE_CHUNK,
    SCAN_COUNT,
};
use crate::connect::nodes::Nodes;
use crate::connect::{classify, Context};
use crate::error::Failure;
use crate::keys::{self, StagingKeys, StreamKeys};

/// What a publish did.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    /// Records the stream holds now.
    pub published: u64,
    /// What its counter said before (the Java connector's counter may be far above its records).
    pub old: u64,
    /// Records it held before that are gone now (replaced in place, or deleted above the new count).
    pub replaced: u64,
    /// Keys under the stream's prefix that were not records and were left alone.
    pub skipped: u64,
    /// Script calls the publish made.
    pub calls: u64,
    /// How long it took, in milliseconds.
    pub millis: u128,
    /// An earlier attempt of this generation had published it whole; nothing was left to do.
    pub earlier: bool,
    /// With `earlier`: this attempt's records of a deduplicated stream went into it directly.
    pub into_live: bool,
}

impl PublishReport {
    /// The log line of a publish of `stream`.
    pub fn summary(&self, stream: &impl std::fmt::Display) -> String {
        if self.earlier && self.into_live {
            return format!("Stream {stream} was published by an earlier attempt of this generation; this attempt's records were upserted into it directly: nothing to replace.");
        }
        if self.earlier {
            return format!("Stream {stream} was published by an earlier attempt of this generation, and this attempt brought no records after it: nothing to replace.");
        }
        let counter = if self.old == self.replaced {
            String::new()
        } else {
            format!(" (its counter said {})", self.old)
        };
        format!(
            "Published stream {stream}: {} records replaced {}{counter} in {} ms ({} script calls).",
            self.published, self.replaced, self.millis, self.calls
        )
    }

    /// The warning about keys under the stream's prefix that were left alone, if there were any.
    pub fn warning(&self, stream: &impl std::fmt::Display) -> Option<String> {
        (self.skipped > 0).then(|| format!(
            "Stream {stream}: {} keys under its record prefix are not records of this destination and were left alone.",
            self.skipped
        ))
    }
}

/// Fails with a `config_error` naming the first key in records 1..=`n` of the stream that is not
/// one of the destination's records: found before the publish writes anything.
fn check_publish_range(
    con: &mut redis::Connection,
    live: &StreamKeys,
    n: u64,
    rule: RecordRule,
    ctx: &Context,
    calls: &mut u64,
) -> Result<(), Failure> {
    let mut start = 1;
    while start <= n {
        let end = (start + CHUNK - 1).min(n);
        let found = calls::publish_check(con, live, start, end, rule, ctx)?;
        *calls += 1;
        if let Some(key) = found {
            return Err(in_the_way(&key, live));
        }
        start = end + 1;
    }
    Ok(())
}

/// The failure of a publish that found `key` in the way of the new records of the stream.
fn in_the_way(key: &str, live: &StreamKeys) -> Failure {
    Failure::config(
        format!(
            "Key {key:?} is in the way of the new records of stream key {:?}: it is not a record of this destination (another tool's key, or another stream's in the Java layout). Nothing was published and the old records are unchanged: rename or delete that key, then sync again (the staged records are kept for a week and the next attempt resumes them).",
            live.counter
        ),
        format!("publish check found {key}"),
    )
}

/// The type of the key `counter` and the count it holds (0 for anything but a counter, such as a
/// Redis stream, whose entries are not numbered records).
fn counter_value(
    con: &mut redis::Connection,
    counter: &str,
    ctx: &Context,
) -> Result<(String, u64), Failure> {
    let kind: String = redis::cmd("TYPE")
        .arg(counter)
        .query(con)
        .map_err(|e| classify(&e, ctx))?;
    if kind != "string" {
        return Ok((kind, 0));
    }
    let value: Option<u64> = redis::cmd("GET")
        .arg(counter)
        .query(con)
        .map_err(|e| classify(&e, ctx))?;
    Ok((kind, value.unwrap_or(0)))
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
        let con = &mut link.con;
        let (marker, format): (bool, Option<String>) = redis::pipe()
            .cmd("EXISTS")
            .arg(&s.staging.marker)
            .cmd("GET")
            .arg(s.live.format_marker())
            .query(con)
            .map_err(|e| classify(&e, &ctx))?;
        if !marker && s.is_keyed() {
            super::keyed::check(con, s, &ctx, &mut checks)?;
        } else if !marker {
            let (kind, old) = counter_value(con, &s.live.counter, &ctx)?;
            let staged = counter_value(con, &s.staging.counter, &ctx)?.1;
            // The stream's key itself is replaced (the `stream` format renames the staged Redis
            // stream over it; otherwise it becomes the counter): it must be a counter, a Redis
            // stream, or missing.
            if !matches!(kind.as_str(), "none" | "string" | "stream") {
                return Err(in_the_way(&s.live.counter, &s.live));
            }
            let rule = RecordRule::new(format.as_deref(), old);
            check_publish_range(con, &s.live, staged, rule, &ctx, &mut checks)?;
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
    let (n, was) = calls::publish_begin(con, s, ctx)?;
    let mut report = if s.is_keyed() {
        super::keyed::finish(con, s, ctx)?
    } else {
        finish_publish(con, &s.live, &s.staging, n, was, sweep, ctx)?
    };
    unregister(nodes, &s.live.counter, ctx)?;
    report.calls += 1 + checks;
    report.millis = started.elapsed().as_millis();
    Ok(report)
}

/// Removes a stream whose publish is finished (or never began) from the registry.
pub(super) fn unregister(nodes: &mut Nodes, counter: &str, ctx: &Context) -> Result<(), Failure> {
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

/// Steps 2 to 4 of a publish whose marker says n records, replacing those `was` tells (their
/// format, and the old counter); idempotent.
pub(super) fn finish_publish(
    con: &mut redis::Connection,
    live: &StreamKeys,
    staging: &StagingKeys,
    n: u64,
    was: RecordRule,
    sweep: bool,
    ctx: &Context,
) -> Result<PublishReport, Failure> {
    let old = was.limit;
    let mut report = PublishReport {
        published: n,
        old,
        ..PublishReport::default()
    };
    let mut start = 1;
    while start <= n {
        let end = (start + MOVE_CHUNK - 1).min(n);
        let (_moved, replaced) = calls::publish_step(con, live, staging, start, end, ctx)?;
        report.replaced += replaced;
        report.calls += 1;
        start = end + 1;
    }
    let mut swept = false;
    if old > n {
        // The ids above the new count, one range call per CHUNK ids; or, when the counter is far
        // above what the node holds (a Java counter of 10,000,000 over 1,000 records), one SCAN
        // step per SCAN_COUNT keys of the node, whichever takes fewer calls.
        let keys_on_node: u64 = redis::cmd("DBSIZE")
            .query(con)
            .map_err(|e| classify(&e, ctx))?;
        report.calls += 1;
        let removed = if (old - n) / CHUNK > keys_on_node / SCAN_COUNT + 1 {
            swept = true;
            sweep_leftovers(con, live, n, was, ctx, &mut report.calls)?
        } else {
            let prefix = &live.record_prefix;
            delete_range(con, prefix, n + 1, old, was, ctx, &mut report.calls)?
        };
        report.replaced += removed.deleted;
        report.skipped += removed.skipped;
    }
    if !swept {
        let probe = live.record(n.max(old) + 1);
        let stray: bool = redis::cmd("EXISTS")
            .arg(&probe)
            .query(con)
            .map_err(|e| classify(&e, ctx))?;
        if sweep || stray {
            let removed = sweep_leftovers(con, live, n, was, ctx, &mut report.calls)?;
            report.replaced += removed.deleted;
            report.skipped += removed.skipped;
        }
    }
    calls::publish_finish(con, live, staging, ctx)?;
    report.calls += 1;
    Ok(report)
}

/// SCANs the stream's record keys and deletes the records (by `rule`) with ids above `keep`.
pub fn sweep_leftovers(
    con: &mut redis::Connection,
    live: &StreamKeys,
    keep: u64,
    rule: RecordRule,
    ctx: &Context,
    calls: &mut u64,
) -> Result<Removed, Failure> {
    let mut cursor = "0".to_string();
    let mut removed = Removed::default();
    for _ in 0..MAX_SCAN_STEPS {
        let (next, step) = calls::scan_delete(
            con,
            &cursor,
            &live.record_prefix,
            keep,
            SCAN_COUNT,
            rule,
            ctx,
        )?;
        *calls += 1;
        removed.deleted += step.deleted;
        removed.skipped += step.skipped;
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    Ok(removed)
}
