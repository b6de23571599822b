//! A real `sshd` on a free loopback port with its own host key, client keys and config in a temp dir.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The dedicated test user for password authentication.
pub const PASSWORD_USER: &str = "abtunnel";
/// Its password.
pub const PASSWORD: &str = "tunnel-pw-5517";
/// The passphrase of [`SshServer::encrypted_key`].
pub const KEY_PASSPHRASE: &str = "key-phrase-3390";

/// A running sshd; stopped on drop.
pub struct SshServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// A known_hosts line for it.
    pub known_hosts: String,
    /// A private key (RSA, PEM) authorized for root.
    pub key: String,
    /// A passphrase-protected private key authorized for root.
    pub encrypted_key: String,
    /// A valid private key that is not authorized (the bastion refuses it).
    pub stranger_key: String,
    _dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a setup command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path, kind: &[&str], passphrase: &str) {
    run(Command::new("ssh-keygen")
        .args(kind)
        .args(["-q", "-N", passphrase, "-f"])
        .arg(path));
}

fn ensure_password_user() {
    let exists = Command::new("id")
        .arg(PASSWORD_USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", PASSWORD_USER]));
    }
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD_USER}:{PASSWORD}\n").as_bytes())
        .expect("write chpasswd");
    assert!(child.wait().expect("chpasswd").success());
}

impl SshServer {
    /// Starts sshd with extra `sshd_config` lines (e.g. `AllowTcpForwarding no`).
    pub fn start(extra: &[&str]) -> Self {
        std::fs::create_dir_all("/run/sshd").expect("privilege separation dir");
        ensure_password_user();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"), &["-t", "ed25519"], "");
        keygen(
            &d.join("id_rsa"),
            &["-t", "rsa", "-b", "2048", "-m", "PEM"],
            "",
        );
        keygen(
            &d.join("id_rsa_enc"),
            &["-t", "rsa", "-b", "2048", "-m", "PEM"],
            KEY_PASSPHRASE,
        );
        keygen(&d.join("id_stranger"), &["-t", "ed25519"], "");
        let authorized = [d.join("id_rsa.pub"), d.join("id_rsa_enc.pub")]
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("pub key"))
            .collect::<String>();
        std::fs::write(d.join("authorized_keys"), authorized).expect("authorized_keys");
        for _ in 0..5 {
            let port = super::free_port();
            let mut config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {dir}/sshd.pid\nAuthorizedKeysFile {dir}/authorized_keys\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin yes\nLogLevel ERROR\n",
                hk = d.join("host_key").display(),
                dir = d.display()
            );
            for line in extra {
                config.push_str(line);
                config.push('\n');
            }
            if !extra.iter().any(|l| l.starts_with("AllowTcpForwarding")) {
                config.push_str("AllowTcpForwarding yes\n");
            }
            std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-f"])
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sshd (is openssh-server installed?)");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut banner = [0u8; 4];
                    if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                        up = true;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !up {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
            let mut parts = host_pub.split_whitespace();
            let known_hosts = format!(
                "[127.0.0.1]:{port} {} {}\n",
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("")
            );
            return SshServer {
                child,
                port,
                known_hosts,
                key: std::fs::read_to_string(d.join("id_rsa")).expect("key"),
                encrypted_key: std::fs::read_to_string(d.join("id_rsa_enc")).expect("key"),
                stranger_key: std::fs::read_to_string(d.join("id_stranger")).expect("key"),
                _dir: dir,
            };
        }
        panic!("sshd did not start");
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
