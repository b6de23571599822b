//! Where a suite writes: one `redis-server`, or with `REDIS_TOPOLOGY=cluster` a real 3-master
//! cluster (the destination then uses cluster mode and the tagged key layout). Suites written
//! against a [`Target`] prove the same guarantees in both.

use std::collections::HashMap;

use serde_json::Value;

use super::{cluster, Cluster, RedisServer};

/// One server or a cluster, chosen by the environment.
pub enum Target {
    /// A standalone server (Java key layout).
    Server(RedisServer),
    /// A 3-master cluster (tagged key layout).
    Cluster(Cluster),
}

impl Target {
    /// Starts what `REDIS_TOPOLOGY` asks for (`cluster`, or a single server by default).
    pub fn start() -> Self {
        match std::env::var("REDIS_TOPOLOGY").as_deref() {
            Ok("cluster") => Target::Cluster(Cluster::start(3, 0)),
            _ => Target::Server(RedisServer::start()),
        }
    }

    /// A single server whatever `REDIS_TOPOLOGY` says, for tests of one server's own features.
    pub fn standalone() -> Self {
        Target::Server(RedisServer::start())
    }

    /// The single server of a [`Target::standalone`] (panics on a cluster: a test bug).
    pub fn server(&self) -> &RedisServer {
        match self {
            Target::Server(s) => s,
            Target::Cluster(_) => panic!("a standalone test was given a cluster"),
        }
    }

    /// `redis-cli args` on the server, or on the cluster node that owns `key`; its output.
    pub fn cli_at(&self, key: &str, args: &[&str]) -> String {
        match self {
            Target::Server(s) => s.cli(args),
            Target::Cluster(c) => c.owner(key).cli(args),
        }
    }

    /// The destination's config for it.
    pub fn config(&self) -> Value {
        match self {
            Target::Server(s) => s.config(),
            Target::Cluster(c) => c.config(),
        }
    }

    /// A fresh connection to the server, or to the cluster node that owns `key`.
    pub fn conn_for(&self, key: &str) -> redis::Connection {
        match self {
            Target::Server(s) => s.conn(),
            Target::Cluster(c) => c.owner(key).conn(),
        }
    }

    /// The stream's counter key in the layout the destination uses here.
    pub fn counter_key(&self, ns: Option<&str>, stream: &str) -> String {
        match self {
            Target::Server(_) => super::counter_key(ns, stream),
            Target::Cluster(_) => cluster::tagged_counter(ns, stream),
        }
    }

    /// The key of the stream's record `id`.
    pub fn record_key(&self, ns: Option<&str>, stream: &str, id: u64) -> String {
        format!("{}:{id}", self.counter_key(ns, stream))
    }

    /// Whether this is a cluster (for the few assertions that differ, such as key names).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// The stream's counter and its records 1..=counter in id order.
    pub fn read_stream(
        &self,
        ns: Option<&str>,
        stream: &str,
    ) -> (Option<i64>, Vec<HashMap<String, String>>) {
        match self {
            Target::Server(s) => super::read_stream(&mut s.conn(), ns, stream),
            Target::Cluster(c) => cluster::read_tagged(c, ns, stream),
        }
    }

    /// How many record-shaped keys the stream has (counted with SCAN on the node that holds it).
    pub fn count_record_keys(&self, ns: Option<&str>, stream: &str) -> usize {
        match self {
            Target::Server(s) => super::count_record_keys(&mut s.conn(), ns, stream),
            Target::Cluster(c) => {
                let counter = cluster::tagged_counter(ns, stream);
                super::count_prefixed(&mut c.owner(&counter).conn(), &format!("{counter}:"))
            }
        }
    }

    /// The server, or every master of the cluster.
    fn masters(&self) -> Vec<&RedisServer> {
        match self {
            Target::Server(s) => vec![s],
            Target::Cluster(c) => c
                .slot_map()
                .masters()
                .iter()
                .map(|n| c.node_at(n))
                .collect(),
        }
    }

    /// Empties every database of the server, or of every master.
    pub fn flush_all(&self) {
        for node in self.masters() {
            node.cli(&["FLUSHALL"]);
        }
    }

    /// Keys matching `pattern` (KEYS; small test databases only), over every master.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for node in self.masters() {
            let found: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut node.conn())
                .expect("KEYS");
            keys.extend(found);
        }
        keys.sort();
        keys
    }

    /// Bookkeeping keys (`_airbyte_redis*`) left behind, except what a finished publish keeps on
    /// purpose for a week: the metadata and marks of the published generation (asserted to expire
    /// and to say `published`).
    pub fn leftover_bookkeeping(&self) -> Vec<String> {
        self.keys("_airbyte_redis*")
            .into_iter()
            .filter(|key| {
                let kept = key.starts_with("_airbyte_redis:staging-meta:")
                    || key.starts_with("_airbyte_redis:staging-marks:");
                if !kept {
                    return true;
                }
                let ttl: i64 = self.cli_at(key, &["TTL", key]).trim().parse().expect("TTL");
                assert!(ttl > 0, "{key} must expire, TTL {ttl}");
                if key.starts_with("_airbyte_redis:staging-meta:") {
                    let published = self.cli_at(key, &["HGET", key, "published"]);
                    assert!(
                        !published.trim().is_empty(),
                        "{key} is not a published generation's"
                    );
                }
                false
            })
            .collect()
    }
}
