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
//!
//! In cluster mode a group is split by the node that owns each stream's slot: all nodes' calls are
//! written before any replies are read, so the masters work in parallel. MOVED re-reads the slot
//! map and sends the batch to the new owner; ASK sends it once to the importing node (after
//! `ASKING`); a slot in the middle of a migration (TRYAGAIN, "non local key") is waited for. The
//! tokens make every such resend exactly-once.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use redis::{RedisError, Value};

use super::batch::{Batch, StreamCall};
use super::checkpoint::ReadyState;
use super::durable::{wait_durable_on, WaitFailure};
use super::overwrite::{self, OverwriteStream, PublishReport};
use super::retained::Retained;
use super::retry::Retry;
use super::routing::{move_to, receive, split_by_node, Round, ASK_MARK};
use crate::config::Settings;
use crate::connect::nodes::{load_scripts, Link, Nodes};
use crate::connect::{self, classify, Context};
use crate::error::{Failure, FailureType};

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
    /// States were echoed without the writer (no marks, no durable checkpoints): the batches
    /// acknowledged so far need not be kept for a resend any more.
    Echoed,
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
    /// Something the user may like to know (a slot of a stream moved in the cluster).
    Note(String),
    /// Writing failed; nothing after this is committed.
    Failed(Failure),
}

/// The writer's fixed parts.
pub struct Writer {
    /// The connections (one per cluster master in cluster mode), scripts loaded.
    pub nodes: Nodes,
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
    /// Retry budget and durability.
    pub settings: Settings,
    /// Batches acknowledged since the last echoed state, sent again after every reconnect.
    pub retained: Retained,
    /// Redirections already reported: (stream, "MOVED"/"ASK", node).
    pub redirects: std::collections::HashSet<(usize, &'static str, String)>,
    /// The servers on which the last durable wait succeeded (at first, those of the start): too
    /// few replicas there again is final, since only a moved master is worth waiting for.
    pub durable_on: Vec<String>,
}

/// Where the writer stands with the overwrite streams.
struct OverwriteProgress {
    /// Staged records kept from an earlier attempt, per stream.
    offsets: Vec<u64>,
    /// Streams already published.
    published: Vec<bool>,
    /// Streams whose generation an earlier attempt published whole (nothing to publish).
    earlier: Vec<bool>,
}

impl Writer {
    /// Runs until `work` is closed and drained, or a failure (which is sent as the last ack).
    pub fn run(mut self, work: Receiver<Work>, acks: Sender<Ack>) {
        let mut group: Vec<Batch> = Vec::with_capacity(self.max_group);
        let mut buf = Vec::new();
        let mut progress = OverwriteProgress {
            offsets: vec![0; self.calls.len()],
            published: vec![false; self.calls.len()],
            earlier: vec![false; self.calls.len()],
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
        // Best effort: every record is committed already, and tokens expire after a week anyway.
        for call in self.calls.iter() {
            if let Ok(link) = self.nodes.link_for(&call.token) {
                let _ = redis::cmd("DEL")
                    .arg(&call.token)
                    .query::<()>(&mut link.con);
            }
        }
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
            Work::Echoed => {
                self.retained.clear();
                Ok(())
            }
            Work::Prepare { stream, first_data } => {
                if let Some(ow) = self.overwrite[stream].clone() {
                    let prepared = self.with_retry(acks, |w| {
                        let link = w.nodes.link_for(&ow.live.counter)?;
                        overwrite::prepare(&mut link.con, &ow, first_data.as_deref(), &link.ctx)
                    })?;
                    p.offsets[stream] = prepared.kept;
                    p.earlier[stream] = prepared.already_published;
                }
                let _ = acks.send(Ack::Prepared);
                Ok(())
            }
            Work::State(state) => {
                let marks: Vec<(OverwriteStream, u64)> = state
                    .marks
                    .iter()
                    // Streams published already too: a later attempt of the generation resumes
                    // the published records from these marks.
                    .filter_map(|(s, n)| {
                        self.overwrite[*s].clone().map(|ow| (ow, p.offsets[*s] + n))
                    })
                    .collect();
                if !marks.is_empty() {
                    self.with_retry(acks, |w| {
                        // One pipeline per node (a cluster's streams live on several).
                        let mut by_node: Vec<(String, redis::Pipeline)> = Vec::new();
                        for (ow, position) in &marks {
                            let addr = w.nodes.addr_for(&ow.staging.marks);
                            let i = match by_node.iter().position(|(a, _)| *a == addr) {
                                Some(i) => i,
                                None => {
                                    by_node.push((addr, redis::pipe()));
                                    by_node.len() - 1
                                }
                            };
                            overwrite::mark(&mut by_node[i].1, ow, *position);
                        }
                        for (addr, pipe) in by_node {
                            let link = w.nodes.link(&addr)?;
                            pipe.query::<()>(&mut link.con)
                                .map_err(|e| classify(&e, &link.ctx))?;
                        }
                        Ok(())
                    })?;
                }
                if self.settings.durability.is_on() {
                    if self.ctx.failover {
                        self.wait_durable_following_failovers(acks)?;
                    } else {
                        self.wait_durable().map_err(WaitFailure::into_failure)?;
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
                    if p.earlier[stream] {
                        report.earlier = true;
                    } else if !std::mem::replace(&mut p.published[stream], true) {
                        let sweep = self.sweep;
                        report = self
                            .with_retry(acks, |w| overwrite::publish(&mut w.nodes, &ow, sweep))?;
                    }
                }
                let _ = acks.send(Ack::Published { stream, report });
                Ok(())
            }
        }
    }

    /// Durable checkpoints: waits until the configured replicas (WAIT) and AOF fsyncs (WAITAOF)
    /// confirm every write of every connection so far; fails the sync when they do not in time.
    fn wait_durable(&mut self) -> Result<(), WaitFailure> {
        for addr in self.nodes.open_addrs() {
            let link = self.nodes.link(&addr).map_err(WaitFailure::Failed)?;
            wait_durable_on(link, &self.settings)?;
        }
        Ok(())
    }

    /// [`Writer::wait_durable`] in sentinel and cluster mode, where a failover may move a master:
    /// a lost connection is followed to the (new) master, the work resent and the wait repeated,
    /// within the retry budget. Too few replicas is retried only while the master is not the one
    /// the last wait succeeded on (a promoted replica waits for its replicas to attach); on the
    /// same master it fails at once, after one `wait_timeout_ms`.
    fn wait_durable_following_failovers(&mut self, acks: &Sender<Ack>) -> Result<(), Failure> {
        let mut retry = Retry::new(self.settings.retry_budget);
        loop {
            match self.wait_durable() {
                Ok(()) => {
                    self.durable_on = self.nodes.servers();
                    return Ok(());
                }
                Err(WaitFailure::TooFew(f)) => {
                    if self.nodes.servers() == self.durable_on {
                        // Ask again where the master is: a failover may be under way.
                        self.reconnect(&mut retry, f.clone(), acks)?;
                        if self.nodes.servers() == self.durable_on {
                            return Err(f);
                        }
                    } else {
                        self.reconnect(&mut retry, f, acks)?;
                    }
                }
                Err(WaitFailure::Failed(f)) if f.failure_type == FailureType::Transient => {
                    self.reconnect(&mut retry, f, acks)?;
                }
                Err(WaitFailure::Failed(f)) => return Err(f),
            }
        }
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

    /// Waits, then connects again (in cluster mode to the masters of a fresh slot map) and reloads
    /// the scripts, until it works or the budget is spent.
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
            match self.nodes.reset().and_then(|()| self.resend_retained()) {
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
        let batches: Vec<&Batch> = self.retained.batches().collect();
        let mut buf = Vec::new();
        for (addr, part) in split_by_node(&self.nodes, &self.calls, &batches) {
            buf.clear();
            for b in &part {
                self.calls[b.stream].encode(b, &mut buf);
            }
            let link = self.nodes.link(&addr)?;
            let replies =
                redis::ConnectionLike::req_packed_commands(&mut link.con, &buf, 0, part.len())
                    .map_err(|e| classify(&e, &link.ctx))?;
            for (batch, reply) in part.iter().zip(replies) {
                match reply {
                    Value::Int(_) => {}
                    Value::ServerError(e) if e.code() == "ABSEQ" => {
                        return Err(Failure::system(
                            format!(
                                "Redis at {} no longer has batches of stream key {:?} that it had acknowledged before the last echoed state (a failover to a replica that had not received them, or a restart without the AOF): those records are lost. Rerun the sync from the start of the stream, and set wait_replicas (and wait_aof) so that states wait for the copies.",
                                link.ctx.address, self.calls[batch.stream].keys.counter
                            ),
                            e.to_string(),
                        ))
                    }
                    Value::ServerError(e) => {
                        let err = RedisError::from(e);
                        return Err(batch_failure(&self.calls, batch, &err, &link.ctx));
                    }
                    other => {
                        return Err(Failure::system(
                            "Redis answered a resent batch with an unexpected reply.",
                            format!("{other:?}"),
                        ))
                    }
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
        // Batches to send to an importing node after ASKING (an ASK reply), by first ordinal.
        let mut asked: Vec<(u64, String)> = Vec::new();
        for _ in 0..MAX_RESENDS {
            let mut parts = split_by_node(&self.nodes, &self.calls, &pending);
            for (ordinal, target) in asked.drain(..) {
                move_to(&mut parts, ordinal, target);
            }
            // Every node's calls go out before any reply is read: the masters work in parallel.
            let mut sent: Vec<(String, Vec<&Batch>, Result<(), Failure>)> = Vec::new();
            for (addr, part) in parts {
                buf.clear();
                let ask = addr.starts_with(ASK_MARK);
                for b in &part {
                    if ask {
                        buf.extend_from_slice(b"*1\r\n$6\r\nASKING\r\n");
                    }
                    self.calls[b.stream].encode(b, buf);
                }
                let sent_ok = self
                    .nodes
                    .link(addr.trim_start_matches(ASK_MARK))
                    .and_then(|l| {
                        l.con
                            .send_packed_command(buf)
                            .map_err(|e| classify(&e, &l.ctx))
                    });
                sent.push((addr, part, sent_ok));
            }
            let mut round = Round::default();
            for (addr, part, sent_ok) in sent {
                let ask = addr.starts_with(ASK_MARK);
                let addr = addr.trim_start_matches(ASK_MARK).to_string();
                if let Err(f) = sent_ok {
                    round.lost(f)?;
                    round.again.extend(part);
                    self.nodes.forget(&addr);
                    continue;
                }
                // Every reply of the part is read before any is judged: judging may send a
                // command (CONFIG GET after OOM), which must not meet a reply still on its way.
                let mut replies = Vec::with_capacity(part.len());
                let mut broken = None;
                match self.nodes.link(&addr) {
                    Ok(link) => {
                        for _ in &part {
                            match receive(link, ask) {
                                Ok(v) => replies.push(v),
                                Err(f) => {
                                    broken = Some(f);
                                    break;
                                }
                            }
                        }
                    }
                    Err(f) => broken = Some(f),
                }
                let answered = replies.len();
                for (batch, v) in part.iter().zip(replies) {
                    self.judge(batch, v, &addr, &mut round, acks)?;
                }
                if let Some(f) = broken {
                    // Which of the rest landed is unknown: reconnect and resend them all; the
                    // tokens sort it out.
                    round.lost(f)?;
                    round.again.extend(&part[answered..]);
                    self.nodes.forget(&addr);
                }
            }
            if round.again.is_empty() {
                return Ok(());
            }
            if let Some(f) = round.lost {
                self.reconnect(&mut retry, f, acks)?;
            } else if let Some(f) = round.moved {
                if round.failover {
                    // A master became a replica (a failover): find the new one.
                    self.reconnect(&mut retry, f, acks)?;
                } else if let Err(e) = self.nodes.refresh_map() {
                    self.reconnect(&mut retry, e, acks)?;
                } else if round
                    .moved_to
                    .iter()
                    .any(|(key, target)| self.nodes.addr_for(key) != *target)
                {
                    // The node we asked has not heard of the move yet.
                    retry.wait(&f)?;
                }
            } else if let Some(f) = &round.busy {
                retry.wait(f)?;
            }
            for addr in round.reload {
                let reloaded = self
                    .nodes
                    .link(&addr)
                    .and_then(|l| load_scripts(&mut l.con, &l.ctx));
                if let Err(f) = reloaded {
                    if f.failure_type != FailureType::Transient {
                        return Err(f);
                    }
                    self.reconnect(&mut retry, f, acks)?;
                }
            }
            asked = round.asked;
            pending = round.again;
        }
        Err(Failure::system(
            format!(
                "Redis at {} kept refusing a group of batches after {MAX_RESENDS} resends.",
                self.ctx.address
            ),
            "resend limit",
        ))
    }

    /// Reports the first redirection of each kind of a stream to a node.
    fn tell(&mut self, stream: usize, kind: &'static str, target: &str, acks: &Sender<Ack>) {
        if self.redirects.insert((stream, kind, target.to_string())) {
            let what = if kind == "MOVED" {
                "has moved to"
            } else {
                "is migrating to"
            };
            let _ = acks.send(Ack::Note(format!(
                "The slot of stream key {:?} {what} cluster node {target} ({kind}); the writer follows it.",
                self.calls[stream].keys.counter
            )));
        }
    }

    /// Takes a batch's reply: acknowledges it, or notes in `round` why and how it goes again.
    fn judge<'a>(
        &mut self,
        batch: &'a Batch,
        reply: Value,
        addr: &str,
        round: &mut Round<'a>,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        match reply {
            Value::Int(_) => {
                let _ = acks.send(Ack::Committed {
                    first_ordinal: batch.first_ordinal,
                    records: batch.records,
                });
            }
            Value::ServerError(e) if e.code() == "NOSCRIPT" => {
                if !round.reload.iter().any(|a| a == addr) {
                    round.reload.push(addr.to_string());
                }
                round.again.push(batch);
            }
            // Refused because an earlier batch of the group was: it goes again after it.
            Value::ServerError(e) if e.code() == "ABSEQ" && !round.again.is_empty() => {
                round.again.push(batch)
            }
            Value::ServerError(e) if e.code() == "ASK" => {
                // "ASK <slot> <host:port>": this one call goes to the importing node.
                let target = e.details().and_then(|d| d.split(' ').nth(1)).unwrap_or("");
                self.tell(batch.stream, "ASK", target, acks);
                round.asked.push((batch.first_ordinal, target.to_string()));
                round.busy.get_or_insert_with(|| {
                    Failure::transient("A slot is being migrated (ASK).", e.to_string())
                });
                round.again.push(batch);
            }
            Value::ServerError(e) => {
                let code = e.code().to_string();
                let target = e
                    .details()
                    .and_then(|d| d.split(' ').nth(1))
                    .map(String::from);
                let link = self.nodes.link(addr)?;
                let f = batch_error(&self.calls, batch, RedisError::from(e), link);
                if f.failure_type != FailureType::Transient {
                    return Err(f);
                }
                if code == "MOVED" || code == "READONLY" {
                    round.failover |= code == "READONLY";
                    if let Some(target) = target {
                        self.tell(batch.stream, "MOVED", &target, acks);
                        round
                            .moved_to
                            .push((self.calls[batch.stream].keys.counter.clone(), target));
                    }
                    round.moved.get_or_insert(f);
                } else {
                    round.busy.get_or_insert(f);
                }
                round.again.push(batch);
            }
            other => {
                return Err(Failure::system(
                    format!("Redis at {addr} answered a batch call with an unexpected reply.",),
                    format!("{other:?}"),
                ))
            }
        }
        Ok(())
    }
}

/// The failure of a batch refused with `err` by the node of `link` (OOM names the memory limit).
fn batch_error(calls: &[StreamCall], batch: &Batch, err: RedisError, link: &mut Link) -> Failure {
    let oom = connect::classify::error_code(&err) == "OOM";
    let mut f = batch_failure(calls, batch, &err, &link.ctx);
    if oom {
        // Name the limit the user has to raise, when the server lets us read it.
        let limit: Option<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query(&mut link.con)
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

fn batch_failure(calls: &[StreamCall], batch: &Batch, err: &RedisError, ctx: &Context) -> Failure {
    let keys = &calls[batch.stream].keys;
    let ctx = ctx
        .clone()
        .with_keys(format!("{} or {}<id>", keys.counter, keys.record_prefix));
    let ctx = Context {
        during: format!("{} for stream key {:?}", ctx.during, keys.counter),
        ..ctx
    };
    classify(err, &ctx)
}
