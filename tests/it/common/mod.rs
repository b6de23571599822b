//! Test harness: real `redis-server` processes on free loopback ports (`server`, `cluster`,
//! `sentinel`, `target`), the built binary driven through pipes (`run`), message builders
//! (`messages`), reading Redis (`reading`), and proxies that count, cut and break connections.
#![allow(dead_code)]

mod cluster;
#[cfg(feature = "docker-tests")]
mod container;
mod cutter;
mod fault;
mod messages;
mod pki;
mod proxy;
mod reading;
mod run;
mod sentinel;
mod server;
#[cfg(feature = "ssh-tunnel")]
pub mod sshd;
mod target;

pub use cluster::{read_tagged, tagged_counter, Cluster, TLS_CLUSTER_PASSWORD};
pub use cutter::CommandCutter;
pub use fault::{drops_at, Cut, Direction, FaultProxy, Kind};
pub use pki::Pki;
pub use proxy::CountingProxy;
pub use sentinel::{cli as cli_at, sentinel_named_port, SentinelSet, MASTER_NAME};
pub use server::free_port;
pub use server::RedisServer;
pub use target::Target;

pub use messages::*;
pub use reading::*;
pub use run::*;
