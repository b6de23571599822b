//! Prepare: a stream's staging made ready for this run, before its first staged batch, and the
//! marks that record where states were echoed. See the module above for the protocol.

use super::calls::StreamTrim;
use super::first::{FirstRecord, StoredRecord};
use super::{calls, delete_range, LoadStaging, OverwriteStream, RecordRule, CHUNK};
use crate::config::ValueFormat;
use crate::connect::{classify, Context};
use crate::error::Failure;
use crate::keys::STAGING_TTL_SECONDS;
use redis::Value;

/// The staging metadata's `generation`, `published` and `live`.
type StagingMeta = (Option<i64>, Option<u64>, Option<u64>);

/// What the staging holds: its metadata, its counter, and its value-format marker.
struct Staged {
    meta: StagingMeta,
    count: Option<u64>,
    format: Option<String>,
}

impl Staged {
    /// The rule of its records (ids up to `high`).
    fn rule(&self, high: u64) -> RecordRule {
        RecordRule::new(self.format.as_deref(), high)
    }

    /// Whether its records are in `format` (a staging without records is in any).
    fn is_in(&self, format: ValueFormat) -> bool {
        let staged = self.rule(0).format;
        staged == format || self.count.unwrap_or(0) == 0 && self.format.is_none()
    }
}

/// What [`prepare`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Records of the generation kept from earlier attempts: this run's records follow them.
    pub kept: u64,
    /// The generation was published whole by an earlier attempt and this attempt brings no records
    /// (it resumed after the last state): there is nothing to publish.
    pub already_published: bool,
    /// A deduplicated stream whose generation an earlier attempt published: this attempt's records
    /// are upserted into the live stream (the published generation plus whatever the source
    /// resends is the generation deduplicated), and there is nothing to publish.
    pub into_live: bool,
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
    first: Option<&FirstRecord>,
    ctx: &Context,
) -> Result<Prepared, Failure> {
    let first_data = first.map(|f| f.data.as_slice());
    let ctx = &Context {
        during: format!("preparing the staging of stream key {:?}", s.live.counter),
        ..ctx.clone()
    };
    if s.is_dedup() {
        return prepare_dedup(con, s, first_data, ctx);
    }
    if s.is_keyed() {
        let (generation, published, _) = read_meta(con, s, ctx)?.meta;
        return super::keyed::prepare(con, s, generation, published, first, ctx);
    }
    let staged = read_meta(con, s, ctx)?;
    let (generation, published, live) = staged.meta;
    let count = staged.count;
    // Staging in another value format (the stream's options changed between attempts) is
    // discarded: formats are never mixed in one stream.
    let same = generation == Some(s.generation) && s.resumable && staged.is_in(s.format);
    if s.load == Some(LoadStaging::KeepAll) && !same {
        // The position says records are staged; without them the load would publish only the
        // rest of its input.
        return Err(Failure::config(
            format!("The records that earlier runs of this load staged for stream key {:?} are gone (expired after a week, or staged in another value format): give --again to load every input anew.", s.live.counter),
            "load staging gone",
        ));
    }
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
                    into_live: false,
                })
            }
            Some(_) => {
                // Only a positive match after an echoed state resumes: PyAirbyte stamps every sync
                // with the same generation, and a new sync must replace, not extend, the old one.
                let keep = restart_point(con, s, n, n, first_data, Unmatched::StartOver, ctx)?;
                if s.format == ValueFormat::Stream {
                    // A Redis stream is published whole: the entries kept are staged again.
                    copy_published(con, s, keep, ctx)?;
                    (keep, 0)
                } else {
                    (keep, keep)
                }
            }
        },
        (true, None) => {
            let count = count.unwrap_or(0);
            let live = live.unwrap_or(0).min(count);
            let keep = restart_point(con, s, count, live, first_data, Unmatched::LastMark, ctx)?;
            (keep, live.min(keep))
        }
    };
    trim_to(con, s, &staged, keep, live, ctx)
}

/// [`prepare`] for a deduplicated stream (a truncate refresh of an `append_dedup` stream). Its
/// staged ids are not positions (a key keeps its id when it is updated, a delete leaves a gap), so
/// there is no restart point to find: staging of the same generation is kept whole when a state
/// was echoed for it, and the records the source sends again are upserted over it, which gives
/// the same generation deduplicated (without an echoed state nothing of it counts as written). Staging of another generation, or of a source that cannot resume, is discarded
/// (its index with its counter, atomically). When an earlier attempt published this generation,
/// the records go into the live stream instead.
fn prepare_dedup(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    first_data: Option<&[u8]>,
    ctx: &Context,
) -> Result<Prepared, Failure> {
    let staged = read_meta(con, s, ctx)?;
    let (generation, published, _) = staged.meta;
    let count = staged.count;
    let same = generation == Some(s.generation) && s.resumable && staged.is_in(s.format);
    if let (true, Some(n)) = (same, published) {
        return Ok(Prepared {
            kept: n,
            already_published: first_data.is_none(),
            into_live: true,
        });
    }
    let resumed = same && super::any_state_echoed(con, s, ctx)?;
    let keep = if resumed { count.unwrap_or(0) } else { 0 };
    trim_to(con, s, &staged, keep, 0, ctx)
}

/// The staging metadata, the staging counter and the staging's value-format marker.
fn read_meta(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    ctx: &Context,
) -> Result<Staged, Failure> {
    let q = |e: redis::RedisError| classify(&e, ctx);
    let (meta, kind, format): (StagingMeta, String, Option<String>) = redis::pipe()
        .cmd("HMGET")
        .arg(&s.staging.meta)
        .arg("generation")
        .arg("published")
        .arg("live")
        .cmd("TYPE")
        .arg(&s.staging.counter)
        .cmd("GET")
        .arg(s.staging.format_marker())
        .query(con)
        .map_err(q)?;
    let count = match kind.as_str() {
        // A generation staged in the `stream` format: its last entry's position.
        "stream" => Some(last_position(con, &s.staging.counter, ctx)?),
        "none" => None,
        _ => redis::cmd("GET")
            .arg(&s.staging.counter)
            .query(con)
            .map_err(q)?,
    };
    Ok(Staged {
        meta,
        count,
        format,
    })
}

/// The position of the last entry of the staged Redis stream at `key` (its id is
/// `0-<position>`; 0 when it has none).
fn last_position(con: &mut redis::Connection, key: &str, ctx: &Context) -> Result<u64, Failure> {
    let top: Vec<(String, Value)> = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(con)
        .map_err(|e| classify(&e, ctx))?;
    Ok(top
        .first()
        .and_then(|(id, _)| id.strip_prefix("0-"))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0))
}

/// Stages again entries 1..=`keep` of a published generation in the `stream` format (a retry
/// resuming it after its publish), in short calls; safe to repeat.
fn copy_published(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    keep: u64,
    ctx: &Context,
) -> Result<(), Failure> {
    let mut start = 1;
    while start <= keep {
        let end = (start + CHUNK - 1).min(keep);
        calls::stream_copy(con, s, start, end, ctx)?;
        start = end + 1;
    }
    Ok(())
}

/// Shrinks the staging to records 1..=`keep` (1..=`live` of them live already): the logical view
/// first, in one script call, then the staged records above it; refreshes the expiry of the
/// staged records kept.
fn trim_to(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    staged: &Staged,
    keep: u64,
    live: u64,
    ctx: &Context,
) -> Result<Prepared, Failure> {
    let mut calls = 0;
    let high = calls::staging_trim(con, s, keep, live, ctx)?;
    if s.format == ValueFormat::Stream {
        // The staged Redis stream: its entries above `keep` go, in short calls (none is left
        // when `keep` is 0: the trim deleted the stream); a server that will not move the last
        // id back gets the stream rebuilt from the entries kept.
        let bound = high / CHUNK + 2;
        for _ in 0..bound {
            if keep == 0 {
                break;
            }
            match calls::stream_trim(con, &s.staging.counter, keep, CHUNK, ctx)? {
                StreamTrim::Deleted => continue,
                StreamTrim::Done => break,
                StreamTrim::Rebuild => {
                    for _ in 0..keep / CHUNK + 2 {
                        if calls::stream_rebuild(con, s, keep, CHUNK, ctx)? == 0 {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        return Ok(Prepared {
            kept: keep,
            already_published: false,
            into_live: false,
        });
    }
    if high > keep {
        delete_range(
            con,
            &s.staging.record_prefix,
            keep + 1,
            high,
            staged.rule(high),
            ctx,
            &mut calls,
        )?;
        redis::cmd("HSET")
            .arg(&s.staging.meta)
            .arg("high")
            .arg(keep)
            .query::<()>(con)
            .map_err(|e| classify(&e, ctx))?;
    }
    refresh_expiry(con, &s.staging.record_prefix, live + 1, keep, ctx)?;
    Ok(Prepared {
        kept: keep,
        already_published: false,
        into_live: false,
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
    // A load knows exactly where it stands: its position was written with its last batch.
    match s.load {
        Some(LoadStaging::KeepAll) => return Ok(count),
        Some(LoadStaging::StartOver) => return Ok(0),
        None => {}
    }
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
        let key = match (s.format, id <= live) {
            // A Redis stream: the entry at that position of the stream or of its staging.
            (ValueFormat::Stream, true) => s.live.counter.clone(),
            (ValueFormat::Stream, false) => s.staging.counter.clone(),
            (_, true) => s.live.record(id),
            (_, false) => format!("{}{id}", s.staging.record_prefix),
        };
        StoredRecord::read(&mut pipe, s.format, &key, id);
    }
    let stored: Vec<Value> = pipe.query(con).map_err(q)?;
    let same = StoredRecord::new(s.format, first);
    // The latest match: a source restarting from its last state is the common case, and taking an
    // earlier match on duplicate data would drop records the source will not resend.
    Ok(candidates
        .iter()
        .zip(stored)
        .filter(|(_, d)| same.is(d))
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
        calls::expire_range(con, prefix, start, end, ctx)?;
        start = end + 1;
    }
    Ok(())
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
