//! The Redis writer thread: sends sealed batches as pipelined EVALSHA calls and reports commits.
//!
//! The writer takes every batch that is waiting (up to the in-flight limit) and sends them in one
//! socket write, then reads their replies in order; meanwhile the other threads keep reading and
//! batching. Each reply is acknowledged as it is read.
//!
//! Exactly once across faults: every batch carries a per-run sequence token that the script checks
//! and records atomically with the batch. So whatever went wrong — the connection dropped with
//! batches in flight, the server restarted, the script cache was emptied (NOSCRIPT), the server was
//! loading or busy — the writer recovers the same way: wait (bounded backoff within the retry
//! budget), reconnect if needed, reload the scripts, and resend every batch of the group that was
//! not acknowledged, in order. A batch that had been applied answers "already applied"; one that
//! would overtake another is refused before it writes. Overwrite work (prepare, marks, publish) is
//! idempotent and is simply redone.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use redis::{RedisError, Value};

use super::batch::{Batch, StreamCall};
use super::checkpoint::ReadyState;
use super::overwrite::{self, OverwriteStream, PublishReport};
use super::retained::Retained;
use super::retry::Retry;
use crate::config::Settings;
use crate::connect::{self, classify, Context};
use crate::error::{Failure, FailureType};
use crate::scripts;

/// Bytes of calls sent in one socket write, at most (a single larger batch goes alone).
const GROUP_BYTES: usize = 16 * 1024 * 1024;
/// How often one group is resent at most (NOSCRIPT, refused batches), whatever the time budget.
const MAX_RESENDS: usize = 100;

/// What the coordinator asks of the writer, in order.
#[derive(Debug)]
pub enum Work {
    /// Write a sealed batch (consecutive batches are pipelined together).
    Batch(Batch),
    /// Ready an overwrite stream's staging, before its first batch (see `overwrite::prepare`).
    Prepare {
        /// Catalog index.
        stream: usize,
        /// The stream's first record's data in this run, if it has one.
        first_data: Option<Vec<u8>>,
    },
    /// Record the staging marks of a ready state, then hand the state back for echo.
    State(ReadyState),
    /// Publish an overwrite stream whose batches were all sent before this.
    Publish {
        /// Catalog index.
        stream: usize,
    },
}

/// What the writer tells the coordinator.
#[derive(Debug)]
pub enum Ack {
    /// The batch whose first record has this ordinal is committed.
    Committed {
        /// The batch's first-record ordinal.
        first_ordinal: u64,
        /// Its number of records.
        records: usize,
    },
    /// A stream's staging is ready.
    Prepared,
    /// A state's marks are recorded: echo it.
    Echo(String),
    /// A stream was published.
    Published {
        /// Catalog index.
        stream: usize,
        /// What the publish did.
        report: PublishReport,
    },
    /// The connection was lost and restored; batches were resent.
    Reconnected(String),
    /// Writing failed; nothing after this is committed.
    Failed(Failure),
}

/// The writer's fixed parts.
pub struct Writer {
    /// The connection, authenticated and on the right database.
    pub con: redis::Connection,
    /// Per catalog stream, its script call (into staging for overwrite streams).
    pub calls: Arc<Vec<StreamCall>>,
    /// Per catalog stream, its overwrite keys when it is an overwrite stream.
    pub overwrite: Vec<Option<OverwriteStream>>,
    /// Whether publishes always sweep for leftover records with SCAN.
    pub sweep: bool,
    /// Context for error messages.
    pub ctx: Context,
    /// Batches per pipelined group, at most.
    pub max_group: usize,
    /// How to connect again after the connection is lost.
    pub settings: Settings,
    /// Reply timeout of a connection.
    pub reply_timeout: Duration,
    /// Batches acknowledged since the last echoed state, sent again after every reconnect.
    pub retained: Retained,
}

/// Where the writer stands with the overwrite streams.
struct OverwriteProgress {
    /// Staged records kept from an earlier attempt, per stream.
    offsets: Vec<u64>,
    /// Streams already published.
    published: Vec<bool>,
}

impl Writer {
    /// Runs until `work` is closed and drained, or a failure (which is sent as the last ack).
    pub fn run(mut self, work: Receiver<Work>, acks: Sender<Ack>) {
        let mut group: Vec<Batch> = Vec::with_capacity(self.max_group);
        let mut buf = Vec::new();
        let mut progress = OverwriteProgress {
            offsets: vec![0; self.calls.len()],
            published: vec![false; self.calls.len()],
        };
        let mut held: Option<Work> = None;
        loop {
            let next = match held.take() {
                Some(w) => w,
                None => match work.recv() {
                    Ok(w) => w,
                    Err(_) => break,
                },
            };
            let result = match next {
                Work::Batch(first) => {
                    let mut bytes = first.body.len();
                    group.push(first);
                    while group.len() < self.max_group && bytes < GROUP_BYTES {
                        match work.try_recv() {
                            Ok(Work::Batch(b)) => {
                                bytes += b.body.len();
                                group.push(b);
                            }
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let r = self.send_group(&group, &mut buf, &acks);
                    for b in group.drain(..) {
                        self.retained.push(b);
                    }
                    r
                }
                other => self.do_work(other, &mut progress, &acks),
            };
            if let Err(f) = result {
                let _ = acks.send(Ack::Failed(f));
                return;
            }
        }
        // Every batch is acknowledged and none will be resent: this run's tokens have done their job.
        let mut del = redis::cmd("DEL");
        for call in self.calls.iter() {
            del.arg(&call.token);
        }
        // Best effort: every record is committed already, and tokens expire after a week anyway.
        let _ = del.query::<()>(&mut self.con);
    }

    /// Prepare, marks and publish: idempotent, so redone after a reconnect.
    fn do_work(
        &mut self,
        work: Work,
        p: &mut OverwriteProgress,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        match work {
            Work::Batch(_) => Ok(()),
            Work::Prepare { stream, first_data } => {
                if let Some(ow) = self.overwrite[stream].clone() {
                    let kept = self.with_retry(acks, |w| {
                        overwrite::prepare(&mut w.con, &ow, first_data.as_deref(), &w.ctx)
                    })?;
                    p.offsets[stream] = kept;
                }
                let _ = acks.send(Ack::Prepared);
                Ok(())
            }
            Work::State(state) => {
                let marks: Vec<(OverwriteStream, u64)> = state
                    .marks
                    .iter()
                    .filter(|(s, _)| !p.published[*s])
                    .filter_map(|(s, n)| {
                        self.overwrite[*s].clone().map(|ow| (ow, p.offsets[*s] + n))
                    })
                    .collect();
                if !marks.is_empty() {
                    self.with_retry(acks, |w| {
                        let mut pipe = redis::pipe();
                        for (ow, position) in &marks {
                            overwrite::mark(&mut pipe, ow, *position);
                        }
                        pipe.query::<()>(&mut w.con)
                            .map_err(|e| classify(&e, &w.ctx))
                    })?;
                }
                if self.settings.durability.is_on() {
                    if self.ctx.failover {
                        // A failover may have moved the master: find it, resend, and wait there.
                        self.with_retry(acks, |w| w.wait_durable())?;
                    } else {
                        self.wait_durable()?;
                    }
                }
                self.retained.clear();
                let _ = acks.send(Ack::Echo(state.line));
                Ok(())
            }
            Work::Publish { stream } => {
                let mut report = PublishReport::default();
                if let Some(ow) = self.overwrite[stream].clone() {
                    // Its staging keys are renamed away: its batches must never be sent again.
                    self.retained.drop_stream(stream);
                    if !std::mem::replace(&mut p.published[stream], true) {
                        let sweep = self.sweep;
                        report = self.with_retry(acks, |w| {
                            overwrite::publish(&mut w.con, &ow, sweep, &w.ctx)
                        })?;
                    }
                }
                let _ = acks.send(Ack::Published { stream, report });
                Ok(())
            }
        }
    }

    /// Durable checkpoints: waits until the configured replicas (WAIT) and AOF fsyncs (WAITAOF)
    /// confirm every write of this connection so far; fails the sync when they do not in time.
    fn wait_durable(&mut self) -> Result<(), Failure> {
        let d = self.settings.durability;
        let ms = d.timeout.as_millis() as u64;
        if d.aof {
            let reply: Result<(i64, i64), _> = redis::cmd("WAITAOF")
                .arg(1)
                .arg(d.replicas)
                .arg(ms)
                .query(&mut self.con);
            let (local, replicas) = reply.map_err(|e| {
                if e.to_string().contains("unknown command") {
                    Failure::config("wait_aof needs Redis 7.2 or newer (WAITAOF): upgrade the server, or set wait_aof false.", e)
                } else if e.to_string().contains("appendonly") {
                    Failure::config("wait_aof needs appendonly yes on the server (WAITAOF): turn on the AOF, or set wait_aof false.", e)
                } else {
                    classify(&e, &self.ctx)
                }
            })?;
            if local < 1 || replicas < i64::from(d.replicas) {
                return Err(Failure::transient(
                    format!("The writes behind a state were fsynced to the AOF on {local} of 1 master and {replicas} of {} replicas within {ms} ms; the state was not echoed. Check the replicas' health or raise wait_timeout_ms.", d.replicas),
                    format!("WAITAOF returned [{local}, {replicas}]"),
                ));
            }
        } else if d.replicas > 0 {
            let acked: i64 = redis::cmd("WAIT")
                .arg(d.replicas)
                .arg(ms)
                .query(&mut self.con)
                .map_err(|e| classify(&e, &self.ctx))?;
            if acked < i64::from(d.replicas) {
                return Err(Failure::transient(
                    format!("Only {acked} of {} replicas acknowledged the writes behind a state within {ms} ms; the state was not echoed. Check the replicas (INFO replication) or raise wait_timeout_ms.", d.replicas),
                    format!("WAIT returned {acked}"),
                ));
            }
        }
        Ok(())
    }

    /// Runs `op`, and after a transient failure reconnects and runs it again, within the budget.
    fn with_retry<T>(
        &mut self,
        acks: &Sender<Ack>,
        mut op: impl FnMut(&mut Self) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut retry = Retry::new(self.settings.retry_budget);
        loop {
            match op(self) {
                Err(f) if f.failure_type == FailureType::Transient => {
                    self.reconnect(&mut retry, f, acks)?
                }
                other => return other,
            }
        }
    }

    /// Waits, then connects again and reloads the scripts, until it works or the budget is spent.
    fn reconnect(
        &mut self,
        retry: &mut Retry,
        cause: Failure,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        let first = cause.clone();
        let mut cause = cause;
        loop {
            retry.wait(&cause)?;
            let attempt = connect::connect(&self.settings, self.reply_timeout).and_then(|c| {
                let mut con = c.con;
                load_scripts(&mut con, &self.ctx)?;
                Ok(con)
            });
            let attempt = attempt.and_then(|con| {
                self.con = con;
                self.resend_retained()
            });
            match attempt {
                Ok(()) => {
                    let _ = acks.send(Ack::Reconnected(format!(
                        "{} Reconnected; unacknowledged work is being resent.",
                        first.message
                    )));
                    return Ok(());
                }
                Err(f) if f.failure_type == FailureType::Transient => cause = f,
                Err(f) => return Err(f),
            }
        }
    }

    /// After a reconnect: sends every batch acknowledged since the last echoed state again, in
    /// order. Where the server kept a batch its token makes the call a no-op; where it lost it (a
    /// failover to a replica that had not received it, a crash without fsync) it is written again.
    fn resend_retained(&mut self) -> Result<(), Failure> {
        if self.retained.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for b in self.retained.batches() {
            self.calls[b.stream].encode(b, &mut buf);
        }
        let n = self.retained.batches().len();
        let replies = redis::ConnectionLike::req_packed_commands(&mut self.con, &buf, 0, n)
            .map_err(|e| classify(&e, &self.ctx))?;
        for (batch, reply) in self.retained.batches().zip(replies) {
            match reply {
                Value::Int(_) => {}
                Value::ServerError(e) if e.code() == "ABSEQ" => {
                    return Err(Failure::system(
                        format!(
                            "Redis at {} no longer has batches of stream key {:?} that it had acknowledged before the last echoed state (a failover to a replica that had not received them, or a restart without the AOF): those records are lost. Rerun the sync from the start of the stream, and set wait_replicas (and wait_aof) so that states wait for the copies.",
                            self.ctx.address, self.calls[batch.stream].keys.counter
                        ),
                        e.to_string(),
                    ))
                }
                Value::ServerError(e) => {
                    let err = RedisError::from(e);
                    return Err(self.classify_batch_error(batch, &err));
                }
                other => {
                    return Err(Failure::system(
                        "Redis answered a resent batch with an unexpected reply.",
                        format!("{other:?}"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Sends `group`, acknowledging each batch as its reply arrives; resends what was not applied.
    fn send_group(
        &mut self,
        group: &[Batch],
        buf: &mut Vec<u8>,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        let mut retry = Retry::new(self.settings.retry_budget);
        let mut pending: Vec<&Batch> = group.iter().collect();
        for _ in 0..MAX_RESENDS {
            buf.clear();
            for b in &pending {
                self.calls[b.stream].encode(b, buf);
            }
            let replies = match redis::ConnectionLike::req_packed_commands(
                &mut self.con,
                buf,
                0,
                pending.len(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    let f = classify(&e, &self.ctx);
                    if f.failure_type != FailureType::Transient {
                        return Err(f);
                    }
                    // Which of them landed is unknown: reconnect and resend all; tokens sort it out.
                    self.reconnect(&mut retry, f, acks)?;
                    continue;
                }
            };
            let mut again = Vec::new();
            let mut reload = false;
            let mut busy: Option<Failure> = None;
            let mut moved = false;
            for (batch, reply) in pending.iter().zip(replies) {
                match reply {
                    Value::Int(_) => {
                        let _ = acks.send(Ack::Committed {
                            first_ordinal: batch.first_ordinal,
                            records: batch.records,
                        });
                    }
                    Value::ServerError(e) if e.code() == "NOSCRIPT" => {
                        reload = true;
                        again.push(*batch);
                    }
                    // Refused because an earlier batch of the group was: it goes again after it.
                    Value::ServerError(e) if e.code() == "ABSEQ" && !again.is_empty() => {
                        again.push(*batch)
                    }
                    Value::ServerError(e) => {
                        moved |= e.code() == "READONLY";
                        let f = self.batch_error(batch, RedisError::from(e));
                        if f.failure_type != FailureType::Transient {
                            return Err(f);
                        }
                        busy.get_or_insert(f);
                        again.push(*batch);
                    }
                    other => {
                        return Err(Failure::system(
                            format!(
                                "Redis at {} answered a batch call with an unexpected reply.",
                                self.ctx.address
                            ),
                            format!("{other:?}"),
                        ))
                    }
                }
            }
            if again.is_empty() {
                return Ok(());
            }
            if let Some(f) = busy {
                if moved {
                    // The master became a replica (a failover): find the new one.
                    self.reconnect(&mut retry, f, acks)?;
                } else {
                    retry.wait(&f)?;
                }
            }
            if reload {
                if let Err(f) = load_scripts(&mut self.con, &self.ctx) {
                    if f.failure_type != FailureType::Transient {
                        return Err(f);
                    }
                    self.reconnect(&mut retry, f, acks)?;
                }
            }
            pending = again;
        }
        Err(Failure::system(
            format!(
                "Redis at {} kept refusing a group of batches after {MAX_RESENDS} resends.",
                self.ctx.address
            ),
            "resend limit",
        ))
    }

    fn batch_error(&mut self, batch: &Batch, err: RedisError) -> Failure {
        let oom = connect::classify::error_code(&err) == "OOM";
        let mut f = self.classify_batch_error(batch, &err);
        if oom {
            // Name the limit the user has to raise, when the server lets us read it.
            let limit: Option<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory")
                .query(&mut self.con)
                .ok();
            if let Some(bytes) = limit.as_ref().and_then(|v| v.get(1)) {
                f.message = f.message.replacen(
                    "(maxmemory reached)",
                    &format!("(maxmemory of {bytes} bytes reached)"),
                    1,
                );
            }
        }
        f
    }

    fn classify_batch_error(&self, batch: &Batch, err: &RedisError) -> Failure {
        let keys = &self.calls[batch.stream].keys;
        let ctx = self
            .ctx
            .clone()
            .with_keys(format!("{} or {}<id>", keys.counter, keys.record_prefix));
        let ctx = Context {
            during: format!("{} for stream key {:?}", ctx.during, keys.counter),
            ..ctx
        };
        classify(err, &ctx)
    }
}

/// Loads every script with SCRIPT LOAD and checks that the server's SHA1 matches ours.
pub fn load_scripts(con: &mut redis::Connection, ctx: &Context) -> Result<(), Failure> {
    for script in scripts::all() {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script.body)
            .query(con)
            .map_err(|e| {
                let ctx = Context {
                    during: format!("loading the script {}", script.name),
                    ..ctx.clone()
                };
                classify(&e, &ctx)
            })?;
        if sha != script.sha {
            return Err(Failure::system(
                format!(
                    "Redis at {} computed another SHA1 for {} than the destination did.",
                    ctx.address, script.name
                ),
                format!("server {sha}, local {}", script.sha),
            ));
        }
    }
    Ok(())
}
