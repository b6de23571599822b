//! A real Redis Cluster on loopback: `redis-server --cluster-enabled yes` processes on free ports,
//! joined with `redis-cli --cluster create`, stopped on drop (each node is a [`RedisServer`]).

use std::process::Command;
use std::time::{Duration, Instant};

use destination_redis::connect::cluster::{key_slot, Node, SlotMap};
use serde_json::{json, Value};

use super::server::RedisServer;

/// A cluster of `masters` masters, each with `replicas` replicas.
pub struct Cluster {
    /// Every node, masters first (as `--cluster create` was given them); roles change on failover.
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    /// Starts the nodes, creates the cluster, and waits until every node reports state ok.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let count = masters * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                RedisServer::start_cluster_node(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--appendonly",
                    "yes",
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster.wait_for_replicas(replicas, Duration::from_secs(30));
        cluster
    }

    /// Waits until every master has `n` replicas with a live replication link.
    pub fn wait_for_replicas(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for master in self.slot_map().masters() {
            loop {
                let info = self.node_at(&master).try_cli(&["INFO", "replication"]);
                let online = info
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count();
                if online >= n {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{master:?} has {online} of {n} replicas"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Waits until every running node says `cluster_state:ok` and agrees on the slot map.
    pub fn wait_until_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let states: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| n.try_cli(&["CLUSTER", "INFO"]).unwrap_or_default())
                .collect();
            let ok = states.iter().all(|s| s.contains("cluster_state:ok"));
            let maps: Vec<Option<SlotMap>> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(slot_map_of)
                .collect();
            let agree = maps.windows(2).all(|w| w[0] == w[1]) && maps[0].is_some();
            if ok && agree {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ok: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A config for the destination: the first node as `host`/`port`, the others as seeds.
    pub fn config(&self) -> Value {
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        json!({"host": "127.0.0.1", "port": self.nodes[0].port(),
               "topology": {"mode": "cluster", "nodes": others.join(",")}})
    }

    /// The slot map as the first running node sees it.
    pub fn slot_map(&self) -> SlotMap {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(slot_map_of)
            .expect("a node answers CLUSTER SLOTS")
    }

    /// The node that owns `key`'s slot now.
    pub fn owner(&self, key: &str) -> &RedisServer {
        let map = self.slot_map();
        let node = map.owner(key_slot(key.as_bytes())).expect("slot owned");
        self.node_at(node)
    }

    /// The running node at `node`'s address.
    pub fn node_at(&self, node: &Node) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == node.port)
            .expect("a node of the cluster")
    }

    /// Index in `nodes` of the node that owns `key`'s slot now.
    pub fn owner_index(&self, key: &str) -> usize {
        let port = self.owner(key).port();
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("owner")
    }

    /// The cluster node id of a node.
    pub fn node_id(node: &RedisServer) -> String {
        node.cli(&["CLUSTER", "MYID"]).trim().to_string()
    }

    /// Every key of every running master (small test databases only).
    pub fn all_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for node in self.slot_map().masters() {
            keys.extend(super::all_keys(&mut self.node_at(&node).conn()));
        }
        keys.sort();
        keys
    }
}

fn slot_map_of(node: &RedisServer) -> Option<SlotMap> {
    let mut con = node.try_conn()?;
    let reply: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).ok()?;
    let asked = Node {
        host: "127.0.0.1".into(),
        port: node.port(),
    };
    SlotMap::from_reply(&reply, &asked).ok()
}

/// The tagged counter key of a stream (the layout cluster mode uses).
pub fn tagged_counter(ns: Option<&str>, stream: &str) -> String {
    destination_redis::keys::StreamKeys::with_layout(
        &destination_redis::protocol::StreamDescriptor {
            name: stream.into(),
            namespace: ns.map(Into::into),
        },
        destination_redis::keys::Layout::Tagged,
    )
    .counter
}

/// A stream's counter and records 1..=counter (id order), read from the node that owns them.
pub fn read_tagged(
    cluster: &Cluster,
    ns: Option<&str>,
    stream: &str,
) -> (Option<i64>, Vec<std::collections::HashMap<String, String>>) {
    let key = tagged_counter(ns, stream);
    let mut con = cluster.owner(&key).conn();
    let counter: Option<i64> = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
    let n = counter.unwrap_or(0);
    let mut pipe = redis::pipe();
    for id in 1..=n {
        pipe.cmd("HGETALL").arg(format!("{key}:{id}"));
    }
    let records = if n > 0 {
        pipe.query(&mut con).expect("HGETALL")
    } else {
        Vec::new()
    };
    (counter, records)
}
