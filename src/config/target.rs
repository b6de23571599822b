//! Where one connection goes. The config says where Redis is; an SSH tunnel, the sentinels or a
//! cluster's slot map say where each connection actually goes, and that is a [`Target`] (the
//! config's [`super::Settings`] are never copied and rewritten for it).

use super::topology::{join_host_port, Topology};
use super::Settings;

/// An address to connect to, and how it is named in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How the server is named in messages (`10.0.0.5:6379`, `cluster node …`, `… (through the
    /// SSH tunnel)`, `… (master "m" of the sentinels)`).
    pub shown: String,
}

impl Target {
    /// The configured `host` and `port` (in sentinel mode they are not used to connect, and the
    /// name is the master's and the sentinels').
    pub fn configured(settings: &Settings) -> Self {
        Target {
            host: settings.host.clone(),
            port: settings.port,
            shown: settings.address(),
        }
    }

    /// The local end of the SSH tunnel to the configured server.
    pub fn through_tunnel(settings: &Settings, local_port: u16) -> Self {
        Target {
            host: "127.0.0.1".into(),
            port: local_port,
            shown: format!("{} (through the SSH tunnel)", settings.address()),
        }
    }

    /// A node of a Redis Cluster.
    pub fn cluster_node(host: &str, port: u16) -> Self {
        Target {
            host: host.to_string(),
            port,
            shown: format!("cluster node {}", join_host_port(host, port)),
        }
    }

    /// The master the sentinels named.
    pub fn master(host: &str, port: u16, master_name: &str) -> Self {
        Target {
            host: host.to_string(),
            port,
            shown: format!(
                "{} (master {master_name:?} of the sentinels)",
                join_host_port(host, port)
            ),
        }
    }

    /// A sentinel.
    pub fn sentinel(host: &str, port: u16) -> Self {
        Target {
            host: host.to_string(),
            port,
            shown: format!("sentinel {}", join_host_port(host, port)),
        }
    }

    /// `host:port` (brackets around an IPv6 address).
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

impl Settings {
    /// Whether the server named by a target can change under the writer (a failover in sentinel
    /// or cluster mode).
    pub fn master_can_move(&self) -> bool {
        !matches!(self.topology, Topology::Standalone)
    }
}
