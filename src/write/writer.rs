//! The Redis writer thread: sends sealed batches as pipelined EVALSHA calls and reports commits.
//!
//! The writer takes every batch that is waiting (up to the in-flight limit) and sends them in one
//! socket write, then reads their replies in order; meanwhile the other threads keep reading and
//! batching. Each reply is acknowledged as it is read, and each reply read makes room in the
//! window for a batch that has become ready since, sent at once: up to `max_batches_in_flight`
//! calls stay in flight, so the server never waits a round trip for the next batch (over a network
//! of 1 ms round trips that was a fifth of the time).
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
//!
//! Here: the work and its acknowledgements, the loop, and the overwrite steps. Sending a group and
//! judging its replies is in `send`, reconnecting, resending and durable waits in `recovery`,
//! the split of a group by node in `parts`.

use std::sync::Arc;

mod memory;
mod parts;
mod recovery;
mod send;

pub use memory::MemoryGate;
pub use parts::split_by_node;

use crossbeam_channel::{Receiver, Sender};

use super::batch::{Batch, StreamCall};
use super::checkpoint::ReadyState;
use super::durable::WaitFailure;
use super::overwrite::{self, OverwriteStream, PublishReport};
use super::plan::Plan;
use super::retained::Retained;
use crate::config::Settings;
use crate::connect::nodes::Nodes;
use crate::connect::{classify, Context};
use crate::error::Failure;
use crate::metrics::Metrics;
use crate::protocol::output::Logger;

/// Bytes of batches in one group, at most (a single larger batch goes alone): its first socket
/// write, and all that its window adds.
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
        /// The stream's first record in this run, if it has one.
        first: Option<overwrite::FirstRecord>,
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
    /// The catalog's streams: their calls, and their overwrite keys.
    pub plan: Arc<Plan>,
    /// Each stream's batch call: the plan's, until a deduplicated refresh finds its generation
    /// published by an earlier attempt and writes into the live stream instead.
    pub calls: Vec<StreamCall>,
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
    /// The run's counters (commits, call times, retries, reconnects, batches in flight).
    pub metrics: Arc<Metrics>,
    /// Memory back-pressure.
    pub memory: MemoryGate,
    /// Logs straight to the output (the coordinator may be waiting to hand over work).
    pub log: Logger,
    /// Set by SIGTERM: a paused writer stops waiting.
    pub cancelled: Arc<std::sync::atomic::AtomicBool>,
}

/// Where the writer stands with the overwrite streams.
struct OverwriteProgress {
    /// Staged records kept from an earlier attempt, per stream.
    offsets: Vec<u64>,
    /// Streams already published.
    published: Vec<bool>,
    /// Streams whose generation an earlier attempt published whole (nothing to publish).
    earlier: Vec<bool>,
    /// Deduplicated streams whose records go into the published generation directly.
    into_live: Vec<bool>,
}

/// Where the writer's work comes from: the coordinator's channel, and what the writer took from
/// it but has not done yet.
pub(super) struct Feed {
    work: Receiver<Work>,
    /// Batches of a group that memory (or the window's node) had no room for yet: they go first,
    /// in order.
    pub(super) carried: std::collections::VecDeque<Batch>,
    /// Work other than a batch met while batches were being gathered: it waits for them.
    held: Option<Work>,
}

impl Feed {
    /// The next piece of work, waiting for it; `None` once the coordinator is done.
    fn next(&mut self) -> Option<Work> {
        if let Some(b) = self.carried.pop_front() {
            return Some(Work::Batch(b));
        }
        self.held.take().or_else(|| self.work.recv().ok())
    }

    /// The next batch if it is ready now and nothing else comes before it.
    ///
    /// `Echoed` is taken on the way: it speaks of batches acknowledged before it was sent, which
    /// are all in `retained` already, or in the group being sent (those are kept a little longer,
    /// which is harmless). Were it to end the group, states echoed every few batches would make
    /// every group that small, and each group costs a round trip.
    pub(super) fn ready_batch(&mut self, retained: &mut Retained) -> Option<Batch> {
        if let Some(b) = self.carried.pop_front() {
            return Some(b);
        }
        if self.held.is_some() {
            return None;
        }
        loop {
            match self.work.try_recv() {
                Ok(Work::Batch(b)) => return Some(b),
                Ok(Work::Echoed) => retained.clear(),
                Ok(other) => {
                    self.held = Some(other);
                    return None;
                }
                Err(_) => return None,
            }
        }
    }
}

impl Writer {
    /// Runs until `work` is closed and drained, or a failure (which is sent as the last ack).
    pub fn run(mut self, work: Receiver<Work>, acks: Sender<Ack>) {
        let mut group: Vec<Batch> = Vec::with_capacity(self.max_group);
        let mut buf = Vec::new();
        let mut progress = OverwriteProgress {
            offsets: vec![0; self.plan.len()],
            published: vec![false; self.plan.len()],
            earlier: vec![false; self.plan.len()],
            into_live: vec![false; self.plan.len()],
        };
        let mut feed = Feed {
            work,
            carried: Default::default(),
            held: None,
        };
        while let Some(next) = feed.next() {
            let result = match next {
                Work::Batch(first) => {
                    let mut bytes = first.body.len();
                    group.push(first);
                    while group.len() < self.max_group && bytes < GROUP_BYTES {
                        match feed.ready_batch(&mut self.retained) {
                            Some(b) => {
                                bytes += b.body.len();
                                group.push(b);
                            }
                            None => break,
                        }
                    }
                    let sizes: Vec<u64> = group.iter().map(|b| b.body.len() as u64).collect();
                    let r = self.memory_room(&sizes).and_then(|room| {
                        // The rest of the group waits for the next one, ahead of anything else.
                        for b in group.drain(room..).rev() {
                            feed.carried.push_front(b);
                        }
                        self.send_group(&mut group, &mut feed, &mut buf, &acks)
                    });
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
        let streams: Vec<usize> = (0..self.calls.len()).collect();
        for (addr, part) in split_by_node(&self.nodes, &self.calls, &streams, |i| i) {
            if let Ok(link) = self.nodes.link(&addr) {
                let mut pipe = redis::pipe();
                for i in part {
                    pipe.cmd("DEL").arg(&self.calls[i].token).ignore();
                }
                let _ = pipe.query::<()>(&mut link.con);
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
            Work::Prepare { stream, first } => {
                if let Some(ow) = self.plan[stream].overwrite().cloned() {
                    let prepared = self.with_retry(acks, |w| {
                        let link = w.nodes.link_for(&ow.live.counter)?;
                        overwrite::prepare(&mut link.con, &ow, first.as_ref(), &link.ctx)
                    })?;
                    p.offsets[stream] = prepared.kept;
                    p.earlier[stream] = prepared.already_published || prepared.into_live;
                    p.into_live[stream] = prepared.into_live;
                    if prepared.into_live {
                        self.calls[stream] = ow.live_call(self.plan.run_id());
                    }
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
                        self.plan[*s]
                            .overwrite()
                            .cloned()
                            .map(|ow| (ow, p.offsets[*s] + n))
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
                if let Some(ow) = self.plan[stream].overwrite().cloned() {
                    // Its staging keys are renamed away: its batches must never be sent again.
                    self.retained.drop_stream(stream);
                    if p.earlier[stream] {
                        report.earlier = true;
                        report.into_live = p.into_live[stream];
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
}
