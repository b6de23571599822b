//! SSH tunnels through a real sshd on loopback: key (plain and passphrase-protected) and password
//! auth, host keys, a refused forward, an unreachable bastion, 100,000 records with batches in flight,
//! TLS through the tunnel, and no secret in any output.

use serde_json::{json, Value};

use crate::common::sshd::{SshServer, KEY_PASSPHRASE, PASSWORD, PASSWORD_USER};
use crate::common::{self, catalog, free_port, legacy_state, record, Pki, RedisServer};

fn key_tunnel(
    ssh: &SshServer,
    key: &str,
    passphrase: Option<&str>,
    known_hosts: Option<&str>,
) -> Value {
    let mut t = json!({"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "127.0.0.1", "tunnel_port": ssh.port,
        "tunnel_user": "root", "ssh_key": key});
    if let Some(p) = passphrase {
        t["ssh_key_passphrase"] = json!(p);
    }
    if let Some(k) = known_hosts {
        t["known_hosts"] = json!(k);
    }
    t
}

fn through(server: &RedisServer, tunnel: Value) -> Value {
    let mut c = server.config();
    c["tunnel_method"] = tunnel;
    c
}

fn status(config: &Value) -> (String, String, common::RunOutput) {
    let out = common::check(config);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let s = &out.statuses()[0]["connectionStatus"];
    (
        s["status"].as_str().unwrap().into(),
        s["message"].as_str().unwrap_or_default().into(),
        out,
    )
}

fn assert_no_secrets(out: &common::RunOutput) {
    for secret in [
        PASSWORD,
        KEY_PASSPHRASE,
        "PRIVATE KEY",
        "wrong-phrase-1",
        "wrong-pw-2",
    ] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{secret} leaked\n{}",
            out.dump()
        );
    }
}

#[test]
fn key_auth_with_a_pinned_host_key_writes_100k_records() {
    let ssh = SshServer::start(&[]);
    let server = RedisServer::start();
    let config = through(
        &server,
        key_tunnel(&ssh, &ssh.key, None, Some(&ssh.known_hosts)),
    );
    let (st, msg, out) = status(&config);
    assert_eq!(st, "SUCCEEDED", "{msg}");
    assert_no_secrets(&out);
    let proxy_free = config.clone();
    let input: String = (0..100_000)
        .map(|i| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
        .collect::<String>()
        + &legacy_state("1")
        + "\n";
    let out = common::write_sync(&proxy_free, &catalog(&[(None, "s")]), &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_no_secrets(&out);
    let (counter, records) = common::read_stream(&mut server.conn(), None, "s");
    assert_eq!(counter, Some(100_000));
    assert_eq!(records[99_999]["_airbyte_data"], r#"{"i":99999}"#);
    // The records went through the bastion: without it, the same config cannot reach Redis.
    drop(ssh);
    let out = common::write_sync(
        &proxy_free,
        &catalog(&[(None, "s")]),
        &(record(None, "s", "{}", 1) + "\n"),
    );
    assert_eq!(out.code, Some(1));
    let message = out.traces()[0]["trace"]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("Could not reach the SSH bastion"),
        "{message}"
    );
    assert_eq!(
        common::read_stream(&mut server.conn(), None, "s").0,
        Some(100_000)
    );
}

#[test]
fn passphrase_key_and_password_auth_and_their_failures() {
    let ssh = SshServer::start(&[]);
    let server = RedisServer::start();
    let ok = through(
        &server,
        key_tunnel(&ssh, &ssh.encrypted_key, Some(KEY_PASSPHRASE), None),
    );
    let (st, msg, out) = status(&ok);
    assert_eq!(st, "SUCCEEDED", "{msg}");
    assert!(
        out.stdout.contains("SHA256:"),
        "the unpinned host key's fingerprint is logged\n{}",
        out.dump()
    );
    assert_no_secrets(&out);
    let (st, msg, out) = status(&through(
        &server,
        key_tunnel(&ssh, &ssh.encrypted_key, Some("wrong-phrase-1"), None),
    ));
    assert_eq!(st, "FAILED");
    assert!(
        msg.contains("could not be read") && msg.contains("tunnel_method.ssh_key_passphrase"),
        "a wrong passphrase is named, not blamed on the bastion: {msg} {}",
        out.dump()
    );
    assert_no_secrets(&out);
    // A key cut short (as when pasted in part) is named as the key, not as a refusal.
    let half = &ssh.key[..ssh.key.len() / 2];
    let (st, msg, out) = status(&through(&server, key_tunnel(&ssh, half, None, None)));
    assert_eq!(st, "FAILED");
    assert!(
        msg.contains("tunnel_method.ssh_key could not be read") && !msg.contains("refused"),
        "{msg}"
    );
    assert_no_secrets(&out);
    // A key the bastion does not know is the bastion's refusal.
    let (st, msg, _) = status(&through(
        &server,
        key_tunnel(&ssh, &ssh.stranger_key, None, None),
    ));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("refused user"), "{msg}");
    let password = |pw: &str| {
        json!({"tunnel_method": "SSH_PASSWORD_AUTH", "tunnel_host": "127.0.0.1", "tunnel_port": ssh.port,
            "tunnel_user": PASSWORD_USER, "tunnel_user_password": pw})
    };
    let (st, msg, out) = status(&through(&server, password(PASSWORD)));
    assert_eq!(st, "SUCCEEDED", "{msg}");
    assert_no_secrets(&out);
    let (st, msg, out) = status(&through(&server, password("wrong-pw-2")));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("tunnel_user_password"), "{msg}");
    assert_no_secrets(&out);
}

#[test]
fn host_key_mismatch_refused_forward_and_unreachable_bastion() {
    let ssh = SshServer::start(&[]);
    let other = SshServer::start(&[]);
    let server = RedisServer::start();
    let wrong_hosts = other
        .known_hosts
        .replace(&format!("]:{}", other.port), &format!("]:{}", ssh.port));
    let (st, msg, _) = status(&through(
        &server,
        key_tunnel(&ssh, &ssh.key, None, Some(&wrong_hosts)),
    ));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("does not match"), "{msg}");

    // A valid key that the bastion does not authorize (the other server's).
    let (st, msg, _) = status(&through(
        &server,
        key_tunnel(&ssh, &other.key, None, Some(&ssh.known_hosts)),
    ));
    assert_eq!(st, "FAILED");
    assert!(
        msg.contains("refused user") && msg.contains("ssh_key"),
        "{msg}"
    );

    let no_forward = SshServer::start(&["AllowTcpForwarding no"]);
    let (st, msg, _) = status(&through(
        &server,
        key_tunnel(&no_forward, &no_forward.key, None, None),
    ));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("refused to forward"), "{msg}");

    let mut closed = key_tunnel(&ssh, &ssh.key, None, None);
    closed["tunnel_port"] = json!(free_port());
    let (st, msg, _) = status(&through(&server, closed));
    assert_eq!(st, "FAILED");
    assert!(msg.contains("Could not reach the SSH bastion"), "{msg}");
}

#[test]
fn tls_through_the_tunnel() {
    let ssh = SshServer::start(&[]);
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let (server, tls_port) = RedisServer::start_tls(&pki, "no");
    let mut config = through(
        &server,
        key_tunnel(&ssh, &ssh.key, None, Some(&ssh.known_hosts)),
    );
    config["port"] = json!(tls_port);
    config["ssl"] = json!(true);
    config["ssl_mode"] = json!({"mode": "verify-full", "ca_certificate": pki.ca});
    let (st, msg, _) = status(&config);
    assert_eq!(st, "SUCCEEDED", "{msg}");
    let input: String = (0..5000)
        .map(|i| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
        .collect();
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        common::read_stream(&mut server.conn(), None, "s").0,
        Some(5000)
    );
}
