//! Redis Cluster: the slot a key hashes to, and the slot map (which master owns which slots),
//! read with `CLUSTER SLOTS` from the first node that answers.

use std::time::Duration;

use redis::Value;

use super::{classify, connect, Context};
use crate::config::topology::join_host_port;
use crate::config::{Settings, Target};
use crate::error::{Failure, FailureType};

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The slot of `key`: CRC16 (XMODEM) of its hash tag (the text between its first `{` and the next
/// `}`, when not empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let len = rest.iter().position(|&b| b == b'}')?;
            (len > 0).then(|| &rest[..len])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// A cluster node's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    /// Host name or address, as the cluster announces it.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Node {
    /// Where a connection to this node goes (with the cluster's credentials and TLS).
    pub fn target(&self) -> Target {
        Target::cluster_node(&self.host, self.port)
    }

    /// `host:port` (IPv6 in brackets): the node's name in messages and maps.
    pub fn addr(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// Which master owns each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// `(first slot, last slot, master)`, sorted by first slot.
    ranges: Vec<(u16, u16, Node)>,
}

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply; `asked` stands in for a master announced without a host.
    pub fn from_reply(reply: &Value, asked: &Node) -> Result<Self, String> {
        let Value::Array(entries) = reply else {
            return Err(format!("CLUSTER SLOTS answered {reply:?}"));
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else {
                return Err(format!("a CLUSTER SLOTS entry is {entry:?}"));
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return Err(format!("a CLUSTER SLOTS entry is {parts:?}"));
            };
            let host = match master.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return Err(format!("a CLUSTER SLOTS master is {master:?}"));
            };
            let host = if host.is_empty() || host == "?" {
                asked.host.clone()
            } else {
                host
            };
            let slot = |n: i64| u16::try_from(n).ok().filter(|s| *s < SLOTS);
            let (Some(first), Some(last), Ok(port)) =
                (slot(*first), slot(*last), u16::try_from(*port))
            else {
                return Err(format!("a CLUSTER SLOTS entry is out of range: {parts:?}"));
            };
            ranges.push((first, last, Node { host, port }));
        }
        ranges.sort_by_key(|r| r.0);
        Ok(SlotMap { ranges })
    }

    /// The master that owns `slot`, if any does.
    pub fn owner(&self, slot: u16) -> Option<&Node> {
        let i = self.ranges.partition_point(|r| r.0 <= slot);
        let (first, last, node) = self.ranges.get(i.checked_sub(1)?)?;
        (*first <= slot && slot <= *last).then_some(node)
    }

    /// Every master that owns a slot, each once, in address order.
    pub fn masters(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self.ranges.iter().map(|r| r.2.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// How many slots no master owns.
    pub fn uncovered(&self) -> u32 {
        let covered: u32 = self
            .ranges
            .iter()
            .map(|(f, l, _)| u32::from(*l) - u32::from(*f) + 1)
            .sum();
        u32::from(SLOTS).saturating_sub(covered)
    }
}

/// Reads the slot map from the first of `candidates` that answers with a healthy cluster.
///
/// A node that is not in cluster mode is a `config_error`; a cluster whose state is not ok, or
/// that leaves slots without a master, or no answering node at all, is a `transient_error`.
pub fn discover(
    settings: &Settings,
    candidates: &[Node],
    reply_timeout: Duration,
) -> Result<SlotMap, Failure> {
    // What a node that answered said is worth more than a node that did not answer.
    let mut unreachable: Option<Failure> = None;
    let mut answered: Option<Failure> = None;
    for node in candidates {
        let mut con = match connect(settings, &node.target(), reply_timeout) {
            Ok(c) => c.con,
            Err(f) if f.failure_type == FailureType::Transient => {
                unreachable.get_or_insert(f);
                continue;
            }
            Err(f) => return Err(f),
        };
        match map_from(&mut con, settings, node) {
            Ok(map) => return Ok(map),
            Err(f) if f.failure_type == FailureType::Transient => {
                answered.get_or_insert(f);
            }
            Err(f) => return Err(f),
        }
    }
    let last = answered.or(unreachable);
    let names: Vec<String> = candidates.iter().map(Node::addr).collect();
    let (why, cause) = match last {
        Some(f) => (
            format!(" (the last said: {})", f.message.trim_end_matches('.')),
            f.internal,
        ),
        None => (String::new(), String::new()),
    };
    Err(Failure::transient(
        format!(
            "No node of the cluster ({}) answered with a healthy slot map{why}. Check that the nodes are up and that \"host\" (and topology.nodes) name nodes of the cluster.",
            names.join(", ")
        ),
        cause,
    ))
}

fn map_from(
    con: &mut redis::Connection,
    settings: &Settings,
    node: &Node,
) -> Result<SlotMap, Failure> {
    let ctx = Context::at(
        settings,
        &node.target(),
        "while reading the cluster's slot map",
    );
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(con)
        .map_err(|e| classify(&e, &ctx))?;
    let state = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_state:"))
        .unwrap_or("unknown");
    if state != "ok" {
        return Err(Failure::transient(
            format!(
                "The cluster's state is {state:?} at {}: some slots have no reachable master; wait for the cluster to recover (CLUSTER INFO).",
                node.addr()
            ),
            info,
        ));
    }
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(con)
        .map_err(|e| classify(&e, &ctx))?;
    let map = SlotMap::from_reply(&reply, node)
        .map_err(|m| Failure::system("The cluster's slot map could not be read.", m))?;
    match map.uncovered() {
        0 => Ok(map),
        n => Err(Failure::transient(
            format!(
                "{n} slots of the cluster have no master (CLUSTER SLOTS at {}): assign every slot before syncing.",
                node.addr()
            ),
            format!("{reply:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis() {
        // Values from CLUSTER KEYSLOT on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{u}:counter"), 11826);
        assert_eq!(key_slot(b"x:{u}:rec:1"), 11826);
        assert_eq!(key_slot(b"{}x"), key_slot(b"{}x"));
        assert_ne!(key_slot(b"{}x"), key_slot(b"x"));
        assert_eq!(key_slot(b"a{b"), key_slot(b"a{b"));
    }

    #[test]
    fn slot_map_finds_owners() {
        let n = |p: u16| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(p.into()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(5461), Value::Int(10922), n(7002)]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), n(7001)]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), n(7003)]),
        ]);
        let asked = Node {
            host: "h".into(),
            port: 1,
        };
        let map = SlotMap::from_reply(&reply, &asked).unwrap();
        assert_eq!(map.owner(0).unwrap().port, 7001);
        assert_eq!(map.owner(5461).unwrap().port, 7002);
        assert_eq!(map.owner(16383).unwrap().port, 7003);
        assert_eq!(map.uncovered(), 0);
        assert_eq!(map.masters().len(), 3);
        let partial = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(99),
            n(7001),
        ])]);
        let map = SlotMap::from_reply(&partial, &asked).unwrap();
        assert!(map.owner(100).is_none());
        assert_eq!(map.uncovered(), 16284);
    }
}
