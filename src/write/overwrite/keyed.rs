//! Overwrite of a stream keyed by primary key (`record_key: primary_key`): its records are not
//! numbered, so the steps that go by id range elsewhere go by SCAN here (`keyed_scan.lua`), each
//! step short and each pass safe to stop and to run again from its start.
//!
//! * **Prepare**: staging of the same generation (a resumable source, and a state was echoed for
//!   it) is kept whole and its expiry refreshed, and the records sent again are upserted over it;
//!   any other staging is discarded
//!   (every staged key, then its tombstones, then the logical view, in that order, so a stop
//!   leaves a discard to finish, never old staging taken for the new generation). A generation an
//!   earlier attempt published takes this attempt's records into the live stream directly.
//! * **Publish**: a read-only pass finds a live key in the way of a staged one (another stream's
//!   or another tool's) before anything changes; then the marker (`keyed`, `phase`), a `sweep`
//!   pass that unlinks the stream's live records without a staged counterpart, a `move` pass that
//!   renames every staged record over its live key, and the finish (the staged tombstones replace
//!   the stream's; the stream has no counter). The marker's phase moves on only after a whole
//!   pass, so a recovery reruns the pass it stopped in: a sweep before any move, a move of what is
//!   left.

use super::calls::{self, KeyedScan};
use super::first::{FirstRecord, StoredRecord};
use super::{OverwriteStream, Prepared, PublishReport, MAX_SCAN_STEPS, SCAN_COUNT};
use crate::connect::{classify, Context};
use crate::error::Failure;
use crate::keys::StagingKeys;

/// One whole SCAN pass of `mode`; returns the keys acted on, or the first key in the way (for
/// [`KeyedScan::Check`], which stops there).
fn pass(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    mode: KeyedScan,
    ttl: u64,
    ctx: &Context,
    calls: &mut u64,
) -> Result<(u64, Option<String>), Failure> {
    let mut cursor = "0".to_string();
    let mut done = 0;
    for _ in 0..MAX_SCAN_STEPS {
        let (next, n, found) = calls::keyed_scan(con, s, mode, &cursor, SCAN_COUNT, ttl, ctx)?;
        *calls += 1;
        done += n;
        if found.is_some() {
            return Ok((done, found));
        }
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    Ok((done, None))
}

/// Readies the staging of a keyed stream (see the module documentation).
pub fn prepare(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    generation: Option<i64>,
    published: Option<u64>,
    first: Option<&FirstRecord>,
    ctx: &Context,
) -> Result<Prepared, Failure> {
    let q = |e: redis::RedisError| classify(&e, ctx);
    let same = generation == Some(s.generation) && s.resumable;
    // Generation 0 carries no identity (see `prepare`): a published generation 0 is never resumed.
    if let (true, Some(n), false) = (same, published, s.generation == 0) {
        // An append_dedup stream's records merge into what was published. A plain overwrite
        // resumes only when the source's first record is the published record of its key (the
        // retry of an attempt that published); otherwise it is a new sync, which replaces.
        let resumes = match (first, &s.upserts) {
            (None, _) => true,
            (Some(_), Some(f)) if f.deletes => true,
            (Some(first), Some(_)) => match &first.key {
                Some(suffix) => {
                    let key = format!(
                        "{}{}",
                        s.live.record_prefix,
                        String::from_utf8_lossy(suffix)
                    );
                    let mut pipe = redis::pipe();
                    StoredRecord::read(&mut pipe, s.format, &key, 0);
                    let stored: Vec<redis::Value> = pipe.query(con).map_err(q)?;
                    let record = StoredRecord::new(s.format, &first.data);
                    stored.first().is_some_and(|v| record.is(v))
                }
                None => false,
            },
            (Some(_), None) => false,
        };
        if resumes {
            return Ok(Prepared {
                kept: n,
                already_published: first.is_none(),
                into_live: true,
            });
        }
    }
    let mut calls = 0;
    if same && published.is_none() && super::any_state_echoed(con, s, ctx)? {
        pass(con, s, KeyedScan::Expire, 0, ctx, &mut calls)?;
        redis::pipe()
            .cmd("EXPIRE")
            .arg(s.staging.tombstones())
            .arg(crate::keys::STAGING_TTL_SECONDS)
            .ignore()
            .cmd("EXPIRE")
            .arg(&s.staging.meta)
            .arg(crate::keys::STAGING_TTL_SECONDS)
            .ignore()
            .query::<()>(con)
            .map_err(q)?;
        return Ok(Prepared {
            kept: 0,
            already_published: false,
            into_live: false,
        });
    }
    pass(con, s, KeyedScan::Discard, 0, ctx, &mut calls)?;
    redis::cmd("DEL")
        .arg(s.staging.tombstones())
        .query::<()>(con)
        .map_err(q)?;
    calls::staging_trim(con, s, 0, 0, ctx)?;
    Ok(Prepared {
        kept: 0,
        already_published: false,
        into_live: false,
    })
}

/// Fails with a `config_error` naming the first live key in the way of a staged record that is
/// not this stream's record of that key: found before the publish changes anything.
pub fn check(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    ctx: &Context,
    calls: &mut u64,
) -> Result<(), Failure> {
    match pass(con, s, KeyedScan::Check, 0, ctx, calls)? {
        (_, Some(key)) => Err(Failure::config(
            format!(
                "Key {key:?} is in the way of the new records of stream key {:?}: it is not this stream's record of that key (another tool's key, or another stream's record in the Java layout). Nothing was published and the old records are unchanged: rename or delete that key, then sync again (the staged records are kept for a week and the next attempt resumes them).",
                s.live.counter
            ),
            format!("keyed_scan.lua check found {key}"),
        )),
        (_, None) => Ok(()),
    }
}

/// The phases of a keyed publish whose marker exists, from the phase it records, then the
/// finish; idempotent.
pub fn finish(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    ctx: &Context,
) -> Result<PublishReport, Failure> {
    let q = |e: redis::RedisError| classify(&e, ctx);
    let mut report = PublishReport::default();
    // The records' expiry is the marker's, so a recovering run gives the same one.
    let (phase, ttl): (Option<String>, Option<u64>) = redis::cmd("HMGET")
        .arg(&s.staging.marker)
        .arg("phase")
        .arg("ttl")
        .query(con)
        .map_err(q)?;
    let ttl = ttl.unwrap_or(0);
    if phase.as_deref() == Some("sweep") {
        let (swept, _) = pass(con, s, KeyedScan::Sweep, 0, ctx, &mut report.calls)?;
        report.replaced += swept;
        set_phase(con, &s.staging, "move", ctx)?;
    }
    if matches!(phase.as_deref(), Some("sweep" | "move")) {
        let (moved, _) = pass(con, s, KeyedScan::Move, ttl, ctx, &mut report.calls)?;
        report.published += moved;
        set_phase(con, &s.staging, "finish", ctx)?;
    }
    calls::publish_finish(con, &s.live, &s.staging, ctx)?;
    report.calls += 1;
    Ok(report)
}

fn set_phase(
    con: &mut redis::Connection,
    staging: &StagingKeys,
    phase: &str,
    ctx: &Context,
) -> Result<(), Failure> {
    redis::cmd("HSET")
        .arg(&staging.marker)
        .arg("phase")
        .arg(phase)
        .query::<()>(con)
        .map_err(|e| classify(&e, ctx))
}
