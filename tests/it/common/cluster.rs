//! A real Redis Cluster on loopback: `redis-server --cluster-enabled yes` processes on free ports,
//! joined with `redis-cli --cluster create`, stopped on drop (each node is a [`RedisServer`]).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use destination_redis::connect::cluster::{key_slot, Node, SlotMap};
use serde_json::{json, Value};

use super::server::RedisServer;

/// A cluster of `masters` masters, each with `replicas` replicas.
pub struct Cluster {
    /// Every node, masters first (as `--cluster create` was given them); roles change on failover.
    pub nodes: Vec<RedisServer>,
    /// For a TLS cluster: each node's TLS port (in `nodes` order) and the CA that signed them.
    tls: Option<(Vec<u16>, PathBuf, String)>,
    /// The password every node requires (`requirepass`), if any.
    password: Option<&'static str>,
}

/// The password of a [`Cluster::start_tls`] cluster.
pub const TLS_CLUSTER_PASSWORD: &str = "tls-cluster-pw-5150";

/// The arguments every cluster node gets.
const NODE_ARGS: [&str; 8] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
    "--appendonly",
    "yes",
];

impl Cluster {
    /// Starts the nodes, creates the cluster, and waits until every node reports state ok.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let nodes = (0..masters * (1 + replicas))
            .map(|_| RedisServer::start_cluster_node(&NODE_ARGS))
            .collect();
        let cluster = Cluster {
            nodes,
            tls: None,
            password: None,
        };
        Self::create(cluster, replicas)
    }

    /// A cluster as managed services run it: nodes that also listen on TLS ports (certificates
    /// of `pki`, valid for 127.0.0.1), talk TLS among themselves, and require
    /// [`TLS_CLUSTER_PASSWORD`]; [`Cluster::config`] then points at the TLS ports with the
    /// password. The harness itself keeps using the plain ports (Redis answers a plain
    /// connection with the plain ports, a TLS one with the TLS ports).
    pub fn start_tls(masters: usize, pki: &super::Pki) -> Self {
        let pw = TLS_CLUSTER_PASSWORD;
        let mut args = NODE_ARGS.to_vec();
        args.extend(["--requirepass", pw, "--masterauth", pw]);
        let (nodes, ports): (Vec<RedisServer>, Vec<u16>) = (0..masters)
            .map(|_| RedisServer::start_tls_cluster_node(pki, &args))
            .unzip();
        let tls = Some((ports, pki.file("ca.pem"), pki.ca.clone()));
        let cluster = Cluster {
            nodes,
            tls,
            password: Some(pw),
        };
        Self::create(cluster, 0)
    }

    /// `redis-cli` with the password and, for a TLS cluster, `--tls --cacert …` (it migrates keys
    /// over TLS, so `--cluster` commands that move slots must talk TLS), and the address of node
    /// `index`.
    pub fn cli_command(&self, index: usize) -> (Command, String) {
        let mut cli = Command::new("redis-cli");
        if let Some(pw) = self.password {
            cli.args(["-a", pw, "--no-auth-warning"]);
        }
        let port = match &self.tls {
            Some((ports, ca_file, _)) => {
                cli.arg("--tls").arg("--cacert").arg(ca_file);
                ports[index]
            }
            None => self.nodes[index].port(),
        };
        (cli, format!("127.0.0.1:{port}"))
    }

    /// The port the destination uses for node `index` (its TLS port in a TLS cluster).
    pub fn client_port(&self, index: usize) -> u16 {
        match &self.tls {
            Some((ports, _, _)) => ports[index],
            None => self.nodes[index].port(),
        }
    }

    fn create(cluster: Cluster, replicas: usize) -> Self {
        let (mut create, _) = cluster.cli_command(0);
        create.arg("--cluster").arg("create");
        for i in 0..cluster.nodes.len() {
            create.arg(format!("127.0.0.1:{}", cluster.client_port(i)));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        // Bounded: a cluster whose nodes cannot meet (say, a TLS bus that refuses its peers)
        // leaves redis-cli waiting for the join forever.
        let (code, out, err) = super::output_within(create, Duration::from_secs(60));
        assert_eq!(
            code,
            Some(0),
            "redis-cli --cluster create failed: {out}{err}"
        );
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

    /// A config for the destination: the first node as `host`/`port`, the others as seeds (for a
    /// TLS cluster their TLS ports, verified against the test CA).
    pub fn config(&self) -> Value {
        let others: Vec<String> = (1..self.nodes.len())
            .map(|i| format!("127.0.0.1:{}", self.client_port(i)))
            .collect();
        let mut config = json!({"host": "127.0.0.1", "port": self.client_port(0),
               "topology": {"mode": "cluster", "nodes": others.join(",")}});
        if let Some(pw) = self.password {
            config["password"] = json!(pw);
        }
        if let Some((_, _, ca)) = &self.tls {
            config["ssl"] = json!(true);
            config["ssl_mode"] = json!({"mode": "verify-full", "ca_certificate": ca});
        }
        config
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
