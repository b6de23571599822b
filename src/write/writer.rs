//! The Redis writer thread: sends sealed batches as pipelined EVALSHA calls and reports commits.
//!
//! The writer takes every batch that is waiting (up to the in-flight limit) and sends them in one
//! socket write, then reads their replies in order; meanwhile the other threads keep reading and
//! batching. Each reply is acknowledged as it is read. A NOSCRIPT reply (script cache emptied by a
//! restart, failover or SCRIPT FLUSH) makes the writer load the scripts and resend exactly the
//! batches that got it; the batch tokens make a resend of an applied batch a no-op, and refuse a
//! batch that would overtake another.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use redis::{RedisError, Value};

use super::batch::{Batch, StreamCall};
use super::checkpoint::ReadyState;
use super::overwrite::{self, OverwriteStream, PublishReport};
use crate::connect::{classify, Context};
use crate::error::Failure;
use crate::scripts;

/// Bytes of calls sent in one socket write, at most (a single larger batch goes alone).
const GROUP_BYTES: usize = 16 * 1024 * 1024;
/// How often a group is resent after NOSCRIPT before giving up.
const NOSCRIPT_ATTEMPTS: usize = 3;

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
}

impl Writer {
    /// Runs until `work` is closed and drained, or a failure (which is sent as the last ack).
    pub fn run(mut self, work: Receiver<Work>, acks: Sender<Ack>) {
        let mut group: Vec<Batch> = Vec::with_capacity(self.max_group);
        let mut buf = Vec::new();
        let mut offsets = vec![0u64; self.calls.len()];
        let mut published = vec![false; self.calls.len()];
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
                    group.clear();
                    r
                }
                Work::Prepare { stream, first_data } => match &self.overwrite[stream] {
                    Some(ow) => {
                        overwrite::prepare(&mut self.con, ow, first_data.as_deref(), &self.ctx).map(
                            |kept| {
                                offsets[stream] = kept;
                                let _ = acks.send(Ack::Prepared);
                            },
                        )
                    }
                    None => {
                        let _ = acks.send(Ack::Prepared);
                        Ok(())
                    }
                },
                Work::State(state) => self.record_marks(&state, &offsets, &published).map(|()| {
                    let _ = acks.send(Ack::Echo(state.line));
                }),
                Work::Publish { stream } => match &self.overwrite[stream] {
                    Some(ow) if !std::mem::replace(&mut published[stream], true) => {
                        overwrite::publish(&mut self.con, ow, self.sweep, &self.ctx).map(|report| {
                            let _ = acks.send(Ack::Published { stream, report });
                        })
                    }
                    _ => {
                        let report = PublishReport::default();
                        let _ = acks.send(Ack::Published { stream, report });
                        Ok(())
                    }
                },
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

    /// Records the state's staging marks; a stream published already needs none (its staging is gone).
    fn record_marks(
        &mut self,
        state: &ReadyState,
        offsets: &[u64],
        published: &[bool],
    ) -> Result<(), Failure> {
        let mut pipe = redis::pipe();
        let mut any = false;
        for (stream, records) in &state.marks {
            if let (Some(ow), false) = (&self.overwrite[*stream], published[*stream]) {
                overwrite::mark(&mut pipe, ow, offsets[*stream] + records);
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        pipe.query::<()>(&mut self.con)
            .map_err(|e| classify(&e, &self.ctx))
    }

    /// Sends `group`, acknowledging each batch as its reply arrives.
    fn send_group(
        &mut self,
        group: &[Batch],
        buf: &mut Vec<u8>,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        let mut pending: Vec<&Batch> = group.iter().collect();
        for _ in 0..NOSCRIPT_ATTEMPTS {
            buf.clear();
            for b in &pending {
                self.calls[b.stream].encode(b, buf);
            }
            let replies =
                redis::ConnectionLike::req_packed_commands(&mut self.con, buf, 0, pending.len())
                    .map_err(|e| classify(&e, &self.ctx))?;
            let mut again = Vec::new();
            for (batch, reply) in pending.iter().zip(replies) {
                match reply {
                    Value::Int(_) => {
                        let _ = acks.send(Ack::Committed {
                            first_ordinal: batch.first_ordinal,
                            records: batch.records,
                        });
                    }
                    Value::ServerError(e) if e.code() == "NOSCRIPT" => again.push(*batch),
                    Value::ServerError(e) => {
                        return Err(self.batch_error(batch, RedisError::from(e)))
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
            load_scripts(&mut self.con, &self.ctx)?;
            pending = again;
        }
        Err(Failure::system(
            format!("Redis at {} kept forgetting the destination's scripts (NOSCRIPT after loading them).", self.ctx.address),
            "NOSCRIPT",
        ))
    }

    fn batch_error(&self, batch: &Batch, err: RedisError) -> Failure {
        let keys = &self.calls[batch.stream].keys;
        let ctx = self
            .ctx
            .clone()
            .with_keys(format!("{} or {}<id>", keys.counter, keys.record_prefix));
        let ctx = Context {
            during: format!("{} for stream key {:?}", ctx.during, keys.counter),
            ..ctx
        };
        classify(&err, &ctx)
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
