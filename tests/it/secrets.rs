//! No secret in any output, in any form: every secret field, given right, wrong or malformed, goes
//! through `check` and `write`, and stdout and stderr (LOG, CONNECTION_STATUS, TRACE messages and
//! their internal messages) are searched for the secret as text, as a slice of its text, as its
//! bytes in decimal (a parser error's byte list) and in hex, and in base64.

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{self, catalog, legacy_state, record, Pki, RedisServer, RunOutput};

/// The ways a secret could show up in output.
fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut forms = vec![secret.to_string()];
    // Slices: a long secret (a key) leaks in parts too. Every third offset for base64's alignment.
    let slices: Vec<&[u8]> = if bytes.len() > 48 {
        let mid = bytes.len() / 2;
        // From the middle: a PEM key's armour (`-----BEGIN PRIVATE KEY-----`) is no secret.
        let late = bytes.len() * 3 / 4;
        vec![
            &bytes[mid..mid + 24],
            &bytes[mid + 1..mid + 25],
            &bytes[mid + 2..mid + 26],
            &bytes[late..late + 24],
        ]
    } else {
        vec![bytes]
    };
    for s in slices {
        forms.push(String::from_utf8_lossy(s).into_owned());
        let decimal: Vec<String> = s.iter().map(u8::to_string).collect();
        forms.push(decimal.join(", "));
        forms.push(decimal.join(","));
        forms.push(s.iter().map(|b| format!("{b:02x}")).collect());
        forms.push(s.iter().map(|b| format!("{b:02X}")).collect());
        forms.push(
            s.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(s);
        // Drop the padding and the last character, which depend on what follows the slice.
        forms.push(b64.trim_end_matches('=')[..b64.trim_end_matches('=').len() - 1].to_string());
    }
    forms.retain(|f| f.len() >= 8);
    forms
}

#[track_caller]
fn assert_hidden(out: &RunOutput, secrets: &[&str], what: &str) {
    for secret in secrets {
        for form in forms(secret) {
            assert!(
                !out.stdout.contains(&form) && !out.stderr.contains(&form),
                "{what}: a secret leaked as {form:?}\n{}",
                out.dump()
            );
        }
    }
}

fn input() -> String {
    record(None, "s", "{}", 1) + "\n" + &legacy_state("1") + "\n"
}

/// `check` and `write` with `config`; both outputs must hide `secrets`. Returns them.
fn both(config: &Value, secrets: &[&str], what: &str) -> (RunOutput, RunOutput) {
    let checked = common::check(config);
    assert_eq!(checked.code, Some(0), "{what}: {}", checked.dump());
    assert_hidden(&checked, secrets, &format!("check, {what}"));
    let written = common::write_sync(config, &catalog(&[(None, "s")]), &input());
    assert_hidden(&written, secrets, &format!("write, {what}"));
    (checked, written)
}

fn status(out: &RunOutput) -> &str {
    out.statuses()[0]["connectionStatus"]["status"]
        .as_str()
        .unwrap()
}

/// A PEM block with a line of its body left out: still PEM, no longer a key.
fn garbled(pem: &str) -> String {
    let mut lines: Vec<&str> = pem.lines().collect();
    lines.remove(lines.len() / 2);
    lines.join("\n")
}

#[test]
fn passwords_right_wrong_and_malformed_never_show() {
    let server = RedisServer::start_with(&["--requirepass", "the-real-pw-4242-xyz"]);
    let (checked, written) = both(
        &server.config(),
        &["the-real-pw-4242-xyz"],
        "right password",
    );
    assert_eq!(status(&checked), "SUCCEEDED");
    assert_eq!(written.code, Some(0), "{}", written.dump());
    for wrong in [
        "a-wrong-pw-1717-abc",
        "pw with spaces\nand a newline 99",
        "\"quoted\\\"pw-2323\"",
    ] {
        let mut config = server.config();
        config["password"] = json!(wrong);
        let (checked, written) = both(&config, &[wrong, "the-real-pw-4242-xyz"], "wrong password");
        assert_eq!(status(&checked), "FAILED");
        assert_eq!(written.code, Some(1));
    }
    // The sentinels' password, against a server that refuses it.
    let mut config = server.config();
    config["topology"] = json!({"mode": "sentinel", "sentinels": format!("127.0.0.1:{}", server.port()),
        "master_name": "m", "sentinel_password": "sentinel-pw-8080-q"});
    let (checked, _) = both(
        &config,
        &["sentinel-pw-8080-q", "the-real-pw-4242-xyz"],
        "sentinel password",
    );
    assert_eq!(status(&checked), "FAILED");
}

#[test]
fn tls_client_keys_pasted_on_one_line_work_and_bad_ones_never_show() {
    let pki = Pki::new(&["localhost"]);
    let (_server, port) = RedisServer::start_tls(&pki, "yes");
    let config = |key: &str, password: Option<&str>| {
        let mut mode = json!({"mode": "verify-full", "ca_certificate": pki.ca,
            "client_certificate": pki.client_cert, "client_key": key});
        if let Some(p) = password {
            mode["client_key_password"] = json!(p);
        }
        json!({"host": "localhost", "port": port, "ssl": true, "ssl_mode": mode, "connect_timeout_ms": 2000})
    };
    let key = pki.client_key.trim_end();
    // Pasted into a form: literal \n, spaces, or no line breaks at all. All work.
    for (form, pasted) in [
        ("literal \\n", key.replace('\n', "\\n")),
        ("spaces", key.replace('\n', " ")),
        ("no line breaks", key.replace('\n', "")),
    ] {
        let (checked, written) = both(&config(&pasted, None), &[key, &pasted], form);
        assert_eq!(status(&checked), "SUCCEEDED", "{form}: {}", checked.dump());
        assert_eq!(written.code, Some(0), "{form}: {}", written.dump());
    }
    // Broken keys: a config_error naming the field, never the key.
    let broken = garbled(key);
    for (form, bad) in [
        ("garbled", broken.clone()),
        ("garbled, one line", broken.replace('\n', " ")),
        ("cut short", key[..key.len() / 2].to_string()),
    ] {
        let (checked, written) = both(&config(&bad, None), &[key, &bad], form);
        assert_eq!(status(&checked), "FAILED", "{form}");
        let message = checked.statuses()[0]["connectionStatus"]["message"]
            .as_str()
            .unwrap();
        assert!(message.contains("client_key"), "{form}: {message}");
        assert_eq!(written.code, Some(1));
        let err = &written.traces()[0]["trace"]["error"];
        assert_eq!(err["failure_type"], "config_error", "{form}: {err}");
    }
    // An encrypted key with a wrong password, and a malformed encrypted key.
    let encrypted = pki.encrypted_client_key("key-pw-6161-right");
    let (checked, _) = both(
        &config(&encrypted, Some("key-pw-wrong-7272")),
        &[&encrypted, "key-pw-wrong-7272", "key-pw-6161-right", key],
        "wrong key password",
    );
    assert_eq!(status(&checked), "FAILED");
    let bad = garbled(encrypted.trim_end());
    let (checked, _) = both(
        &config(&bad, Some("key-pw-6161-right")),
        &[&bad, "key-pw-6161-right", key],
        "garbled encrypted key",
    );
    assert_eq!(status(&checked), "FAILED");
}

#[cfg(feature = "ssh-tunnel")]
#[test]
fn ssh_keys_passphrases_and_tunnel_passwords_never_show() {
    use crate::common::sshd::{SshServer, KEY_PASSPHRASE, PASSWORD, PASSWORD_USER};
    let ssh = SshServer::start(&[]);
    let server = RedisServer::start();
    let tunnel = |t: Value| {
        let mut c = server.config();
        c["tunnel_method"] = t;
        c
    };
    let key_auth = |key: &str, passphrase: Option<&str>| {
        let mut t = json!({"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "127.0.0.1",
            "tunnel_port": ssh.port, "tunnel_user": "root", "ssh_key": key});
        if let Some(p) = passphrase {
            t["ssh_key_passphrase"] = json!(p);
        }
        tunnel(t)
    };
    let key = ssh.key.trim_end();
    let (checked, _) = both(&key_auth(key, None), &[key], "right key");
    assert_eq!(status(&checked), "SUCCEEDED", "{}", checked.dump());
    let broken = garbled(key);
    let (checked, _) = both(&key_auth(&broken, None), &[key, &broken], "garbled key");
    assert_eq!(status(&checked), "FAILED");
    let (checked, _) = both(
        &key_auth(&broken.replace('\n', "\\n"), None),
        &[key, &broken],
        "garbled key, literal \\n",
    );
    assert_eq!(status(&checked), "FAILED");
    let encrypted = ssh.encrypted_key.trim_end();
    let (checked, _) = both(
        &key_auth(encrypted, Some("wrong-phrase-5151-z")),
        &[encrypted, "wrong-phrase-5151-z", KEY_PASSPHRASE],
        "wrong passphrase",
    );
    assert_eq!(status(&checked), "FAILED");
    let password_auth = |pw: &str| {
        tunnel(
            json!({"tunnel_method": "SSH_PASSWORD_AUTH", "tunnel_host": "127.0.0.1",
            "tunnel_port": ssh.port, "tunnel_user": PASSWORD_USER, "tunnel_user_password": pw}),
        )
    };
    let (checked, _) = both(
        &password_auth(PASSWORD),
        &[PASSWORD],
        "right tunnel password",
    );
    assert_eq!(status(&checked), "SUCCEEDED", "{}", checked.dump());
    let (checked, _) = both(
        &password_auth("wrong-tunnel-pw-3131"),
        &["wrong-tunnel-pw-3131", PASSWORD],
        "wrong tunnel password",
    );
    assert_eq!(status(&checked), "FAILED");
}
