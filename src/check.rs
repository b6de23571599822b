//! `check`: proves that a sync can write, before any data moves.
//!
//! Connects (AUTH, SELECT), PINGs, loads the scripts, and runs the append script once on a throwaway
//! stream under the reserved prefix, which exercises exactly the rights a sync needs (read, write,
//! scripting); then removes the probe's keys. The probe is removed before the status is printed,
//! because PyAirbyte stops the process as soon as it reads the status.
//!
//! In cluster mode the slot map must be complete and the cluster state ok, and every master must
//! answer and accept the scripts; in sentinel mode the sentinels must name a reachable master.

use redis::Value;

use crate::config::Settings;
use crate::connect::nodes::Nodes;
use crate::connect::{self, classify, Context};
use crate::error::Failure;
use crate::java_staging;
use crate::keys::{self, StreamKeys};
use crate::scripts::APPEND_BATCH;
use crate::write::batch::{Batch, Expiry, StreamCall};

/// What a successful check has to say: facts worth knowing before a long sync (LOG INFO), and
/// warnings (LOG WARN).
#[derive(Debug, Default)]
pub struct Report {
    /// Per server: version, topology, memory limit and policy, persistence.
    pub facts: Vec<String>,
    /// What may cost records or fail a sync.
    pub warnings: Vec<String>,
}

/// Runs every check; returns what to log on success.
pub fn run(settings: &Settings) -> Result<Report, Failure> {
    let route = connect::route(settings)?;
    // Every reply of a check is awaited at most the connect timeout.
    let mut settings = settings.clone();
    settings.reply_timeout = settings.connect_timeout;
    settings.reply_timeout_field = "connect_timeout_ms";
    let settings = &settings;
    // Connecting loads the scripts on the server (on every master of a cluster).
    let mut nodes = Nodes::open(settings, &route.entry, settings.reply_timeout)?;
    let mut warnings = route.warnings.clone();
    warnings.extend(nodes.take_warnings());
    let mut facts = Vec::new();
    for addr in nodes.open_addrs() {
        let link = nodes.link(&addr)?;
        let ctx = Context {
            during: "during the check".into(),
            ..link.ctx.clone()
        };
        redis::cmd("PING")
            .query::<()>(&mut link.con)
            .map_err(|e| classify(&e, &ctx))?;
        if let Some(w) = eviction_warning(&mut link.con, &ctx.address) {
            warnings.push(w);
        }
        if let Some(server) = ServerFacts::read(&mut link.con) {
            facts.push(server.describe(&ctx.address, &settings.topology));
            warnings.extend(server.durability_warnings(&ctx.address, settings));
        }
    }
    let recovery = crate::write::overwrite::recover(&mut nodes)?;
    warnings.extend(recovery.finished_messages());
    warnings.extend(recovery.stuck_messages());
    probe_write(&mut nodes)?;
    // A user who may not read tmp:* keys has none to delete either: nothing to report then.
    if let Ok(found) = java_staging::sweep(&mut nodes, false, java_staging::CHECK_STEPS) {
        if let Some(w) = java_staging_warning(&found, settings.delete_java_staging) {
            warnings.push(w);
        }
    }
    Ok(Report { facts, warnings })
}

/// What `INFO` says about a server (each field only if the server gives it).
#[derive(Debug, Default, PartialEq)]
struct ServerFacts {
    version: Option<String>,
    valkey: bool,
    mode: Option<String>,
    maxmemory: Option<u64>,
    policy: Option<String>,
    aof: Option<bool>,
    fsync: Option<String>,
    save: Option<String>,
    replicas: Option<u32>,
}

impl ServerFacts {
    /// Reads `INFO` (and `CONFIG GET appendfsync save`, when allowed); `None` when `INFO` is denied.
    fn read(con: &mut redis::Connection) -> Option<Self> {
        let info: String = redis::cmd("INFO").query(con).ok()?;
        let mut facts = Self::parse(&info);
        let config: Option<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query(con)
            .ok();
        facts.fsync = config.and_then(|v| v.get(1).cloned());
        let config: Option<Vec<String>> =
            redis::cmd("CONFIG").arg("GET").arg("save").query(con).ok();
        facts.save = config.and_then(|v| v.get(1).cloned());
        Some(facts)
    }

    /// The fields of an `INFO` reply.
    fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        ServerFacts {
            valkey: field("valkey_version").is_some(),
            version: field("valkey_version").or_else(|| field("redis_version")),
            mode: field("redis_mode").or_else(|| field("server_mode")),
            maxmemory: field("maxmemory").and_then(|v| v.parse().ok()),
            policy: field("maxmemory_policy"),
            aof: field("aof_enabled").map(|v| v == "1"),
            fsync: None,
            save: None,
            replicas: field("connected_slaves").and_then(|v| v.parse().ok()),
        }
    }

    /// One line: version, topology, memory, persistence.
    fn describe(&self, at: &str, topology: &crate::config::topology::Topology) -> String {
        let unknown = || "unknown".to_string();
        let server = if self.valkey { "Valkey" } else { "Redis" };
        let topology = match topology {
            crate::config::topology::Topology::Cluster(_) => "a cluster master",
            crate::config::topology::Topology::Sentinel(_) => "the master the sentinels name",
            _ => "a standalone server",
        };
        let memory = match self.maxmemory {
            Some(0) => "maxmemory 0 (no limit)".to_string(),
            Some(bytes) => format!("maxmemory {bytes} bytes"),
            None => "maxmemory unknown".to_string(),
        };
        let aof = match self.aof {
            Some(true) => "appendonly yes",
            Some(false) => "appendonly no",
            None => "appendonly unknown",
        };
        let save = match self.save.as_deref() {
            Some("") => "RDB snapshots off (save \"\")".to_string(),
            Some(save) => format!("RDB save \"{save}\""),
            None => "RDB save unknown".to_string(),
        };
        format!(
            "{server} at {at}: version {}, {topology} (redis_mode {}); {memory}, maxmemory-policy {}; persistence: {aof}, appendfsync {}, {save}; {} replica(s) attached.",
            self.version.clone().unwrap_or_else(unknown),
            self.mode.clone().unwrap_or_else(unknown),
            self.policy.clone().unwrap_or_else(unknown),
            self.fsync.clone().unwrap_or_else(unknown),
            self.replicas.map_or_else(unknown, |n| n.to_string()),
        )
    }

    /// Where the configured durability cannot be given by this server.
    fn durability_warnings(&self, at: &str, settings: &Settings) -> Vec<String> {
        let mut warnings = Vec::new();
        if settings.durability.aof && self.aof == Some(false) {
            warnings.push(format!("wait_aof is on, but Redis at {at} has appendonly no: WAITAOF can never confirm a write there, so every state would fail. Turn appendonly on, or wait_aof off."));
        }
        let wanted = settings.durability.replicas;
        if let Some(have) = self.replicas.filter(|have| wanted > *have) {
            warnings.push(format!("wait_replicas is {wanted}, but Redis at {at} has {have} replica(s) attached: states would wait wait_timeout_ms and fail until enough attach."));
        }
        if self.save.as_deref() == Some("") && self.aof == Some(false) {
            warnings.push(format!("Redis at {at} persists nothing (appendonly no, no RDB snapshots): a restart loses every record written."));
        }
        warnings
    }
}

/// What `check` says about the Java connector's leftover staging, if it found any.
fn java_staging_warning(found: &java_staging::Found, deleting: bool) -> Option<String> {
    let example = found.example.as_deref()?;
    let scope = if found.complete {
        ""
    } else {
        " in the first million keys of a node (there may be more)"
    };
    let what_to_do = if deleting {
        "delete_java_staging is on: the next sync deletes them before it writes."
    } else {
        "set \"delete_java_staging\": true to delete them when the next sync starts (only while no Java sync runs)."
    };
    Some(format!(
        "Found {} record(s){scope} that a failed sync of the Java Redis connector left staged under tmp: (e.g. {example:?}); they belong to no stream, and the Java connector's next sync would publish them as duplicates. {what_to_do}",
        found.records
    ))
}

fn probe_write(nodes: &mut Nodes) -> Result<(), Failure> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| Failure::system("No randomness for the probe key.", e))?;
    let run: String = id.iter().map(|b| format!("{b:02x}")).collect();
    // The probe stream's counter is `_airbyte_redis:check:<run>`; written through the real script.
    let keys = StreamKeys {
        counter: keys::probe_counter(&run),
        record_prefix: format!("{}:", keys::probe_counter(&run)),
    };
    let call = StreamCall::new(&APPEND_BATCH, keys.clone(), &run, Expiry::NONE);
    let token = call.token.clone();
    let mut probe = Vec::new();
    call.encode(&Batch::single(0, 1, 0, b"{\"probe\":true}"), &mut probe);
    let link = nodes.link_for(&keys.counter)?;
    let con = &mut link.con;
    let ctx = Context {
        during: "while probing write rights".into(),
        ..link.ctx.clone()
    }
    .with_keys(format!("{} and {}", keys.counter, token));
    // The very call a sync's first batch makes.
    let result = redis::ConnectionLike::req_packed_command(con, &probe);
    let cleanup: Result<(), _> = redis::cmd("DEL")
        .arg(&keys.counter)
        .arg(keys.record(1))
        .arg(&token)
        .query(con);
    match result {
        Ok(Value::Int(1)) => {}
        Ok(Value::ServerError(e)) => return Err(classify(&redis::RedisError::from(e), &ctx)),
        Ok(other) => {
            return Err(Failure::system(
                "The write probe's script call answered unexpectedly.",
                format!("{other:?}"),
            ))
        }
        Err(e) => return Err(classify(&e, &ctx)),
    }
    cleanup.map_err(|e| classify(&e, &ctx))
}

/// A warning when the server at `at` may evict keys (records could vanish), if it lets us ask.
fn eviction_warning(con: &mut redis::Connection, at: &str) -> Option<String> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(con)
        .ok()?;
    let policy = reply.get(1)?;
    (policy.starts_with("allkeys") || policy.starts_with("volatile")).then(|| {
        format!("The maxmemory-policy of Redis at {at} is {policy}: under memory pressure Redis may evict records (or, for volatile-*, keys with a TTL). Use noeviction to keep every record.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_gives_version_memory_and_persistence() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n# Memory\r\nmaxmemory:1048576\r\nmaxmemory_policy:noeviction\r\n# Persistence\r\naof_enabled:0\r\n# Replication\r\nconnected_slaves:0\r\n";
        let mut facts = ServerFacts::parse(info);
        facts.fsync = Some("everysec".into());
        facts.save = Some(String::new());
        assert_eq!(facts.version.as_deref(), Some("7.0.15"));
        let line = facts.describe("h:1", &crate::config::topology::Topology::Standalone);
        assert_eq!(
            line,
            "Redis at h:1: version 7.0.15, a standalone server (redis_mode standalone); maxmemory 1048576 bytes, maxmemory-policy noeviction; persistence: appendonly no, appendfsync everysec, RDB snapshots off (save \"\"); 0 replica(s) attached."
        );
        let valkey = ServerFacts::parse(
            "redis_version:7.2.4\r\nvalkey_version:9.1.2\r\nserver_mode:cluster\r\n",
        );
        assert!(valkey.valkey && valkey.version.as_deref() == Some("9.1.2"));
        assert_eq!(valkey.mode.as_deref(), Some("cluster"));
    }
}
