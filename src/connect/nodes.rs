//! The connections a run works through, and which one serves a key.
//!
//! Standalone and sentinel mode have one connection (to the server, or to the master the sentinels
//! name). Cluster mode has one per master of the slot map, and a key is served by the master that
//! owns its slot; with the tagged key layout every key of a stream has one slot, so every call of a
//! stream goes to one node. Every connection is authenticated and has the scripts loaded (script
//! caches are per node) before it is handed out.

use std::collections::BTreeMap;
use std::time::Duration;

use super::cluster::{self, key_slot, Node, SlotMap};
use super::{connect, sentinel, Context};
use crate::config::topology::Topology;
use crate::config::{Settings, Target};
use crate::error::Failure;
use crate::scripts;

/// The one connection's name outside cluster mode.
const SINGLE: &str = "";

/// A ready connection and the context its errors are reported in.
pub struct Link {
    /// The connection: authenticated, on the configured database, scripts loaded.
    pub con: redis::Connection,
    /// Names the server (the cluster node) in messages.
    pub ctx: Context,
    /// Where it goes (in sentinel mode, the master the sentinels named).
    pub target: Target,
}

/// Every connection of a run, by node address ("" outside cluster mode).
pub struct Nodes {
    settings: Settings,
    /// Where the configured server is reached (directly, or through the SSH tunnel).
    entry: Target,
    reply_timeout: Duration,
    /// The slot map, in cluster mode.
    map: Option<SlotMap>,
    links: BTreeMap<String, Link>,
    warnings: Vec<String>,
}

impl Nodes {
    /// Connects: to the server at `entry` (or the master the sentinels name), or to every master
    /// of the cluster.
    pub fn open(
        settings: &Settings,
        entry: &Target,
        reply_timeout: Duration,
    ) -> Result<Self, Failure> {
        let mut nodes = Nodes {
            settings: settings.clone(),
            entry: entry.clone(),
            reply_timeout,
            map: None,
            links: BTreeMap::new(),
            warnings: Vec::new(),
        };
        nodes.reset()?;
        Ok(nodes)
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.settings.topology, Topology::Cluster(_))
    }

    /// Drops every connection and connects again (in cluster mode after reading the slot map).
    pub fn reset(&mut self) -> Result<(), Failure> {
        self.links.clear();
        if self.is_cluster() {
            self.refresh_map()?;
            for node in self.masters() {
                self.link(&node.addr())?;
            }
        } else {
            self.link(SINGLE)?;
        }
        Ok(())
    }

    /// Cluster mode: reads the slot map again (after MOVED, or a failover) and drops connections to
    /// nodes that are no longer masters. Nothing to do outside cluster mode.
    pub fn refresh_map(&mut self) -> Result<(), Failure> {
        if !self.is_cluster() {
            return Ok(());
        }
        // Known masters first (they are the likeliest to answer), then the configured seeds.
        let mut candidates: Vec<Node> = self.masters();
        for (host, port) in self.settings.cluster_seeds() {
            let seed = Node { host, port };
            if !candidates.contains(&seed) {
                candidates.push(seed);
            }
        }
        let map = cluster::discover(&self.settings, &candidates, self.reply_timeout)?;
        let masters: Vec<String> = map.masters().iter().map(Node::addr).collect();
        self.links.retain(|addr, _| masters.contains(addr));
        self.map = Some(map);
        Ok(())
    }

    /// The masters of the slot map (empty outside cluster mode).
    pub fn masters(&self) -> Vec<Node> {
        self.map.as_ref().map(SlotMap::masters).unwrap_or_default()
    }

    /// The address of the node that serves `key` ("" outside cluster mode, or when no master owns
    /// its slot: connecting there then fails with a clear error).
    pub fn addr_for(&self, key: &str) -> String {
        match &self.map {
            None => SINGLE.into(),
            Some(map) => map
                .owner(key_slot(key.as_bytes()))
                .map(Node::addr)
                .unwrap_or_default(),
        }
    }

    /// The connection to the node at `addr`, connecting (and loading the scripts) if needed.
    pub fn link(&mut self, addr: &str) -> Result<&mut Link, Failure> {
        if !self.links.contains_key(addr) {
            let link = self.connect(addr)?;
            self.links.insert(addr.to_string(), link);
        }
        self.links
            .get_mut(addr)
            .ok_or_else(|| Failure::system("A connection vanished.", addr.to_string()))
    }

    /// The connection to the node that serves `key`.
    pub fn link_for(&mut self, key: &str) -> Result<&mut Link, Failure> {
        let addr = self.addr_for(key);
        self.link(&addr)
    }

    /// Forgets a broken connection (the next [`Nodes::link`] connects again).
    pub fn forget(&mut self, addr: &str) {
        self.links.remove(addr);
    }

    /// The addresses of the open connections.
    pub fn open_addrs(&self) -> Vec<String> {
        self.links.keys().cloned().collect()
    }

    /// The servers written to (`host:port` of the master the sentinels named, or of every cluster
    /// master connected to): after a reconnect, whether the master moved.
    pub fn servers(&self) -> Vec<String> {
        self.links.values().map(|l| l.target.address()).collect()
    }

    /// Warnings gathered while connecting (each connection's AUTH notes), drained.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn connect(&mut self, addr: &str) -> Result<Link, Failure> {
        let target = match &self.map {
            None => match &self.settings.topology {
                Topology::Sentinel(s) => sentinel::master_target(&self.settings, s)?,
                _ => self.entry.clone(),
            },
            Some(map) => {
                // A master of the map, or a node named by an ASK reply (an importing node may own
                // no slot yet).
                let node = map
                    .masters()
                    .into_iter()
                    .find(|n| n.addr() == addr)
                    .or_else(|| {
                        let parsed = crate::config::topology::parse_list(addr, 6379, "node").ok()?;
                        let (host, port) = parsed.into_iter().next()?;
                        Some(Node { host, port })
                    })
                    .ok_or_else(|| {
                        Failure::transient(
                            format!("No master of the cluster owns a slot the destination needs ({addr:?} is not in the slot map): wait for the cluster to recover."),
                            addr.to_string(),
                        )
                    })?;
                node.target()
            }
        };
        let connected = connect(&self.settings, &target, self.reply_timeout)?;
        for w in connected.warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        let ctx = Context::at(&self.settings, &target, "while writing");
        let mut con = connected.con;
        scripts::load_all(&mut con, &ctx)?;
        Ok(Link { con, ctx, target })
    }
}
