//! How the writer spreads a group of batches over connections and reads their replies: one part
//! per node (in cluster mode, the master that owns each stream's slot), the parts sent to a node
//! after `ASKING`, and what a round of replies calls for.

use redis::Value;

use crate::connect::classify;
use crate::connect::nodes::{Link, Nodes};
use crate::error::{Failure, FailureType};
use crate::write::batch::Batch;
use crate::write::batch::StreamCall;

/// Marks a part of a group that goes to a node after `ASKING`.
pub const ASK_MARK: &str = "ASK ";

/// What one round of a group's replies calls for.
#[derive(Default)]
pub struct Round {
    /// Batches to send again (by their place in the group), in order.
    pub again: Vec<usize>,
    /// Nodes whose scripts must be loaded again (NOSCRIPT).
    pub reload: Vec<String>,
    /// A temporary refusal (LOADING, BUSY, TRYAGAIN, a migrating slot): wait, then resend.
    pub busy: Option<Failure>,
    /// A slot moved (MOVED) or a master became a replica (READONLY).
    pub moved: Option<Failure>,
    /// Whether a master became a replica (READONLY): reconnect rather than re-read the map.
    pub failover: bool,
    /// Per MOVED reply, a key of the stream and the node it was sent to.
    pub moved_to: Vec<(String, String)>,
    /// Per ASK reply, the batch (by first ordinal) and the importing node.
    pub asked: Vec<(u64, String)>,
    /// The connection to a node was lost: reconnect.
    pub lost: Option<Failure>,
    /// A server refused a batch for lack of memory (OOM) and back-pressure is on: wait for
    /// memory (the refusal, should no server be near its limit).
    pub full: Option<Failure>,
}

impl Round {
    /// Notes a lost connection; a failure that is not transient ends the sync.
    pub fn lost(&mut self, f: Failure) -> Result<(), Failure> {
        if f.failure_type != FailureType::Transient {
            return Err(f);
        }
        self.lost.get_or_insert(f);
        Ok(())
    }
}

/// Splits `batches` (anything that names a batch's stream: `stream_of`) by the node that serves
/// each one's stream, keeping their order per node.
pub fn split_by_node<T: Copy>(
    nodes: &Nodes,
    calls: &[StreamCall],
    batches: &[T],
    stream_of: impl Fn(T) -> usize,
) -> Vec<(String, Vec<T>)> {
    let mut parts: Vec<(String, Vec<T>)> = Vec::new();
    for &b in batches {
        let addr = nodes.addr_for(&calls[stream_of(b)].keys.counter);
        match parts.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, part)) => part.push(b),
            None => parts.push((addr, vec![b])),
        }
    }
    parts
}

/// Moves the batch of `group` with `ordinal` (and the later batches of its stream, which must
/// follow it) to a part that is sent to `target` after ASKING. Parts hold places in `group`.
pub fn move_to(
    parts: &mut Vec<(String, Vec<usize>)>,
    group: &[Batch],
    ordinal: u64,
    target: String,
) {
    let Some((stream, seq)) = parts
        .iter()
        .flat_map(|(_, p)| p.iter())
        .map(|&i| &group[i])
        .find(|b| b.first_ordinal == ordinal)
        .map(|b| (b.stream, b.seq))
    else {
        return;
    };
    let mut moved = Vec::new();
    for (_, part) in parts.iter_mut() {
        part.retain(|&i| {
            let go = group[i].stream == stream && group[i].seq >= seq;
            if go {
                moved.push(i);
            }
            !go
        });
    }
    parts.retain(|(_, p)| !p.is_empty());
    moved.sort_by_key(|&i| group[i].seq);
    let name = format!("{ASK_MARK}{target}");
    match parts.iter_mut().find(|(a, _)| *a == name) {
        Some((_, part)) => part.extend(moved),
        None => parts.push((name, moved)),
    }
}

/// Reads one call's reply (after the `ASKING` reply, when it was asked).
pub fn receive(link: &mut Link, asked: bool) -> Result<Value, Failure> {
    let mut read = || {
        link.con
            .recv_response()
            .map_err(|e| classify(&e, &link.ctx))
    };
    if asked {
        let ok = read()?;
        if let Value::ServerError(_) = ok {
            // ASKING refused: its reply stands for the call's (which is read and dropped).
            let _ = read()?;
            return Ok(ok);
        }
    }
    read()
}
