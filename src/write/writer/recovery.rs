//! How the writer recovers: reconnecting within the retry budget and resending what the server
//! may lack, and the durable waits that follow a failover to the new master.

use crossbeam_channel::Sender;

use super::parts::split_by_node;
use super::send::batch_failure;
use super::{Ack, Writer};
use crate::connect::classify;
use crate::error::{Failure, FailureType};
use crate::write::batch::Batch;
use crate::write::durable::{wait_durable_on, WaitFailure};
use crate::write::retry::Retry;
use crate::write::verdict::{self, Verdict};

impl Writer {
    /// Durable checkpoints: waits until the configured replicas (WAIT) and AOF fsyncs (WAITAOF)
    /// confirm every write of every connection so far; fails the sync when they do not in time.
    pub(super) fn wait_durable(&mut self) -> Result<(), WaitFailure> {
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
    pub(super) fn wait_durable_following_failovers(
        &mut self,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
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
    pub(super) fn with_retry<T>(
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
    pub(super) fn reconnect(
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
                    self.metrics.reconnected();
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
    pub(super) fn resend_retained(&mut self) -> Result<(), Failure> {
        if self.retained.is_empty() {
            return Ok(());
        }
        let batches: Vec<&Batch> = self.retained.batches().collect();
        self.metrics.retried(batches.len());
        let mut buf = Vec::new();
        for (addr, part) in split_by_node(&self.nodes, &self.calls, &batches, |b| b.stream) {
            buf.clear();
            for b in &part {
                self.calls[b.stream].encode(b, &mut buf);
            }
            let link = self.nodes.link(&addr)?;
            let replies =
                redis::ConnectionLike::req_packed_commands(&mut link.con, &buf, 0, part.len())
                    .map_err(|e| classify(&e, &link.ctx))?;
            for (batch, reply) in part.iter().zip(replies) {
                match verdict::judge(reply) {
                    Verdict::Committed => {}
                    Verdict::OutOfOrder(e) => {
                        return Err(Failure::system(
                            format!(
                                "Redis at {} no longer has batches of stream key {:?} that it had acknowledged before the last echoed state (a failover to a replica that had not received them, or a restart without the AOF): those records are lost. Rerun the sync from the start of the stream, and set wait_replicas (and wait_aof) so that states wait for the copies.",
                                link.ctx.address, self.calls[batch.stream].keys.counter
                            ),
                            e.to_string(),
                        ))
                    }
                    Verdict::ReloadScripts(e)
                    | Verdict::Ask { err: e, .. }
                    | Verdict::Moved { err: e, .. }
                    | Verdict::Refused(e) => {
                        return Err(batch_failure(&self.calls, batch, &e, &link.ctx));
                    }
                    Verdict::Unexpected(text) => {
                        return Err(Failure::system(
                            "Redis answered a resent batch with an unexpected reply.",
                            text,
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}
