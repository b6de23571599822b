//! `spec` and `check` against real servers: every failure is one FAILED status naming the cause.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, RedisServer};

fn status(out: &common::RunOutput) -> (String, String) {
    let statuses = out.statuses();
    assert_eq!(
        statuses.len(),
        1,
        "exactly one CONNECTION_STATUS\n{}",
        out.dump()
    );
    assert_eq!(out.code, Some(0), "check exits 0\n{}", out.dump());
    let s = &statuses[0]["connectionStatus"];
    (
        s["status"].as_str().unwrap_or_default().to_string(),
        s["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn spec_is_one_message_with_java_fields_and_the_modes_that_work() {
    let out = common::spec();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.messages.len(), 1, "{}", out.dump());
    let spec = &out.messages[0]["spec"];
    assert_eq!(
        spec["supported_destination_sync_modes"],
        json!(["overwrite", "append", "append_dedup"])
    );
    assert_eq!(spec["supportsIncremental"], json!(true));
    let props = &spec["connectionSpecification"]["properties"];
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
        "connect_timeout_ms",
        "batch_size",
    ] {
        assert!(props.get(f).is_some(), "{f} missing from the spec");
    }
    assert_eq!(props["password"]["airbyte_secret"], json!(true));
}

#[test]
fn check_succeeds_and_leaves_no_probe_key() {
    let server = RedisServer::start();
    let (st, msg) = status(&common::check(&server.config()));
    assert_eq!(st, "SUCCEEDED", "{msg}");
    let mut con = server.conn();
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 0, "the write probe must remove its keys");
    let cached: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&destination_redis::scripts::APPEND_BATCH.sha)
        .query(&mut con)
        .unwrap();
    assert_eq!(cached, vec![1], "check loads the scripts");
}

#[test]
fn check_with_password_username_and_db() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let mut config = server.config();
    config["db"] = json!(3);
    let (st, msg) = status(&common::check(&config));
    assert_eq!(st, "SUCCEEDED", "{msg}");
    // A saved Java config: username "default" plus the password, string port and ssl.
    config["username"] = json!("default");
    config["port"] = json!(server.port().to_string());
    config["ssl"] = json!("false");
    config["cache_type"] = json!("hash");
    let (st, msg) = status(&common::check(&config));
    assert_eq!(st, "SUCCEEDED", "{msg}");
}

#[test]
fn check_wrong_password_is_failed_and_never_shows_it() {
    let server = RedisServer::start_with(&["--requirepass", "right-pw"]);
    let mut config = server.config();
    config["password"] = json!("wrong-pw-123");
    let out = common::check(&config);
    let (st, msg) = status(&out);
    assert_eq!(st, "FAILED");
    assert!(msg.contains("password"), "{msg}");
    assert!(
        !out.stdout.contains("wrong-pw-123") && !out.stderr.contains("wrong-pw-123"),
        "{}",
        out.dump()
    );
    config.as_object_mut().unwrap().remove("password");
    let (st, msg) = status(&common::check(&config));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("requires authentication"), "{msg}");
}

#[test]
fn check_password_against_passwordless_server_warns_but_succeeds() {
    let server = RedisServer::start();
    let mut config = server.config();
    config["password"] = json!("not-needed");
    let out = common::check(&config);
    let (st, msg) = status(&out);
    assert_eq!(st, "SUCCEEDED", "{msg}");
}

#[test]
fn check_closed_port_fails_fast() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let (st, msg) = status(&common::check(&json!({"host": "127.0.0.1", "port": port})));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("refused"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A port whose listener accepts (up to `connections`) and never answers, for 30 s.
fn silent_port(connections: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(connections) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    port
}

#[test]
fn check_silent_server_times_out_within_the_configured_timeout() {
    // The connect timeout bounds every reply of a check, and the message names it.
    let port = silent_port(4);
    let started = Instant::now();
    let config =
        json!({"host": "127.0.0.1", "port": port, "connect_timeout_ms": 500, "password": "x"});
    let (st, msg) = status(&common::check(&config));
    assert_eq!(st, "FAILED");
    assert!(
        msg.contains("did not answer in time") && msg.contains("connect_timeout_ms"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// `write` against a server that never answers: the reply timeout is waited once (a second wait
/// would end after the retry budget), and the message names `reply_timeout_ms`, which governs it.
#[test]
fn write_to_a_silent_server_waits_one_reply_timeout_and_names_it() {
    let port = silent_port(8);
    let config = json!({"host": "127.0.0.1", "port": port, "reply_timeout_ms": 2000, "retry_budget_ms": 3000});
    let started = Instant::now();
    let out = common::write_sync(&config, &common::catalog(&[(None, "s")]), "");
    let took = started.elapsed();
    out.assert_failed_with("transient_error", "did not answer in time");
    let message = out.traces()[0]["trace"]["error"]["message"].to_string();
    assert!(message.contains("reply_timeout_ms"), "{message}");
    assert!(!message.contains("connect_timeout_ms"), "{message}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "one wait of 2 s, not two: {took:?}"
    );
}

#[test]
fn check_unknown_host_names_the_host() {
    let (st, msg) = status(&common::check(
        &json!({"host": "no-such-host.invalid", "port": 6379}),
    ));
    assert_eq!(st, "FAILED");
    assert!(
        msg.contains("does not resolve") || msg.contains("no-such-host.invalid"),
        "{msg}"
    );
}

#[test]
fn check_acl_user_without_write_rights_fails() {
    let server = RedisServer::start();
    server.cli(&[
        "ACL",
        "SETUSER",
        "reader",
        "on",
        ">reader-pw",
        "~*",
        "+@read",
        "+@connection",
        "+@scripting",
    ]);
    let mut config = server.config();
    config["username"] = json!("reader");
    config["password"] = json!("reader-pw");
    let (st, msg) = status(&common::check(&config));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("permission"), "{msg}");
    let size = server.cli(&["DBSIZE"]);
    assert_eq!(size.trim(), "0", "a refused probe writes nothing");
}

#[test]
fn check_bad_config_fields_are_named() {
    for (config, field) in [
        (json!({"port": 6379}), "config.host"),
        (json!({"host": "127.0.0.1", "port": "abc"}), "config.port"),
        (
            json!({"host": "127.0.0.1", "port": 6379, "db": -2}),
            "config.db",
        ),
        (
            json!({"host": "127.0.0.1", "port": 6379, "cache_type": "list"}),
            "config.cache_type",
        ),
    ] {
        let (st, msg) = status(&common::check(&config));
        assert_eq!(st, "FAILED");
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let out = common::run(&["check", "--config", "/nonexistent/config.json"], "");
    let (st, msg) = status(&out);
    assert_eq!(st, "FAILED");
    assert!(msg.contains("/nonexistent/config.json"), "{msg}");
}

#[test]
fn check_db_out_of_range_names_db() {
    let server = RedisServer::start_with(&["--databases", "4"]);
    let mut config: Value = server.config();
    config["db"] = json!(9);
    let (st, msg) = status(&common::check(&config));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("\"db\""), "{msg}");
}

#[test]
fn a_server_at_its_maxclients_is_named_in_check_and_write() {
    let server = RedisServer::start_with(&["--maxclients", "1"]);
    // The one client the server accepts (once the start-up probe's connection is gone: bounded).
    let _held = (0..50)
        .find_map(|_| {
            let con = server.try_conn();
            if con.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            con
        })
        .expect("the one client the server accepts");
    let out = common::check(&server.config());
    let (status, message) = status(&out);
    assert_eq!(status, "FAILED");
    assert!(message.contains("max number of clients"), "{message}");
    assert!(message.contains("maxclients"), "{message}");
    let out = common::write_sync(
        &json!({"host": "127.0.0.1", "port": server.port(), "retry_budget_ms": 300}),
        &common::catalog(&[(None, "s")]),
        "",
    );
    out.assert_failed_with("transient_error", "max number of clients");
}

#[test]
fn a_server_that_does_not_speak_redis_is_named_as_such() {
    // An HTTP server's answer to anything, for 20 s at most.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok((mut c, _)) = listener.accept() {
                use std::io::{Read, Write};
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let config = json!({"host": "127.0.0.1", "port": port, "connect_timeout_ms": 2000});
    let (status, message) = status(&common::check(&config));
    assert_eq!(status, "FAILED");
    assert!(message.contains("is not a Redis server"), "{message}");
    let out = common::write_sync(&config, &common::catalog(&[(None, "s")]), "");
    out.assert_failed_with("config_error", "is not a Redis server");
}
