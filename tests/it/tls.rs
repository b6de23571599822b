//! TLS against a real `redis-server --tls-port` with certificates made by the tests (rcgen): each mode
//! succeeding, each failure named in one sentence, a full write over TLS, no secret in any output.

use serde_json::{json, Value};

use crate::common::{self, catalog, legacy_state, record, Pki, RedisServer};

fn config(host: &str, port: u16, ssl_mode: Value) -> Value {
    json!({"host": host, "port": port, "ssl": true, "ssl_mode": ssl_mode})
}

fn with_timeout(mut c: Value) -> Value {
    c["connect_timeout_ms"] = json!(800);
    c
}

fn check_status(config: &Value) -> (String, String, common::RunOutput) {
    let out = common::check(config);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let s = &out.statuses()[0]["connectionStatus"];
    let status = s["status"].as_str().unwrap().to_string();
    let message = s["message"].as_str().unwrap_or_default().to_string();
    (status, message, out)
}

#[test]
fn verify_full_with_client_certificate_writes_everything() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let (server, port) = RedisServer::start_tls(&pki, "yes");
    let c = config(
        "localhost",
        port,
        json!({"mode": "verify-full", "ca_certificate": pki.ca, "client_certificate": pki.client_cert, "client_key": pki.client_key}),
    );
    let (status, message, _) = check_status(&c);
    assert_eq!(status, "SUCCEEDED", "{message}");
    let input: String = (0..20_000)
        .map(|i| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
        .collect::<String>()
        + &legacy_state("1")
        + "\n";
    let out = common::write_sync(&c, &catalog(&[(None, "s")]), &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 1);
    let (counter, records) = common::read_stream(&mut server.conn(), None, "s");
    assert_eq!(counter, Some(20_000));
    assert_eq!(records[19_999]["_airbyte_data"], r#"{"i":19999}"#);
    assert!(
        !out.stdout.contains("PRIVATE KEY") && !out.stderr.contains("PRIVATE KEY"),
        "key material leaked"
    );
}

#[test]
fn custom_ca_without_client_certificate() {
    let pki = Pki::new(&["localhost"]);
    let (_server, port) = RedisServer::start_tls(&pki, "no");
    let (status, message, _) = check_status(&config(
        "localhost",
        port,
        json!({"mode": "verify-full", "ca_certificate": pki.ca}),
    ));
    assert_eq!(status, "SUCCEEDED", "{message}");
}

#[test]
fn each_tls_failure_is_one_clear_sentence() {
    let pki = Pki::new(&["localhost"]);
    let other = Pki::new(&["localhost"]);
    let (plain, port) = RedisServer::start_tls(&pki, "yes");
    let cases = [
        (
            config(
                "localhost",
                port,
                json!({"mode": "verify-full", "ca_certificate": pki.ca}),
            ),
            "requires a TLS client certificate",
        ),
        (
            config(
                "localhost",
                port,
                json!({"mode": "verify-full", "ca_certificate": other.ca, "client_certificate": pki.client_cert, "client_key": pki.client_key}),
            ),
            "not signed by a trusted authority",
        ),
        (
            config(
                "127.0.0.1",
                port,
                json!({"mode": "verify-full", "ca_certificate": pki.ca, "client_certificate": pki.client_cert, "client_key": pki.client_key}),
            ),
            "not valid for the host name",
        ),
        (
            config("localhost", port, json!({"mode": "disable"})),
            "not signed by a trusted authority",
        ),
        (
            config(
                "localhost",
                port,
                json!({"mode": "verify-full", "ca_certificate": pki.ca, "client_certificate": other.client_cert, "client_key": other.client_key}),
            ),
            "refused",
        ),
        (
            with_timeout(config(
                "localhost",
                plain.port(),
                json!({"mode": "verify-full", "ca_certificate": pki.ca}),
            )),
            "TLS port",
        ),
        (
            config(
                "localhost",
                port,
                json!({"mode": "verify-full", "ca_certificate": "garbage"}),
            ),
            "config.ssl_mode.ca_certificate",
        ),
    ];
    for (c, needle) in cases {
        let (status, message, _) = check_status(&c);
        assert_eq!(status, "FAILED", "{needle}");
        assert!(
            message.contains(needle),
            "expected {needle:?} in: {message}"
        );
    }
}

#[test]
fn encrypted_but_unverified_connects_to_an_unknown_ca_and_says_so() {
    let pki = Pki::new(&["localhost"]);
    let (_server, port) = RedisServer::start_tls(&pki, "no");
    let (status, message, out) = check_status(&config(
        "127.0.0.1",
        port,
        json!({"mode": "encrypted-unverified"}),
    ));
    assert_eq!(status, "SUCCEEDED", "{message}");
    assert!(
        out.stdout.contains("NOT checked"),
        "a loud warning\n{}",
        out.dump()
    );
}

#[test]
fn encrypted_client_key_is_decrypted_and_a_wrong_password_is_named() {
    let pki = Pki::new(&["localhost"]);
    let (_server, port) = RedisServer::start_tls(&pki, "yes");
    let key = pki.encrypted_client_key("key-pass-9911");
    let mode = |password: &str| json!({"mode": "verify-full", "ca_certificate": pki.ca, "client_certificate": pki.client_cert, "client_key": key, "client_key_password": password});
    let (status, message, ok) = check_status(&config("localhost", port, mode("key-pass-9911")));
    assert_eq!(status, "SUCCEEDED", "{message}");
    let (status, message, bad) = check_status(&config("localhost", port, mode("wrong-pass-4242")));
    assert_eq!(status, "FAILED");
    assert!(message.contains("client_key_password"), "{message}");
    for out in [&ok, &bad] {
        for secret in ["key-pass-9911", "wrong-pass-4242", "PRIVATE KEY"] {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "{secret} leaked:\n{}",
                out.dump()
            );
        }
    }
}
