//! Unit tests of the config reader.

use super::*;
use serde_json::json;

fn settings(v: Value) -> Result<Settings, ConfigError> {
    match v {
        Value::Object(m) => Settings::from_map(&m),
        _ => panic!("not an object"),
    }
}

#[test]
fn saved_java_config_loads() {
    let s = settings(
        json!({"host": "localhost", "port": "6380", "username": "default",
        "password": "pw", "cache_type": "hash", "ssl": "false",
        "ssl_mode": {"mode": "disable"}, "extra": 1}),
    )
    .unwrap();
    assert_eq!(s.port, 6380);
    assert_eq!(s.username.as_deref(), Some("default"));
    assert_eq!(s.password.as_ref().map(Secret::expose), Some("pw"));
    assert_eq!(s.ignored_fields, vec!["extra".to_string()]);
    assert_eq!(s.batch_size.get(), DEFAULT_BATCH_SIZE);
}

#[test]
fn a_tunnel_block_without_its_discriminator_is_refused() {
    for tunnel in [
        json!({"tunnel_host": "bastion", "tunnel_user": "u", "ssh_key": "k"}),
        json!({"tunnel_method": 1, "tunnel_host": "bastion"}),
        json!({}),
    ] {
        let e = settings(json!({"host": "h", "tunnel_method": tunnel})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config.tunnel_method.tunnel_method:"),
            "{e}"
        );
    }
    let s = settings(json!({"host": "h", "tunnel_method": {"tunnel_method": "NO_TUNNEL"}}));
    assert!(s.is_ok());
}

#[test]
fn errors_in_nested_blocks_give_the_full_path() {
    let cases = [
        (
            json!({"host": "h", "topology": {"mode": "sentinel", "sentinels": [1], "master_name": "m"}}),
            "config.topology.sentinels:",
        ),
        (
            json!({"host": "h", "topology": {"mode": "sentinel", "sentinels": "s:1", "master_name": "m", "sentinel_password": {}}}),
            "config.topology.sentinel_password:",
        ),
        (
            json!({"host": "h", "topology": {"mode": "cluster", "nodes": "a:b:c"}}),
            "config.topology.nodes:",
        ),
        (
            json!({"host": "h", "tunnel_method": {"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "b", "tunnel_user": "u", "ssh_key": "k", "ssh_key_passphrase": []}}),
            "config.tunnel_method.ssh_key_passphrase:",
        ),
        (
            json!({"host": "h", "tunnel_method": {"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "b", "tunnel_user": "u", "ssh_key": "k", "tunnel_port": "x"}}),
            "config.tunnel_method.tunnel_port:",
        ),
    ];
    for (config, path) in cases {
        let e = settings(config).unwrap_err();
        assert!(e.to_string().starts_with(path), "{e}");
    }
}

#[test]
fn a_byte_order_mark_before_the_config_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, "\u{feff}{\"host\": \"h\", \"port\": 6380}").unwrap();
    assert_eq!(Settings::from_file(&path).unwrap().port, 6380);
}

#[test]
fn bad_fields_are_named() {
    let err = settings(json!({"host": "h", "port": 70000})).unwrap_err();
    assert!(err.to_string().starts_with("config.port:"), "{err}");
    let err = settings(json!({"port": 1})).unwrap_err();
    assert!(err.to_string().starts_with("config.host:"), "{err}");
    let err = settings(json!({"host": "h", "db": -1})).unwrap_err();
    assert!(err.to_string().starts_with("config.db:"), "{err}");
    let err = settings(json!({"host": "h", "batch_size": 0})).unwrap_err();
    assert!(err.to_string().starts_with("config.batch_size:"), "{err}");
    let err = settings(json!({"host": "h", "reply_timeout_ms": 50})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.reply_timeout_ms: must be between 100 and 3600000 milliseconds"
    );
    let err = settings(json!({"host": "h", "batch_linger_ms": -1})).unwrap_err();
    assert!(
        err.to_string().starts_with("config.batch_linger_ms:"),
        "{err}"
    );
    let err = settings(json!({"host": "h", "ssl": "maybe"})).unwrap_err();
    assert!(err.to_string().starts_with("config.ssl:"), "{err}");
    let err = settings(json!({"host": "h", "ssl": true, "ssl_mode": {"mode": "x"}})).unwrap_err();
    assert!(
        err.to_string().starts_with("config.ssl_mode.mode:"),
        "{err}"
    );
}

#[test]
fn secret_debug_hides_the_value() {
    let s = settings(json!({"host": "h", "password": "hunter2"})).unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn empty_username_and_password_mean_none() {
    let s = settings(json!({"host": "h", "username": "", "password": ""})).unwrap();
    assert!(s.username.is_none() && s.password.is_none());
}
