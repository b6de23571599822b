//! The SPEC document: the connection specification Airbyte shows to users.
//!
//! It keeps every field of the Java connector (`host`, `port`, `username`, `password`, `ssl`,
//! `ssl_mode`, `cache_type`, `tunnel_method`; same names and shapes) so saved configs keep working,
//! and adds `db`, `connect_timeout_ms`, the batch limits and `truncate_refreshes`. Secrets carry
//! `airbyte_secret`. `supported_destination_sync_modes` lists only what this version implements.

use serde_json::{json, Value};

use crate::config;

/// Destination sync modes this version writes.
pub const SUPPORTED_SYNC_MODES: &[&str] = &["overwrite", "append", "append_dedup"];

/// The `spec` field of the SPEC message.
pub fn spec() -> Value {
    json!({
        "documentationUrl": "https://docs.airbyte.com/integrations/destinations/redis",
        "supportsIncremental": true,
        "supportsNormalization": false,
        "supportsDBT": false,
        "supported_destination_sync_modes": SUPPORTED_SYNC_MODES,
        "connectionSpecification": connection_specification(),
    })
}

fn connection_specification() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Redis Destination Spec",
        "type": "object",
        // `host` is not required: in sentinel mode the sentinels name the master, and in cluster
        // mode topology.nodes may list the seeds. The config reader requires it otherwise.
        "required": ["port"],
        "additionalProperties": true,
        "properties": {
            "host": {
                "title": "Host", "type": "string", "order": 0,
                "description": "Redis host to connect to. Not needed in sentinel mode (the sentinels name the master); in cluster mode, a node of the cluster (or several, comma-separated).",
                "examples": ["localhost", "127.0.0.1"]
            },
            "port": {
                "title": "Port", "type": "integer", "order": 1,
                "description": "Port of the Redis server.",
                "minimum": 1, "maximum": 65535, "default": 6379
            },
            "username": {
                "title": "Username", "type": "string", "order": 2,
                "description": "ACL user name (Redis 6+). Leave empty for password-only servers."
            },
            "password": {
                "title": "Password", "type": "string", "order": 3, "airbyte_secret": true,
                "description": "Password of the user, or the server's requirepass."
            },
            "db": {
                "title": "Database", "type": "integer", "order": 4, "minimum": 0, "default": 0,
                "description": "Database index to write to (SELECT)."
            },
            "ssl": {
                "title": "SSL Connection", "type": "boolean", "order": 5, "default": false,
                "description": "Encrypt the connection with TLS."
            },
            "ssl_mode": ssl_mode(),
            "cache_type": {
                "title": "Cache type", "type": "string", "order": 7,
                "enum": ["hash"], "default": "hash",
                "description": "How records are stored: one hash per record."
            },
            "connect_timeout_ms": {
                "title": "Connect timeout (ms)", "type": "integer", "order": 8,
                "minimum": 1, "maximum": 600000, "default": config::DEFAULT_CONNECT_TIMEOUT_MS,
                "description": "How long to wait for the server when connecting."
            },
            "batch_size": {
                "title": "Batch size (records)", "type": "integer", "order": 9,
                "minimum": 1, "maximum": 100000, "default": config::DEFAULT_BATCH_SIZE,
                "description": "Records written by one atomic script call."
            },
            "batch_bytes": {
                "title": "Batch size (bytes)", "type": "integer", "order": 10,
                "minimum": 1, "default": config::DEFAULT_BATCH_BYTES,
                "description": "Record bytes per atomic script call; a larger record travels alone."
            },
            "batch_linger_ms": {
                "title": "Batch linger (ms)", "type": "integer", "order": 11,
                "minimum": 0, "maximum": 60000, "default": config::DEFAULT_BATCH_LINGER_MS,
                "description": "How long a batch waits for more records before it is sent."
            },
            "max_batches_in_flight": {
                "title": "Batches in flight", "type": "integer", "order": 12,
                "minimum": 1, "maximum": 1024, "default": config::DEFAULT_MAX_IN_FLIGHT,
                "description": "Batches sent to Redis and not yet acknowledged, at most."
            },
            "truncate_refreshes": {
                "title": "Truncate refreshes", "type": "boolean", "order": 13, "default": true,
                "description": "Treat an append stream whose minimum_generation_id equals its generation_id (> 0) as a truncate refresh. Set false to let only the destination sync mode decide (PyAirbyte sends 1/1 for every stream)."
            },
            "sweep_leftovers": {
                "title": "Sweep leftovers on overwrite", "type": "boolean", "order": 14, "default": false,
                "description": "On every overwrite, also SCAN the stream's keys for records above the new count (left by other tools). Without it the sweep runs only when a record is found right above the old count."
            },
            "retry_budget_ms": {
                "title": "Retry budget (ms)", "type": "integer", "order": 15,
                "minimum": 0, "maximum": 3600000, "default": config::DEFAULT_RETRY_BUDGET_MS,
                "description": "How long to keep reconnecting and resending after a lost connection, a restart or a busy server before the sync fails. Batches are never applied twice."
            },
            "reply_timeout_ms": {
                "title": "Reply timeout (ms)", "type": "integer", "order": 16,
                "minimum": 100, "maximum": 3600000, "default": config::DEFAULT_REPLY_TIMEOUT_MS,
                "description": "How long a write waits for one reply before it treats the connection as lost (then it reconnects and resends within the retry budget)."
            },
            "wait_replicas": {
                "title": "Durable checkpoints: replicas", "type": "integer", "order": 17, "minimum": 0, "maximum": 100, "default": 0,
                "description": "Before a state is echoed, wait until this many replicas acknowledged every write before it (WAIT). 0: do not wait."
            },
            "wait_aof": {
                "title": "Durable checkpoints: AOF fsync", "type": "boolean", "order": 18, "default": false,
                "description": "Before a state is echoed, wait until every write before it is fsynced to the append-only file (WAITAOF, Redis 7.2+), on the master and on wait_replicas replicas."
            },
            "wait_timeout_ms": {
                "title": "Durable checkpoints: timeout (ms)", "type": "integer", "order": 19, "minimum": 1, "maximum": 3600000, "default": 10000,
                "description": "How long to wait for those confirmations before the sync fails with a transient error."
            },
            "tunnel_method": tunnel_method(),
            "topology": topology(),
            "key_layout": {
                "title": "Key layout", "type": "string", "order": 21, "enum": ["java", "tagged"],
                "description": "java (the default; always tagged in cluster mode): <namespace>:<stream> and <namespace>:<stream>:<id>, as the Java connector. tagged: {<namespace>:<stream>} and {<namespace>:<stream>}:<id>, one hash tag per stream (names with % { } : percent-encoded), so any names are kept apart and a stream's keys share one cluster slot."
            },
            "delete_java_staging": {
                "title": "Delete the Java connector's leftover staging", "type": "boolean", "order": 22, "default": false,
                "description": "When a sync starts, delete the records a failed sync of the Java Redis connector left staged at tmp:<namespace>:<stream>:<n> (hashes with _airbyte_data only; check reports them). It SCANs the whole database once per sync, so turn it off once they are gone, and never while a Java sync runs."
            },
            "record_key": record_key(23),
            "ttl_seconds": ttl_seconds(25),
            "ttl_field": ttl_field(26),
            "value_format": value_format(27),
            "stream_maxlen": stream_maxlen(28),
            "stream_options": stream_options(),
            "progress_interval_ms": progress_interval_ms(29),
            "metrics_file": metrics_file(30),
            "memory_pause_ratio": memory_pause_ratio(31),
            "memory_wait_ms": memory_wait_ms(32),
        }
    })
}

/// `progress_interval_ms` at `order`.
fn progress_interval_ms(order: u32) -> Value {
    json!({
        "title": "Progress interval (ms)", "type": "integer", "order": order,
        "minimum": 100, "maximum": 86400000, "default": config::DEFAULT_PROGRESS_INTERVAL_MS,
        "description": "Time between two progress LOG messages (records and bytes written, rates, batches in flight, states echoed, retries and reconnects, the server's used_memory against maxmemory)."
    })
}

/// `memory_pause_ratio` at `order`.
fn memory_pause_ratio(order: u32) -> Value {
    json!({
        "title": "Memory pause ratio", "type": "number", "order": order,
        "minimum": 0, "maximum": 1, "default": config::DEFAULT_MEMORY_PAUSE_RATIO,
        "description": "When the server has a maxmemory and its used_memory (plus the batches about to be sent) reaches this fraction of it, the writer stops sending, says so once, checks INFO memory every second and goes on when it falls below (consumers delete data, an operator raises maxmemory). 0 turns it off: a full server then ends the sync with an OOM error."
    })
}

/// `memory_wait_ms` at `order`.
fn memory_wait_ms(order: u32) -> Value {
    json!({
        "title": "Memory wait (ms)", "type": "integer", "order": order,
        "minimum": 1000, "maximum": 86400000, "default": config::DEFAULT_MEMORY_WAIT_MS,
        "description": "How long the writer waits for memory (see memory_pause_ratio) before the sync fails with a transient error; states are echoed for everything committed."
    })
}

/// `metrics_file` at `order`.
fn metrics_file(order: u32) -> Value {
    json!({
        "title": "Metrics file", "type": "string", "order": order,
        "description": "A path the destination writes its metrics to in the Prometheus text format every few seconds and at the end (atomically: written beside it, then renamed), for a node exporter's textfile collector or a sidecar to scrape. Empty: none."
    })
}

/// The `stream_options` list.
fn stream_options() -> Value {
    json!({
        "title": "Options per stream", "type": "array", "order": 24,
        "description": "Options for single streams, overriding the ones above. An entry without namespace applies to every stream of that name; an entry with the exact namespace wins over it.",
        "items": {
            "type": "object", "required": ["stream"], "additionalProperties": false,
            "properties": {
                "namespace": {"type": "string", "title": "Namespace"},
                "stream": {"type": "string", "title": "Stream"},
                "record_key": record_key(2),
                "ttl_seconds": ttl_seconds(3),
                "ttl_field": ttl_field(4),
                "value_format": value_format(5),
                "stream_maxlen": stream_maxlen(6)
            }
        }
    })
}

/// The `ttl_seconds` option (top level, and in each `stream_options` entry).
fn ttl_seconds(order: u32) -> Value {
    json!({
        "title": "Record expiry (seconds)", "type": "integer", "order": order,
        "minimum": 1, "maximum": crate::config::options::MAX_TTL_SECONDS,
        "description": "Every record key a sync writes expires this long after it was written (set in the same script call as the write; an upserted record gets a fresh expiry). Counters, indexes and tombstones never expire. With overwrite or a truncate refresh, records expire this long after the publish moves them into place. Absent: records never expire."
    })
}

/// The `ttl_field` option (top level, and in each `stream_options` entry).
fn ttl_field(order: u32) -> Value {
    json!({
        "title": "Record expiry from a field", "order": order,
        "oneOf": [
            {"type": "string", "title": "A top-level field", "minLength": 1},
            {"type": "array", "title": "A nested field", "minItems": 1, "items": {"type": "string", "minLength": 1}}
        ],
        "description": "A field of the records' data (a name, or a list of names for a nested field) that says when each record expires: epoch seconds, epoch milliseconds (numbers above 10^11) or an RFC 3339 timestamp. The expiry is set in the same script call as the write. A record whose moment has passed is not written (an append_dedup record then deletes its key, as a CDC delete would); a missing or null value falls back to ttl_seconds. With overwrite and truncate refreshes the publish sets each record's moment."
    })
}

/// The `value_format` option (top level, and in each `stream_options` entry).
fn value_format(order: u32) -> Value {
    json!({
        "title": "Value format", "type": "string", "order": order,
        "enum": ["hash", "fields", "string", "stream"], "default": "hash",
        "description": "How records are stored. hash (the default, the Java layout): a hash with _airbyte_ab_id, _airbyte_emitted_at and _airbyte_data (the record's JSON text). fields: a hash with _airbyte_ab_id, _airbyte_emitted_at and one field per top-level data field (strings as text, numbers as written, objects and arrays as JSON, null fields left out). string: a string key holding the data's JSON text. stream: one Redis stream at <namespace>:<stream>, one entry per record (fields _airbyte_data, _airbyte_emitted_at). A stream keeps the format it was first written in: another one is refused before any data moves, except by an overwrite, which replaces every record and may change the format. Every format works with every sync mode, except that stream is neither upserted (append_dedup) nor keyed by primary key, and string is not keyed by primary key (record_key primary_key)."
    })
}

/// The `stream_maxlen` option (top level, and in each `stream_options` entry).
fn stream_maxlen(order: u32) -> Value {
    json!({
        "title": "Redis stream length limit", "type": "integer", "order": order, "minimum": 1,
        "description": "For value_format stream: trim the Redis stream to about this many entries as records are added (XADD MAXLEN ~). Absent: never trimmed."
    })
}

/// The `record_key` option (top level, and in each `stream_options` entry).
fn record_key(order: u32) -> Value {
    json!({
        "title": "Record key", "type": "string", "order": order,
        "enum": ["sequence", "primary_key"], "default": "sequence",
        "description": "Where records live. sequence: <namespace>:<stream>:<id> with ids from the stream's counter (the Java layout; append_dedup streams keep a primary-key index). primary_key: <namespace>:<stream>:<pk field>:<value>[:<pk field>:<value>…] (%, :, { and } percent-encoded), one key per primary key, no counter: an upsert is one write, a CDC delete one DEL; needs a primary key, and in append mode the last write wins."
    })
}

fn topology() -> Value {
    json!({
        "title": "Topology", "type": "object", "order": 20,
        "description": "Where the data goes: the host above, the master Redis Sentinel names (it follows failovers), or every master of a Redis Cluster.",
        "oneOf": [
            {
                "title": "standalone", "additionalProperties": false,
                "description": "One server at host:port (the default).",
                "required": ["mode"],
                "properties": {"mode": {"type": "string", "const": "standalone", "enum": ["standalone"], "default": "standalone", "order": 0}}
            },
            {
                "title": "sentinel",
                "description": "A master found through Redis Sentinel; host and port are not used. Every reconnect asks the sentinels again, so a sync follows a failover.",
                "required": ["mode", "sentinels", "master_name"],
                "properties": {
                    "mode": {"type": "string", "const": "sentinel", "enum": ["sentinel"], "default": "sentinel", "order": 0},
                    "sentinels": {"type": "string", "title": "Sentinels", "description": "Comma-separated host:port of the sentinels (port 26379 when omitted).", "examples": ["10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379"], "order": 1},
                    "master_name": {"type": "string", "title": "Master name", "description": "The name the sentinels monitor the master under.", "examples": ["mymaster"], "order": 2},
                    "sentinel_username": {"type": "string", "title": "Sentinel username", "description": "ACL user on the sentinels, if they require one.", "order": 3},
                    "sentinel_password": {"type": "string", "title": "Sentinel password", "description": "Password of the sentinels (not of the master), if they require one.", "airbyte_secret": true, "order": 4}
                }
            },
            {
                "title": "cluster",
                "description": "A Redis Cluster: host and port (host may list several nodes, comma-separated) and the nodes below are seeds; the slot map says which master holds each stream. db must be 0; keys use the tagged layout.",
                "required": ["mode"],
                "properties": {
                    "mode": {"type": "string", "const": "cluster", "enum": ["cluster"], "default": "cluster", "order": 0},
                    "nodes": {"type": "string", "title": "Seed nodes", "description": "More nodes of the cluster, comma-separated host:port (port 6379 when omitted), asked when host:port does not answer.", "examples": ["10.0.0.5:6379,10.0.0.6:6379"], "order": 1}
                }
            }
        ]
    })
}

fn ssl_mode() -> Value {
    json!({
        "title": "SSL Modes", "type": "object", "order": 6,
        "description": "TLS verification mode.",
        "oneOf": [
            {
                "title": "disable", "additionalProperties": false,
                "description": "Kept from the Java connector: with ssl true this is TLS verified against the system's roots (what the Java connector did).",
                "required": ["mode"],
                "properties": {"mode": {"type": "string", "const": "disable", "enum": ["disable"], "default": "disable", "order": 0}}
            },
            {
                "title": "verify-full", "additionalProperties": false,
                "description": "TLS, verifying the server's certificate and name. Without ca_certificate the system's roots are trusted; the client certificate and key are needed only by servers that require them.",
                "required": ["mode"],
                "properties": {
                    "mode": {"type": "string", "const": "verify-full", "enum": ["verify-full"], "default": "verify-full", "order": 0},
                    "ca_certificate": {"type": "string", "title": "CA Certificate", "description": "CA certificate (PEM).", "airbyte_secret": true, "multiline": true, "order": 1},
                    "client_certificate": {"type": "string", "title": "Client Certificate", "description": "Client certificate (PEM).", "airbyte_secret": true, "multiline": true, "order": 2},
                    "client_key": {"type": "string", "title": "Client Key", "description": "Client key (PEM).", "airbyte_secret": true, "multiline": true, "order": 3},
                    "client_key_password": {"type": "string", "title": "Client key password", "description": "Password of an encrypted (PKCS#8) client key.", "airbyte_secret": true, "order": 4}
                }
            },
            {
                "title": "encrypted-unverified", "additionalProperties": false,
                "description": "TLS WITHOUT verifying the server (self-signed servers): encrypted, but anyone on the path can impersonate the server.",
                "required": ["mode"],
                "properties": {"mode": {"type": "string", "const": "encrypted-unverified", "enum": ["encrypted-unverified"], "default": "encrypted-unverified", "order": 0}}
            }
        ]
    })
}

fn tunnel_method() -> Value {
    let common = |method: &str| {
        json!({
            "tunnel_method": {"description": "Connect through a jump server tunnel host using username and ssh key", "type": "string", "const": method, "order": 0},
            "tunnel_host": {"title": "SSH Tunnel Jump Server Host", "description": "Hostname of the jump server host that allows inbound ssh tunnel.", "type": "string", "order": 1},
            "tunnel_port": {"title": "SSH Connection Port", "description": "Port on the proxy/jump server that accepts inbound ssh connections.", "type": "integer", "minimum": 0, "maximum": 65536, "default": 22, "examples": ["22"], "order": 2},
            "tunnel_user": {"title": "SSH Login Username", "description": "OS-level username for logging into the jump server host.", "type": "string", "order": 3}
        })
    };
    let mut key_auth = common("SSH_KEY_AUTH");
    key_auth["ssh_key"] = json!({"title": "SSH Private Key", "description": "OS-level user account ssh key credentials in RSA PEM format ( created with ssh-keygen -t rsa -m PEM -f myuser_rsa )", "type": "string", "airbyte_secret": true, "multiline": true, "order": 4});
    key_auth["ssh_key_passphrase"] = json!({"title": "SSH Key Passphrase", "description": "Passphrase of the SSH private key, if it has one.", "type": "string", "airbyte_secret": true, "order": 5});
    let known_hosts = json!({"title": "Known hosts", "description": "OpenSSH known_hosts line(s) for the jump server (e.g. from ssh-keyscan). When set, its host key must match; when empty, the key is accepted and its fingerprint logged.", "type": "string", "multiline": true, "order": 6});
    key_auth["known_hosts"] = known_hosts.clone();
    let mut password_auth = common("SSH_PASSWORD_AUTH");
    password_auth["tunnel_user_password"] = json!({"title": "Password", "description": "OS-level password for logging into the jump server host", "type": "string", "airbyte_secret": true, "order": 4});
    password_auth["known_hosts"] = known_hosts;
    json!({
        "type": "object", "title": "SSH Tunnel Method",
        "description": "Whether to initiate an SSH tunnel before connecting to the database, and if so, which kind of authentication to use.",
        "oneOf": [
            {"title": "No Tunnel", "required": ["tunnel_method"], "properties": {"tunnel_method": {"description": "No ssh tunnel needed to connect to database", "type": "string", "const": "NO_TUNNEL", "order": 0}}},
            {"title": "SSH Key Authentication", "required": ["tunnel_method", "tunnel_host", "tunnel_port", "tunnel_user", "ssh_key"], "properties": key_auth},
            {"title": "Password Authentication", "required": ["tunnel_method", "tunnel_host", "tunnel_port", "tunnel_user", "tunnel_user_password"], "properties": password_auth}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every property whose name suggests a secret must be marked `airbyte_secret`.
    fn check_secrets(v: &Value, path: &str, found: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (name, p) in props {
                // `key_layout` and `record_key` name Redis keys, not keys to keep secret.
                let secretish = ["password", "key", "certificate"]
                    .iter()
                    .any(|w| name.contains(w))
                    && name != "key_layout"
                    && name != "record_key";
                if secretish && p.get("type") == Some(&json!("string")) {
                    assert_eq!(p.get("airbyte_secret"), Some(&json!(true)), "{path}.{name}");
                    found.push(name.clone());
                }
                check_secrets(p, &format!("{path}.{name}"), found);
            }
        }
        if let Some(alts) = v.get("oneOf").and_then(Value::as_array) {
            for alt in alts {
                check_secrets(alt, path, found);
            }
        }
    }

    #[test]
    fn secrets_are_marked() {
        let mut found = Vec::new();
        check_secrets(&spec()["connectionSpecification"], "", &mut found);
        for name in [
            "password",
            "ssh_key",
            "tunnel_user_password",
            "client_key",
            "client_key_password",
            "sentinel_password",
        ] {
            assert!(
                found.iter().any(|f| f == name),
                "{name} not found among {found:?}"
            );
        }
    }

    #[test]
    fn the_spec_offers_exactly_the_fields_the_config_reader_knows() {
        let props = spec()["connectionSpecification"]["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<std::collections::BTreeSet<_>>())
            .unwrap_or_default();
        let known: std::collections::BTreeSet<String> = crate::config::KNOWN_FIELDS
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(props, known, "spec properties vs config::KNOWN_FIELDS");
    }

    #[test]
    fn java_fields_are_kept() {
        let props = &spec()["connectionSpecification"]["properties"];
        for f in [
            "host",
            "port",
            "username",
            "password",
            "ssl",
            "ssl_mode",
            "cache_type",
            "tunnel_method",
            "db",
        ] {
            assert!(props.get(f).is_some(), "{f} missing");
        }
        let required = &spec()["connectionSpecification"]["required"];
        assert!(!required.as_array().unwrap().contains(&json!("username")));
        // A sentinel config has no host: the platform must not refuse it before `check`.
        assert!(!required.as_array().unwrap().contains(&json!("host")));
    }
}
