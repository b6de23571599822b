//! The overwrite protocol's script calls, typed: one function per script of `lua/`, which puts
//! its KEYS and ARGV in the order the script's header documents and reads its reply strictly (an
//! unexpected reply is a `system_error` naming the script). Errors the scripts raise are
//! [`crate::classify::ScriptCode`]s.

use redis::Value;

use super::{OverwriteStream, RecordRule, Removed};
use crate::classify::Context;
use crate::error::Failure;
use crate::keys;
use crate::keys::{StagingKeys, StreamKeys, STAGING_TTL_SECONDS};
use crate::scripts::{
    DELETE_RANGE, EXPIRE_RANGE, KEYED_SCAN, PUBLISH_BEGIN, PUBLISH_CHECK, PUBLISH_FINISH,
    PUBLISH_STEP, SCAN_DELETE, STAGING_TRIM, STREAM_COPY, STREAM_REBUILD, STREAM_TRIM,
};

/// What one call of `stream_trim.lua` left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTrim {
    /// It deleted entries; more may be left.
    Deleted,
    /// None is left above `keep`, and the stream's last id is `0-<keep>`.
    Done,
    /// None is left, but the server will not move the last id back: the stream must be rebuilt
    /// from its kept entries (`stream_rebuild`).
    Rebuild,
}

/// `stream_trim.lua`: deletes up to `count` entries above position `keep` of the staged Redis
/// stream `key`.
pub fn stream_trim(
    con: &mut redis::Connection,
    key: &str,
    keep: u64,
    count: u64,
    ctx: &Context,
) -> Result<StreamTrim, Failure> {
    let reply = STREAM_TRIM.eval(con, &[key], &[&keep.to_string(), &count.to_string()], ctx)?;
    match STREAM_TRIM.whole_numbers::<2>(&reply)? {
        [_, 0] => Ok(StreamTrim::Deleted),
        [_, 1] => Ok(StreamTrim::Done),
        [_, 2] => Ok(StreamTrim::Rebuild),
        _ => Err(STREAM_TRIM.unexpected(&reply)),
    }
}

/// `stream_rebuild.lua`: copies up to `count` of the first `keep` entries of the staged Redis
/// stream into its rebuild, or (when none is left) renames the rebuild over it; returns how many
/// it copied (0: the rebuild is in place).
pub fn stream_rebuild(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    keep: u64,
    count: u64,
    ctx: &Context,
) -> Result<u64, Failure> {
    let reply = STREAM_REBUILD.eval(
        con,
        &[&s.staging.counter, &s.staging.rebuild()],
        &[
            &keep.to_string(),
            &count.to_string(),
            &STAGING_TTL_SECONDS.to_string(),
        ],
        ctx,
    )?;
    let [copied] = STREAM_REBUILD.whole_numbers::<1>(&reply)?;
    Ok(copied)
}

/// `stream_copy.lua`: copies entries `first..=last` of the stream's Redis stream (a published
/// generation) into its staged one; returns how many it copied.
pub fn stream_copy(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    first: u64,
    last: u64,
    ctx: &Context,
) -> Result<u64, Failure> {
    let reply = STREAM_COPY.eval(
        con,
        &[
            &s.live.counter,
            &s.staging.counter,
            &s.staging.format_marker(),
        ],
        &[
            &first.to_string(),
            &last.to_string(),
            &STAGING_TTL_SECONDS.to_string(),
        ],
        ctx,
    )?;
    let [copied] = STREAM_COPY.whole_numbers::<1>(&reply)?;
    Ok(copied)
}

/// `staging_trim.lua`: keeps staged records 1..=`keep` (and marks up to it) of the stream's
/// generation, notes that 1..=`live` are live already; returns `high`, the highest staged id that
/// may still exist (the caller deletes `keep + 1..=high`).
pub fn staging_trim(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    keep: u64,
    live: u64,
    ctx: &Context,
) -> Result<u64, Failure> {
    let reply = STAGING_TRIM.eval(
        con,
        &[
            &s.staging.counter,
            &s.staging.marks,
            &s.staging.meta,
            &s.staging.index(),
            &s.staging.format_marker(),
            &s.staging.moments(),
        ],
        &[
            &s.generation.to_string(),
            &keep.to_string(),
            &STAGING_TTL_SECONDS.to_string(),
            &live.to_string(),
            s.format.name(),
        ],
        ctx,
    )?;
    let [high] = STAGING_TRIM.whole_numbers::<1>(&reply)?;
    Ok(high)
}

/// `expire_range.lua`: gives records `first..=last` under `prefix` the staging time to live.
pub fn expire_range(
    con: &mut redis::Connection,
    prefix: &str,
    first: u64,
    last: u64,
    ctx: &Context,
) -> Result<(), Failure> {
    let reply = EXPIRE_RANGE.eval(
        con,
        &[],
        &[
            prefix,
            &first.to_string(),
            &last.to_string(),
            &STAGING_TTL_SECONDS.to_string(),
        ],
        ctx,
    )?;
    EXPIRE_RANGE.whole_numbers::<1>(&reply)?;
    Ok(())
}

/// `publish_check.lua`: the first key of records `first..=last` of the stream that exists and is
/// not one of the destination's records (by `rule`), if any.
pub fn publish_check(
    con: &mut redis::Connection,
    live: &StreamKeys,
    first: u64,
    last: u64,
    rule: RecordRule,
    ctx: &Context,
) -> Result<Option<String>, Failure> {
    let [format, limit] = rule.args();
    let reply = PUBLISH_CHECK.eval(
        con,
        &[],
        &[
            &live.record_prefix,
            &first.to_string(),
            &last.to_string(),
            &format,
            &limit,
        ],
        ctx,
    )?;
    match reply {
        Value::BulkString(key) if key.is_empty() => Ok(None),
        Value::BulkString(key) => Ok(Some(String::from_utf8_lossy(&key).into_owned())),
        other => Err(Failure::system(
            "The script publish_check.lua answered unexpectedly.",
            format!("{other:?}"),
        )),
    }
}

/// `delete_range.lua`: unlinks the records (by `rule`) among keys `first..=last` under `prefix`.
pub fn delete_range(
    con: &mut redis::Connection,
    prefix: &str,
    first: u64,
    last: u64,
    rule: RecordRule,
    ctx: &Context,
) -> Result<Removed, Failure> {
    let [format, limit] = rule.args();
    let reply = DELETE_RANGE.eval(
        con,
        &[],
        &[
            prefix,
            &first.to_string(),
            &last.to_string(),
            &format,
            &limit,
        ],
        ctx,
    )?;
    let [deleted, skipped] = DELETE_RANGE.whole_numbers::<2>(&reply)?;
    Ok(Removed { deleted, skipped })
}

/// `publish_begin.lua`: writes (or finds) the stream's publish marker; returns `(n, rule)`, the
/// staged count to publish and what tells the records it replaces (their format, and the old
/// counter).
pub fn publish_begin(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    ctx: &Context,
) -> Result<(u64, RecordRule), Failure> {
    let reply = PUBLISH_BEGIN.eval(
        con,
        &[
            &s.live.counter,
            &s.staging.counter,
            &s.staging.marker,
            &s.staging.meta,
            &s.staging.index(),
            &s.live.format_marker(),
            &s.staging.format_marker(),
        ],
        &[
            &s.generation.to_string(),
            if s.is_dedup() { "1" } else { "0" },
            if s.is_keyed() { "1" } else { "0" },
            &s.ttl.to_string(),
        ],
        ctx,
    )?;
    match &reply {
        Value::Array(parts) => match parts.as_slice() {
            [Value::Int(n), Value::Int(old), Value::BulkString(was)] if *n >= 0 && *old >= 0 => {
                let was = String::from_utf8_lossy(was);
                Ok((*n as u64, RecordRule::new(Some(&was), *old as u64)))
            }
            _ => Err(PUBLISH_BEGIN.unexpected(&reply)),
        },
        _ => Err(PUBLISH_BEGIN.unexpected(&reply)),
    }
}

/// `publish_step.lua`: moves staged records `first..=last` into place; returns `(moved, replaced)`,
/// the records moved and the old records they replaced.
pub fn publish_step(
    con: &mut redis::Connection,
    live: &StreamKeys,
    staging: &StagingKeys,
    first: u64,
    last: u64,
    ctx: &Context,
) -> Result<(u64, u64), Failure> {
    let reply = PUBLISH_STEP.eval(
        con,
        &[&staging.marker],
        &[
            &staging.record_prefix,
            &live.record_prefix,
            &first.to_string(),
            &last.to_string(),
            &staging.moments(),
        ],
        ctx,
    )?;
    let [moved, replaced] = PUBLISH_STEP.whole_numbers::<2>(&reply)?;
    Ok((moved, replaced))
}

/// `publish_finish.lua`: sets the counter to the published count and ends the publish (a publish
/// that has no marker any more, finished already, is left alone: the script answers -1).
pub fn publish_finish(
    con: &mut redis::Connection,
    live: &StreamKeys,
    staging: &StagingKeys,
    ctx: &Context,
) -> Result<(), Failure> {
    let reply = PUBLISH_FINISH.eval(
        con,
        &[
            &live.counter,
            &staging.counter,
            &staging.marker,
            &staging.meta,
            &staging.marks,
            &live.index(),
            &staging.index(),
            &staging.tombstones(),
            &live.tombstones(),
            &live.format_marker(),
            &staging.format_marker(),
            &staging.moments(),
        ],
        &[&STAGING_TTL_SECONDS.to_string()],
        ctx,
    )?;
    match reply {
        Value::Int(_) => Ok(()),
        other => Err(Failure::system(
            "The script publish_finish.lua answered unexpectedly.",
            format!("{other:?}"),
        )),
    }
}

/// What one step of `keyed_scan.lua` does (see its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedScan {
    /// Find a live key in the way of a staged one (read only).
    Check,
    /// Unlink every staged key.
    Discard,
    /// Give every staged key a fresh expiry.
    Expire,
    /// Unlink the stream's live records without a staged counterpart.
    Sweep,
    /// Rename every staged key over its live key.
    Move,
}

impl KeyedScan {
    fn name(self) -> &'static str {
        match self {
            KeyedScan::Check => "check",
            KeyedScan::Discard => "discard",
            KeyedScan::Expire => "expire",
            KeyedScan::Sweep => "sweep",
            KeyedScan::Move => "move",
        }
    }
}

/// `keyed_scan.lua`: one SCAN step (from `cursor`, `count` keys) of `mode` over the keys of a
/// stream keyed by primary key: its staged keys, or for [`KeyedScan::Sweep`] its live ones;
/// `ttl` is what [`KeyedScan::Move`] gives the records it moves (0: no expiry). Returns the next
/// cursor, the keys acted on, and (for [`KeyedScan::Check`]) a key in the way.
pub fn keyed_scan(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    mode: KeyedScan,
    cursor: &str,
    count: u64,
    ttl: u64,
    ctx: &Context,
) -> Result<(String, u64, Option<String>), Failure> {
    let (scanned, other) = match mode {
        KeyedScan::Sweep => (&s.live.record_prefix, &s.staging.record_prefix),
        _ => (&s.staging.record_prefix, &s.live.record_prefix),
    };
    let pattern = format!("{}*", keys::escape_glob(scanned));
    let reply = KEYED_SCAN.eval(
        con,
        &[],
        &[
            cursor,
            mode.name(),
            &pattern,
            scanned,
            other,
            &count.to_string(),
            &match mode {
                KeyedScan::Expire => STAGING_TTL_SECONDS,
                _ => ttl,
            }
            .to_string(),
            &s.staging.moments(),
        ],
        ctx,
    )?;
    let bad = || KEYED_SCAN.unexpected(&reply);
    let Value::Array(parts) = &reply else {
        return Err(bad());
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(t) => Some(t.clone()),
        _ => None,
    };
    match parts.as_slice() {
        [next, Value::Int(done), found] => {
            let next = text(next).ok_or_else(bad)?;
            let found = text(found).ok_or_else(bad)?;
            Ok((next, *done as u64, (!found.is_empty()).then_some(found)))
        }
        _ => Err(bad()),
    }
}

/// `scan_delete.lua`: one SCAN step (from `cursor`, `count` keys) over the keys under `prefix`,
/// unlinking the records (by `rule`) with ids above `keep`; returns the next cursor.
pub fn scan_delete(
    con: &mut redis::Connection,
    cursor: &str,
    prefix: &str,
    keep: u64,
    count: u64,
    rule: RecordRule,
    ctx: &Context,
) -> Result<(String, Removed), Failure> {
    let [format, limit] = rule.args();
    let pattern = format!("{}*", keys::escape_glob(prefix));
    let reply = SCAN_DELETE.eval(
        con,
        &[],
        &[
            cursor,
            &pattern,
            prefix,
            &keep.to_string(),
            &count.to_string(),
            &format,
            &limit,
        ],
        ctx,
    )?;
    let (next, [deleted, skipped]) = SCAN_DELETE.cursor_and_numbers::<2>(&reply)?;
    Ok((next, Removed { deleted, skipped }))
}
