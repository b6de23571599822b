//! The connector configuration: read once, validated once, turned into [`Settings`].
//!
//! The raw config is the JSON object Airbyte passes with `--config`; its fields are described by the
//! SPEC document in [`crate::spec`]. Saved configs of the Java connector must keep loading, so the
//! reader is lenient in the ways those configs need: booleans and integers may be strings
//! (`"ssl": "false"`), unknown fields are reported as warnings rather than refused, and `username`
//! may be present against a server without ACL users. Nothing downstream re-validates.

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

pub mod fields;
pub mod options;
pub mod pem;
pub mod target;
pub mod tls;
pub mod topology;
pub mod tunnel;

use fields::{bool_field, field, int_field, millis, positive, ratio_field, string_field};
pub use fields::{ConfigError, Secret};
pub use target::Target;
pub use tunnel::{TunnelAuth, TunnelSettings};

use crate::keys::Layout;
pub use options::{RecordKey, StreamOptions, ValueFormat};
use tls::Tls;
use topology::Topology;

/// Default number of records in one batch (one script call).
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Default byte cap of one batch's record data.
pub const DEFAULT_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Default connect (and `check` reply) timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5000;
/// Default time an open batch may wait for more records before it is sent anyway.
pub const DEFAULT_BATCH_LINGER_MS: u64 = 100;
/// Default time to recover from one lost connection, restart or busy server before failing.
pub const DEFAULT_RETRY_BUDGET_MS: u64 = 60_000;
/// Default time to wait for one reply during `write` before the connection counts as lost.
pub const DEFAULT_REPLY_TIMEOUT_MS: u64 = 60_000;
/// Default fraction of `maxmemory` at which the writer pauses (0: never).
pub const DEFAULT_MEMORY_PAUSE_RATIO: f64 = 0.9;
/// Default time a paused writer waits for memory before the sync fails.
pub const DEFAULT_MEMORY_WAIT_MS: u64 = 600_000;
/// Default time between two progress LOG messages of `write`.
pub const DEFAULT_PROGRESS_INTERVAL_MS: u64 = 30_000;
/// Default number of batches that may be sent and not yet acknowledged.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// Fields this version understands; anything else is logged as ignored. The spec offers exactly
/// these (a test in `spec.rs` holds the two lists together).
pub const KNOWN_FIELDS: &[&str] = &[
    "host",
    "port",
    "username",
    "password",
    "db",
    "ssl",
    "ssl_mode",
    "cache_type",
    "tunnel_method",
    "connect_timeout_ms",
    "batch_size",
    "batch_bytes",
    "batch_linger_ms",
    "max_batches_in_flight",
    "truncate_refreshes",
    "sweep_leftovers",
    "delete_java_staging",
    "retry_budget_ms",
    "reply_timeout_ms",
    "wait_replicas",
    "wait_aof",
    "wait_timeout_ms",
    "topology",
    "key_layout",
    "record_key",
    "ttl_seconds",
    "ttl_field",
    "value_format",
    "stream_maxlen",
    "stream_options",
    "progress_interval_ms",
    "metrics_file",
    "memory_pause_ratio",
    "memory_wait_ms",
];

/// Validated settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Host name or address of the Redis server.
    pub host: String,
    /// TCP port of the Redis server.
    pub port: u16,
    /// ACL user name; `None` means one-argument AUTH (or none).
    pub username: Option<String>,
    /// Password; `None` means no AUTH.
    pub password: Option<Secret>,
    /// Database index to SELECT.
    pub db: i64,
    /// Timeout for connecting and for each reply during connection setup and `check`.
    pub connect_timeout: Duration,
    /// Records per batch.
    pub batch_size: NonZeroUsize,
    /// Record-data bytes per batch (a larger single record travels alone).
    pub batch_bytes: NonZeroUsize,
    /// How long an open batch waits for more records before it is sent.
    pub batch_linger: Duration,
    /// Batches sent and not yet acknowledged, at most.
    pub max_in_flight: NonZeroUsize,
    /// Whether `minimum_generation_id == generation_id > 0` makes an append stream a truncate refresh.
    pub truncate_refreshes: bool,
    /// How long one incident (lost connection, restart, LOADING/BUSY) may take to recover.
    pub retry_budget: Duration,
    /// How long `write` waits for one reply before it treats the connection as lost.
    pub reply_timeout: Duration,
    /// The config field that sets `reply_timeout`, named in timeout messages: `reply_timeout_ms`,
    /// or `connect_timeout_ms` where the connect timeout bounds replies too (`check`, sentinels).
    pub reply_timeout_field: &'static str,
    /// Durable checkpoints: what must confirm the writes behind a state before it is echoed.
    pub durability: Durability,
    /// Whether every publish sweeps the stream's keys with SCAN for leftover records above the new
    /// count (otherwise only when a probe finds one right above it).
    pub sweep_leftovers: bool,
    /// Whether a sync starts by deleting the Java connector's leftover staged records (`tmp:…`).
    pub delete_java_staging: bool,
    /// Fields present in the config that this version ignores (reported as a warning).
    pub ignored_fields: Vec<String>,
    /// How the connection is encrypted.
    pub tls: Tls,
    /// The SSH tunnel to reach Redis through, if any.
    pub tunnel: Option<TunnelSettings>,
    /// Where the master is: this host, wherever the sentinels say, or every master of a cluster.
    pub topology: Topology,
    /// How stream keys are named (always [`Layout::Tagged`] in cluster mode).
    pub layout: Layout,
    /// `record_key` and the per-stream `stream_options`.
    pub stream_options: StreamOptions,
    /// Warnings about the config to log (e.g. TLS without verification).
    pub warnings: Vec<String>,
    /// Time between two progress LOG messages.
    pub progress_interval: Duration,
    /// Where the metrics are written in the Prometheus text format, if anywhere.
    pub metrics_file: Option<std::path::PathBuf>,
    /// The fraction of the server's `maxmemory` at which the writer stops sending (0: never).
    pub memory_pause_ratio: f64,
    /// How long a paused writer waits for memory before the sync fails (transient).
    pub memory_wait: Duration,
}

impl Settings {
    /// Reads and validates the config file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_map(&Self::read_map(path)?)
    }

    /// Reads a config file's JSON object, unvalidated (`load` adds its flags to it).
    pub fn read_map(path: &Path) -> Result<Map<String, Value>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        // A UTF-8 byte-order mark (Windows editors write one) is not part of the JSON.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::NotJson {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        match value {
            Value::Object(map) => Ok(map),
            _ => Err(ConfigError::NotJson {
                path: path.display().to_string(),
                reason: "expected an object".into(),
            }),
        }
    }

    /// Validates a config object.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, ConfigError> {
        let mut topology =
            topology::from_config(map.get("topology")).map_err(|e| e.within("topology"))?;
        let host = string_field(map, "host")?
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        let port = int_field(map, "port")?.unwrap_or(6379);
        let mut port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| field("port", "must be between 1 and 65535"))?;
        let host = match (&mut topology, host) {
            // A cluster's `host` may list seed nodes (the Java connector's "localhost,127.0.0.1").
            (Topology::Cluster(c), host) => {
                let mut seeds = topology::parse_list(host.as_deref().unwrap_or(""), port, "host")?;
                seeds.append(&mut c.nodes);
                if seeds.is_empty() {
                    return Err(field(
                        "host",
                        "is required: a node of the cluster (or give topology.nodes)",
                    ));
                }
                let (first, first_port) = seeds.remove(0);
                port = first_port;
                c.nodes = seeds;
                first
            }
            (_, Some(h)) => h,
            // The sentinels name the master; `host` is not needed.
            (Topology::Sentinel(_), None) => String::new(),
            (Topology::Standalone, None) => {
                return Err(field(
                    "host",
                    "is required: the Redis server's host name or address",
                ))
            }
        };
        if host.contains(',') {
            return Err(field(
                "host",
                "holds a list of hosts; give one host, or use \"topology\" with mode \"sentinel\" (the sentinels' addresses) or \"cluster\" (seed nodes)",
            ));
        }
        let username = string_field(map, "username")?.filter(|u| !u.is_empty());
        let password = string_field(map, "password")?
            .filter(|p| !p.is_empty())
            .map(Secret::new);
        let db = int_field(map, "db")?.unwrap_or(0);
        if !(0..=1_000_000).contains(&db) {
            return Err(field("db", "must be a database index of 0 or more"));
        }
        let cluster = matches!(topology, Topology::Cluster(_));
        if cluster && db != 0 {
            return Err(field(
                "db",
                "must be 0 with topology mode \"cluster\" (a Redis Cluster has only database 0)",
            ));
        }
        let layout = match string_field(map, "key_layout")?.as_deref().map(str::trim) {
            None | Some("") => {
                if cluster {
                    Layout::Tagged
                } else {
                    Layout::Java
                }
            }
            Some("tagged") => Layout::Tagged,
            Some("java") if cluster => {
                return Err(field(
                    "key_layout",
                    "must be \"tagged\" with topology mode \"cluster\" (every key of a stream needs one hash tag, so one slot)",
                ))
            }
            Some("java") => Layout::Java,
            Some(other) => {
                return Err(field(
                    "key_layout",
                    &format!("{other:?} is not a layout; use \"java\" (<namespace>:<stream>:<id>) or \"tagged\" ({{<namespace>:<stream>}}:<id>)"),
                ))
            }
        };
        if let Some(cache_type) = string_field(map, "cache_type")? {
            if !cache_type.eq_ignore_ascii_case("hash") {
                return Err(field(
                    "cache_type",
                    "must be \"hash\" (the only layout supported)",
                ));
            }
        }
        let ssl = bool_field(map, "ssl")?.unwrap_or(false);
        let (tls, warnings) = tls::from_config(ssl, map.get("ssl_mode"))?;
        let tunnel = tunnel::tunnel_settings(map.get("tunnel_method"))
            .map_err(|e| e.within("tunnel_method"))?;
        if tunnel.is_some() && matches!(topology, Topology::Sentinel(_)) {
            return Err(field(
                "tunnel_method",
                "cannot be combined with topology mode \"sentinel\" (the sentinels name the master by an address the tunnel does not know); use NO_TUNNEL",
            ));
        }
        if tunnel.is_some() && cluster {
            return Err(field(
                "tunnel_method",
                "cannot be combined with topology mode \"cluster\" (the nodes name each other by addresses the tunnel does not know); use NO_TUNNEL",
            ));
        }
        let connect_timeout = millis(
            map,
            "connect_timeout_ms",
            DEFAULT_CONNECT_TIMEOUT_MS,
            1..=600_000,
        )?;
        let batch_size = positive(map, "batch_size", DEFAULT_BATCH_SIZE, 100_000)?;
        let batch_bytes = positive(map, "batch_bytes", DEFAULT_BATCH_BYTES, 512 * 1024 * 1024)?;
        let batch_linger = millis(map, "batch_linger_ms", DEFAULT_BATCH_LINGER_MS, 0..=60_000)?;
        let max_in_flight = positive(map, "max_batches_in_flight", DEFAULT_MAX_IN_FLIGHT, 1024)?;
        let truncate_refreshes = bool_field(map, "truncate_refreshes")?.unwrap_or(true);
        let sweep_leftovers = bool_field(map, "sweep_leftovers")?.unwrap_or(false);
        let delete_java_staging = bool_field(map, "delete_java_staging")?.unwrap_or(false);
        let retry_budget = millis(
            map,
            "retry_budget_ms",
            DEFAULT_RETRY_BUDGET_MS,
            0..=3_600_000,
        )?;
        let wait_replicas = int_field(map, "wait_replicas")?.unwrap_or(0);
        let wait_replicas = u32::try_from(wait_replicas)
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| field("wait_replicas", "must be between 0 and 100"))?;
        let durability = Durability {
            replicas: wait_replicas,
            aof: bool_field(map, "wait_aof")?.unwrap_or(false),
            timeout: millis(map, "wait_timeout_ms", 10_000, 1..=3_600_000)?,
        };
        let reply_timeout = millis(
            map,
            "reply_timeout_ms",
            DEFAULT_REPLY_TIMEOUT_MS,
            100..=3_600_000,
        )?;
        let stream_options = StreamOptions::from_config(map)?;
        let progress_interval = millis(
            map,
            "progress_interval_ms",
            DEFAULT_PROGRESS_INTERVAL_MS,
            100..=86_400_000,
        )?;
        let metrics_file = string_field(map, "metrics_file")?
            .filter(|p| !p.trim().is_empty())
            .map(std::path::PathBuf::from);
        let memory_pause_ratio =
            ratio_field(map, "memory_pause_ratio")?.unwrap_or(DEFAULT_MEMORY_PAUSE_RATIO);
        let memory_wait = millis(
            map,
            "memory_wait_ms",
            DEFAULT_MEMORY_WAIT_MS,
            1_000..=86_400_000,
        )?;
        let ignored_fields = map
            .keys()
            .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        Ok(Settings {
            host,
            port,
            username,
            password,
            db,
            connect_timeout,
            batch_size,
            batch_bytes,
            batch_linger,
            max_in_flight,
            truncate_refreshes,
            sweep_leftovers,
            delete_java_staging,
            retry_budget,
            reply_timeout,
            reply_timeout_field: "reply_timeout_ms",
            durability,
            ignored_fields,
            tls,
            tunnel,
            topology,
            layout,
            stream_options,
            warnings,
            progress_interval,
            metrics_file,
            memory_pause_ratio,
            memory_wait,
        })
    }

    /// The configured destination as shown to users: `host:port` (IPv6 addresses in brackets), the
    /// sentinels' master, or the cluster's seeds. A connection's own name is its [`Target`]'s.
    pub fn address(&self) -> String {
        match &self.topology {
            Topology::Sentinel(s) => {
                format!("master {:?} (sentinels {})", s.master_name, s.list())
            }
            Topology::Standalone => topology::join_host_port(&self.host, self.port),
            Topology::Cluster(_) => format!(
                "the cluster (seeds {})",
                self.cluster_seeds()
                    .iter()
                    .map(|(h, p)| topology::join_host_port(h, *p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// In cluster mode, the seed nodes in the order they are asked: `host`/`port` first.
    pub fn cluster_seeds(&self) -> Vec<(String, u16)> {
        let mut seeds = vec![(self.host.clone(), self.port)];
        if let Topology::Cluster(c) = &self.topology {
            seeds.extend(c.nodes.iter().cloned());
        }
        seeds
    }
}

/// Durable checkpoints (`wait_replicas`, `wait_aof`, `wait_timeout_ms`): before a STATE is echoed,
/// everything written so far must be acknowledged by that many replicas (WAIT) and, with `aof`,
/// fsynced to the append-only file (WAITAOF, Redis 7.2+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// Replicas that must acknowledge the writes behind a state.
    pub replicas: u32,
    /// Whether the writes must be fsynced to the AOF (locally, and on `replicas` replicas).
    pub aof: bool,
    /// How long to wait for the confirmations.
    pub timeout: Duration,
}

impl Durability {
    /// Whether states wait for any confirmation at all.
    pub fn is_on(&self) -> bool {
        self.replicas > 0 || self.aof
    }
}

#[cfg(test)]
mod tests;
