//! Sending a group of batches: one part per node, every part written before any reply is read,
//! each reply judged ([`crate::write::verdict`]) and acted on: acknowledge, resend after a reload,
//! follow MOVED / ASK, wait, reconnect, or fail.

use crossbeam_channel::Sender;
use redis::RedisError;

use super::parts::{move_to, receive, split_by_node, Round, ASK_MARK};
use super::{Ack, Feed, Writer, GROUP_BYTES, MAX_RESENDS};
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
    ///
    /// The window: while the replies of the group's last part are read in its first round, the
    /// batches that become ready for the same node are sent too (and join the group), keeping up
    /// to `max_group` calls in flight, so a round trip is paid once per group rather than once per
    /// handful of batches. The group grows until nothing is ready, work other than a batch comes,
    /// a batch is for another node, memory must be read again, a reply is not a commit, or
    /// [`GROUP_BYTES`] are reached.
    pub(super) fn send_group(
        &mut self,
        group: &mut Vec<Batch>,
        feed: &mut Feed,
        buf: &mut Vec<u8>,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        let mut retry = Retry::new(self.settings.retry_budget);
        let mut pending: Vec<usize> = (0..group.len()).collect();
        let mut track = Tracked {
            asked: Vec::new(),
            kept: vec![false; group.len()],
        };
        let mut window = Some(feed);
        let mut result = Err(Failure::system(
            format!(
                "Redis at {} kept refusing a group of batches after {MAX_RESENDS} resends.",
                self.ctx.address
            ),
            "resend limit",
        ));
        for _ in 0..MAX_RESENDS {
            let round = self.send_round(group, &mut track, &pending, window.take(), buf, acks);
            let again = round.and_then(|mut round| {
                // The batches that answered ASK go to their importing node in the next round.
                track.asked = std::mem::take(&mut round.asked);
                self.recover(round, &mut retry, acks)
            });
            match again {
                Ok(again) if again.is_empty() => {
                    result = Ok(());
                    break;
                }
                Ok(again) => pending = again,
                Err(f) => {
                    result = Err(f);
                    break;
                }
            }
        }
        self.metrics.set_in_flight(0);
        for (b, kept) in group.drain(..).zip(track.kept) {
            if !kept {
                self.retained.push(b);
            }
        }
        result
    }

    /// One round: sends the `pending` batches of `group` (one part per node, every part written
    /// before any reply is read: the masters work in parallel), reads and judges every reply, and
    /// with a `window` grows the last part as batches become ready (see [`Self::send_group`]).
    fn send_round(
        &mut self,
        group: &mut Vec<Batch>,
        track: &mut Tracked,
        pending: &[usize],
        mut window: Option<&mut Feed>,
        buf: &mut Vec<u8>,
        acks: &Sender<Ack>,
    ) -> Result<Round, Failure> {
        self.metrics.set_in_flight(pending.len());
        let mut parts = split_by_node(&self.nodes, &self.calls, pending, |i| group[i].stream);
        for (ordinal, target) in track.asked.drain(..) {
            move_to(&mut parts, group, ordinal, target);
        }
        let mut sent: Vec<(String, Vec<usize>, Result<(), Failure>)> = Vec::new();
        for (addr, part) in parts {
            buf.clear();
            let ask = addr.starts_with(ASK_MARK);
            for &i in &part {
                if ask {
                    buf.extend_from_slice(b"*1\r\n$6\r\nASKING\r\n");
                }
                self.calls[group[i].stream].encode(&group[i], buf);
            }
            let sent_ok = self.send_to(addr.trim_start_matches(ASK_MARK), buf);
            sent.push((addr, part, sent_ok));
        }
        // What this round sends (a committed batch's call has left the group): it grows to
        // GROUP_BYTES at most.
        let mut group_bytes: usize = pending.iter().map(|&i| group[i].body.len()).sum();
        let last = sent.len();
        let mut round = Round::default();
        for (k, (addr, mut part, sent_ok)) in sent.into_iter().enumerate() {
            let ask = addr.starts_with(ASK_MARK);
            let addr = addr.trim_start_matches(ASK_MARK).to_string();
            if let Err(f) = sent_ok {
                round.lost(f)?;
                round.again.extend(part);
                self.nodes.forget(&addr);
                continue;
            }
            let mut feed = match k + 1 == last && !ask {
                true => window.take(),
                false => None,
            };
            // Replies that are not commits are judged once the part is read: judging may send a
            // command (CONFIG GET after OOM), which must not meet a reply still on its way.
            let mut later: Vec<(usize, Verdict)> = Vec::new();
            let mut answered = 0;
            let mut broken = None;
            // A call's time: from the previous reply (the server runs a part's calls one after
            // another), or from when this part's replies are awaited.
            let mut last_reply = std::time::Instant::now();
            while answered < part.len() {
                let reply = self.nodes.link(&addr).and_then(|l| receive(l, ask));
                let v = match reply {
                    Ok(v) => v,
                    Err(f) => {
                        broken = Some(f);
                        break;
                    }
                };
                let now = std::time::Instant::now();
                self.metrics.call(now - last_reply);
                last_reply = now;
                let i = part[answered];
                answered += 1;
                match verdict::judge(v) {
                    Verdict::Committed if later.is_empty() => {
                        self.committed(&group[i], acks);
                        // Kept for a resend after a reconnect from now on (within the retained
                        // bytes): the group holds only what is in flight, however long it grows.
                        self.retained.push(moved_out(&mut group[i]));
                        track.kept[i] = true;
                    }
                    other => {
                        // Something to recover from: the window closes.
                        feed = None;
                        later.push((i, other));
                    }
                }
                let Some(f) = feed.as_deref_mut() else {
                    continue;
                };
                let mut closed = false;
                while part.len() - answered < self.max_group && group_bytes < GROUP_BYTES {
                    let Some(b) = f.ready_batch(&mut self.retained) else {
                        break;
                    };
                    let size = b.body.len() as u64;
                    if self.nodes.addr_for(&self.calls[b.stream].keys.counter) != addr
                        || !self.memory_fits_unread(size)
                    {
                        f.carried.push_front(b);
                        closed = true;
                        break;
                    }
                    buf.clear();
                    self.calls[b.stream].encode(&b, buf);
                    group_bytes += b.body.len();
                    group.push(b);
                    track.kept.push(false);
                    part.push(group.len() - 1);
                    if let Err(e) = self.send_to(&addr, buf) {
                        // What was sent and not read is resent after the reconnect.
                        broken = Some(e);
                        break;
                    }
                }
                if closed {
                    feed = None;
                }
                if broken.is_some() {
                    break;
                }
                self.metrics.set_in_flight(part.len() - answered);
            }
            for (i, v) in later {
                self.judge(i, &group[i], v, &addr, &mut round, acks)?;
            }
            if let Some(f) = broken {
                // Which of the rest landed is unknown: reconnect and resend them all; the
                // tokens sort it out.
                round.lost(f)?;
                round.again.extend(&part[answered..]);
                self.nodes.forget(&addr);
            }
        }
        Ok(round)
    }

    /// Writes `buf` to the connection to `addr`.
    fn send_to(&mut self, addr: &str, buf: &[u8]) -> Result<(), Failure> {
        self.nodes.link(addr).and_then(|l| {
            l.con
                .send_packed_command(buf)
                .map_err(|e| classify(&e, &l.ctx))
        })
    }

    /// After a round: waits, reconnects, re-reads the slot map or reloads scripts as its replies
    /// call for, and returns the batches to send again.
    fn recover(
        &mut self,
        mut round: Round,
        retry: &mut Retry,
        acks: &Sender<Ack>,
    ) -> Result<Vec<usize>, Failure> {
        if round.again.is_empty() {
            return Ok(round.again);
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
        Ok(round.again)
    }

    /// Counts a committed batch and acknowledges it.
    fn committed(&mut self, batch: &Batch, acks: &Sender<Ack>) {
        self.metrics
            .committed(batch.stream, batch.records, batch.body.len());
        let _ = acks.send(Ack::Committed {
            first_ordinal: batch.first_ordinal,
            records: batch.records,
        });
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

    /// Takes the verdict on batch `i` of the group (`batch`): acknowledges it, or notes in `round`
    /// why and how it goes again.
    fn judge(
        &mut self,
        i: usize,
        batch: &Batch,
        verdict: Verdict,
        addr: &str,
        round: &mut Round,
        acks: &Sender<Ack>,
    ) -> Result<(), Failure> {
        match verdict {
            Verdict::Committed => self.committed(batch, acks),
            Verdict::ReloadScripts(_) => {
                if !round.reload.iter().any(|a| a == addr) {
                    round.reload.push(addr.to_string());
                }
                round.again.push(i);
            }
            // Refused because an earlier batch of the group was: it goes again after it.
            Verdict::OutOfOrder(_) if !round.again.is_empty() => round.again.push(i),
            Verdict::Ask { target, err } => {
                self.tell(batch.stream, "ASK", &target, acks);
                round.asked.push((batch.first_ordinal, target));
                round.busy.get_or_insert_with(|| {
                    Failure::transient("A slot is being migrated (ASK).", err.to_string())
                });
                round.again.push(i);
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
                round.again.push(i);
            }
            Verdict::Refused(err)
                if crate::classify::error_code(&err) == "OOM" && self.waits_for_memory() =>
            {
                // Memory filled between the last reading and this batch (another writer, a
                // burst): nothing of it was written; it goes again once there is room.
                let f = batch_error(&self.calls, batch, err, self.nodes.link(addr)?);
                round.full.get_or_insert(f);
                round.again.push(i);
            }
            Verdict::OutOfOrder(err) | Verdict::Refused(err) => {
                let f = batch_error(&self.calls, batch, err, self.nodes.link(addr)?);
                if f.failure_type != FailureType::Transient {
                    return Err(f);
                }
                round.busy.get_or_insert(f);
                round.again.push(i);
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

/// What [`Writer::send_group`] keeps track of from one round to the next.
struct Tracked {
    /// Batches to send to an importing node after ASKING (an ASK reply), by first ordinal.
    asked: Vec<(u64, String)>,
    /// Per batch of the group, whether it was moved to `retained` when it was committed.
    kept: Vec<bool>,
}

/// `batch` itself, its call moved out (an empty call is left behind with its numbers).
fn moved_out(batch: &mut Batch) -> Batch {
    Batch {
        body: std::mem::take(&mut batch.body),
        ..*batch
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
