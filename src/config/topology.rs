//! The config's `topology`: one server (`standalone`, the default), a master found through Redis
//! Sentinel (`sentinel`), or a Redis Cluster found through seed nodes (`cluster`).

use serde_json::{Map, Value};

use super::fields::{field, string_field, ConfigError, Secret};

/// Port of a sentinel given without one.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Where the master is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// `host`/`port` is the server.
    Standalone,
    /// The sentinels name the master; `host`/`port` are not used.
    Sentinel(SentinelSettings),
    /// A Redis Cluster: `host`/`port` (and these extra seed nodes) lead to it; every master is used.
    Cluster(ClusterSettings),
}

/// `{"mode": "cluster", "nodes": "host:port,…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Seed nodes besides `host`/`port`, asked in this order.
    pub nodes: Vec<(String, u16)>,
}

/// `{"mode": "sentinel", "sentinels": "host:port,…", "master_name": "…", "sentinel_username"?,
/// "sentinel_password"?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// Sentinel addresses, asked in this order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// ACL user on the sentinels, if they need one.
    pub username: Option<String>,
    /// Password of the sentinels (not of the master), if they need one.
    pub password: Option<Secret>,
}

impl SentinelSettings {
    /// The sentinels as the user wrote them, for messages.
    pub fn list(&self) -> String {
        self.sentinels
            .iter()
            .map(|(h, p)| join_host_port(h, *p))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Validates the `topology` field (absent or null: standalone).
pub fn from_config(value: Option<&Value>) -> Result<Topology, ConfigError> {
    let m: &Map<String, Value> = match value {
        None | Some(Value::Null) => return Ok(Topology::Standalone),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(field("topology", "must be an object with a \"mode\"")),
    };
    let mode = string_field(m, "mode")?.unwrap_or_else(|| "standalone".into());
    match mode.trim() {
        "standalone" => Ok(Topology::Standalone),
        "sentinel" => sentinel(m).map(Topology::Sentinel),
        "cluster" => Ok(Topology::Cluster(ClusterSettings {
            nodes: host_list(m, "nodes", 6379, "topology.nodes")?,
        })),
        other => Err(field(
            "topology.mode",
            &format!("{other:?} is not a mode; use \"standalone\", \"sentinel\" or \"cluster\""),
        )),
    }
}

/// The comma-separated `host:port` list in field `key` of `m` (absent: empty).
fn host_list(
    m: &Map<String, Value>,
    key: &str,
    default_port: u16,
    name: &str,
) -> Result<Vec<(String, u16)>, ConfigError> {
    parse_list(
        &string_field(m, key)?.unwrap_or_default(),
        default_port,
        name,
    )
}

/// `"host:port, host, [v6]:port"` as addresses; a bad entry is named in the error of field `name`.
pub fn parse_list(
    list: &str,
    default_port: u16,
    name: &str,
) -> Result<Vec<(String, u16)>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            parse_host_port(s, default_port).ok_or_else(|| {
                field(
                    name,
                    &format!("{s:?} is not host:port (e.g. \"10.0.0.5:{default_port},10.0.0.6:{default_port}\")"),
                )
            })
        })
        .collect()
}

fn sentinel(m: &Map<String, Value>) -> Result<SentinelSettings, ConfigError> {
    let sentinels = host_list(m, "sentinels", DEFAULT_SENTINEL_PORT, "topology.sentinels")?;
    if sentinels.is_empty() {
        return Err(field(
            "topology.sentinels",
            "is required in sentinel mode: a comma-separated list of sentinel host:port",
        ));
    }
    let master_name = string_field(m, "master_name")?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            field(
                "topology.master_name",
                "is required in sentinel mode: the name the sentinels monitor the master under",
            )
        })?;
    Ok(SentinelSettings {
        sentinels,
        master_name,
        username: string_field(m, "sentinel_username")?.filter(|u| !u.is_empty()),
        password: string_field(m, "sentinel_password")?
            .filter(|p| !p.is_empty())
            .map(Secret::new),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok().filter(|p| *p > 0)?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// `host:port`, with IPv6 addresses in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sentinel_config_is_parsed_and_checked() {
        let t = from_config(Some(
            &json!({"mode": "sentinel", "sentinels": "a:1, [::1]:2,b",
            "master_name": "m", "sentinel_password": "pw"}),
        ))
        .unwrap();
        let Topology::Sentinel(s) = t else {
            panic!("not sentinel")
        };
        assert_eq!(
            s.sentinels,
            [("a".into(), 1), ("::1".into(), 2), ("b".into(), 26379)]
        );
        assert_eq!(s.master_name, "m");
        assert_eq!(s.list(), "a:1, [::1]:2, b:26379");
        assert_eq!(from_config(None).unwrap(), Topology::Standalone);
        assert_eq!(
            from_config(Some(&json!({"mode": "cluster", "nodes": "a:7001, b"}))).unwrap(),
            Topology::Cluster(ClusterSettings {
                nodes: vec![("a".into(), 7001), ("b".into(), 6379)]
            })
        );
        for (bad, named) in [
            (
                json!({"mode": "sentinel", "master_name": "m"}),
                "topology.sentinels",
            ),
            (
                json!({"mode": "sentinel", "sentinels": "a:x", "master_name": "m"}),
                "topology.sentinels",
            ),
            (
                json!({"mode": "sentinel", "sentinels": "a"}),
                "topology.master_name",
            ),
            (
                json!({"mode": "cluster", "nodes": "a:1,b:x"}),
                "topology.nodes",
            ),
            (json!({"mode": "ring"}), "topology.mode"),
            (json!("sentinel"), "topology"),
        ] {
            let err = from_config(Some(&bad)).unwrap_err().to_string();
            assert!(err.contains(named), "{bad}: {err}");
        }
    }
}
