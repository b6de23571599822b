//! Sending a group of batches: one part per node, every part written before any reply is read,
//! each reply judged ([`crate::write::verdict`]) and acted on: acknowledge, resend after a reload,
//! follow MOVED / ASK, wait, reconnect, or fail.

use crossbeam_channel::Sender;
use redis::{RedisError, Value};

use super::parts::{move_to, receive, split_by_node, Round, ASK_MARK};
use super::{Ack, Writer, MAX_RESENDS};
use crate::connect::nodes::Link;
use crate::connect::{classify, Context};
use crate::error::{Failure, FailureType};
use crate::scripts;
use crate::write::batch::Batch;
use crate::write::batch::StreamCall;
use crate::write::retry::Retry;
use crate::write::verdict::{self, Verdict};

impl Writer {
    /// Sends `group`, acknowledging each batch as its reply arrives; resends what was not applied.
    pub(super) fn send_group(
        &mut self,
        group: &[Batch],
        buf: &mut Vec<u8>,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        let mut retry = Retry::new(self.settings.retry_budget);
        let mut pending: Vec<&Batch> = group.iter().collect();
        // Batches to send to an importing node after ASKING (an ASK reply), by first ordinal.
        let mut asked: Vec<(u64, String)> = Vec::new();
        let result = self.send_rounds(&mut pending, buf, acks, &mut retry, &mut asked);
        self.metrics.set_in_flight(0);
        result
    }

    /// The rounds of [`Self::send_group`]: send what is pending, judge the replies, recover, and
    /// again until nothing is pending.
    fn send_rounds(
        &mut self,
        pending: &mut Vec<&Batch>,
        buf: &mut Vec<u8>,
        acks: &Sender<Ack>,
        retry: &mut Retry,
        asked: &mut Vec<(u64, String)>,
    ) -> Result<(), Failure> {
        for _ in 0..MAX_RESENDS {
            self.metrics.set_in_flight(pending.len());
            let mut parts = split_by_node(&self.nodes, &self.calls, pending);
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
                        // A call's time: from the previous reply (the server runs a part's calls
                        // one after another), or from when this part's replies are awaited.
                        let mut last = std::time::Instant::now();
                        for _ in &part {
                            match receive(link, ask) {
                                Ok(v) => {
                                    let now = std::time::Instant::now();
                                    self.metrics.call(now - last);
                                    last = now;
                                    replies.push(v)
                                }
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
            self.metrics.retried(round.again.len());
            if let Some(oom) = round.full.take() {
                self.memory_after_oom(oom)?;
            }
            if let Some(f) = round.lost {
                self.reconnect(retry, f, acks)?;
            } else if let Some(f) = round.moved {
                if round.failover {
                    // A master became a replica (a failover): find the new one.
                    self.reconnect(retry, f, acks)?;
                } else if let Err(e) = self.nodes.refresh_map() {
                    self.reconnect(retry, e, acks)?;
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
                    .and_then(|l| scripts::load_all(&mut l.con, &l.ctx));
                if let Err(f) = reloaded {
                    if f.failure_type != FailureType::Transient {
                        return Err(f);
                    }
                    self.reconnect(retry, f, acks)?;
                }
            }
            *asked = round.asked;
            *pending = round.again;
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
    pub(super) fn tell(
        &mut self,
        stream: usize,
        kind: &'static str,
        target: &str,
        acks: &Sender<Ack>,
    ) {
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
    pub(super) fn judge<'a>(
        &mut self,
        batch: &'a Batch,
        reply: Value,
        addr: &str,
        round: &mut Round<'a>,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        match verdict::judge(reply) {
            Verdict::Committed => {
                self.metrics
                    .committed(batch.stream, batch.records, batch.body.len());
                let _ = acks.send(Ack::Committed {
                    first_ordinal: batch.first_ordinal,
                    records: batch.records,
                });
            }
            Verdict::ReloadScripts(_) => {
                if !round.reload.iter().any(|a| a == addr) {
                    round.reload.push(addr.to_string());
                }
                round.again.push(batch);
            }
            // Refused because an earlier batch of the group was: it goes again after it.
            Verdict::OutOfOrder(_) if !round.again.is_empty() => round.again.push(batch),
            Verdict::Ask { target, err } => {
                self.tell(batch.stream, "ASK", &target, acks);
                round.asked.push((batch.first_ordinal, target));
                round.busy.get_or_insert_with(|| {
                    Failure::transient("A slot is being migrated (ASK).", err.to_string())
                });
                round.again.push(batch);
            }
            Verdict::Moved {
                target,
                failover,
                err,
            } => {
                let f = batch_error(&self.calls, batch, err, self.nodes.link(addr)?);
                if f.failure_type != FailureType::Transient {
                    return Err(f);
                }
                round.failover |= failover;
                if let Some(target) = target {
                    self.tell(batch.stream, "MOVED", &target, acks);
                    round
                        .moved_to
                        .push((self.calls[batch.stream].keys.counter.clone(), target));
                }
                round.moved.get_or_insert(f);
                round.again.push(batch);
            }
            Verdict::Refused(err)
                if crate::classify::error_code(&err) == "OOM" && self.waits_for_memory() =>
            {
                // Memory filled between the last reading and this batch (another writer, a
                // burst): nothing of it was written; it goes again once there is room.
                let f = batch_error(&self.calls, batch, err, self.nodes.link(addr)?);
                round.full.get_or_insert(f);
                round.again.push(batch);
            }
            Verdict::OutOfOrder(err) | Verdict::Refused(err) => {
                let f = batch_error(&self.calls, batch, err, self.nodes.link(addr)?);
                if f.failure_type != FailureType::Transient {
                    return Err(f);
                }
                round.busy.get_or_insert(f);
                round.again.push(batch);
            }
            Verdict::Unexpected(text) => {
                return Err(Failure::system(
                    format!("Redis at {addr} answered a batch call with an unexpected reply."),
                    text,
                ))
            }
        }
        Ok(())
    }
}

/// The failure of a batch refused with `err` by the node of `link` (OOM names the memory limit).
pub(super) fn batch_error(
    calls: &[StreamCall],
    batch: &Batch,
    err: RedisError,
    link: &mut Link,
) -> Failure {
    let oom = crate::classify::error_code(&err) == "OOM";
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

pub(super) fn batch_failure(
    calls: &[StreamCall],
    batch: &Batch,
    err: &RedisError,
    ctx: &Context,
) -> Failure {
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
