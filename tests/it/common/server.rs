//! A real `redis-server` on a free loopback port in a temp dir, stopped on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running redis-server.
pub struct RedisServer {
    child: Option<Running>,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    password: Option<String>,
    /// Whether a `-LOADING` reply counts as started (for tests of a server that is loading).
    accept_loading: bool,
}

/// How a server runs: a local process, or (version matrix) a container of the image `REDIS_IMAGE`.
enum Running {
    Process(Child),
    #[cfg(feature = "docker-tests")]
    Container(Box<super::container::RedisContainer>),
}

impl Running {
    /// Whether it is known to have exited.
    fn exited(&mut self) -> bool {
        match self {
            Running::Process(child) => matches!(child.try_wait(), Ok(Some(_))),
            #[cfg(feature = "docker-tests")]
            Running::Container(c) => c.exited(),
        }
    }

    /// SIGKILL, and wait until it is gone.
    fn kill(self) {
        match self {
            Running::Process(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            #[cfg(feature = "docker-tests")]
            Running::Container(c) => drop(c),
        }
    }
}

/// The image the servers of this test run come from (`REDIS_IMAGE`, e.g. `local/redis:bullseye`), or
/// None for the local `redis-server`.
fn redis_image() -> Option<String> {
    std::env::var("REDIS_IMAGE").ok().filter(|s| !s.is_empty())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The arguments that make a server listen on `tls_port` with the PKI's server certificate and CA.
fn tls_args(pki: &super::Pki, tls_port: u16) -> Vec<String> {
    let f = |n: &str| pki.file(n).display().to_string();
    vec![
        "--tls-port".to_string(),
        tls_port.to_string(),
        "--tls-cert-file".to_string(),
        f("server.pem"),
        "--tls-key-file".to_string(),
        f("server.key"),
        "--tls-ca-cert-file".to_string(),
        f("ca.pem"),
    ]
}

/// A free loopback port below 55536 whose cluster bus port (+10000) is free too.
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port > 55535 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    // Below the ephemeral range: try fixed candidates (bounded).
    (20000..30000)
        .step_by(7)
        .find(|p| {
            std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", *p + 10000)).is_ok()
        })
        .expect("a free cluster port")
}

impl RedisServer {
    /// Starts a server with default settings.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments (e.g. `["--requirepass", "pw"]`).
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_on(args, free_port)
    }

    /// Starts a cluster node (extra arguments as [`RedisServer::start_with`]): its port and the
    /// cluster bus port (port + 10000) are both free.
    pub fn start_cluster_node(args: &[&str]) -> Self {
        Self::start_on(args, free_cluster_port)
    }

    fn start_on(args: &[&str], pick: fn() -> u16) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let password = args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| args.get(i + 1))
            .cloned();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            args,
            password,
            accept_loading: false,
        };
        for _ in 0..5 {
            server.port = pick();
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!("redis-server did not start; log:\n{}", server.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Spawns on `self.port` and waits until it answers PING (false if the process exited).
    fn spawn_and_wait(&mut self) -> bool {
        let port = self.port.to_string();
        let dir = self.dir.path().display().to_string();
        let log = self.dir.path().join("redis.log").display().to_string();
        let mut args: Vec<String> = [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .chain(&["--dir", &dir, "--logfile", &log, "--daemonize", "no"])
        .map(|s| s.to_string())
        .collect();
        args.extend(self.args.iter().cloned());
        self.child =
            Some(match redis_image() {
                None => Running::Process(
                    Command::new("redis-server")
                        .args(&args)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn redis-server (is it installed?)"),
                ),
                #[cfg(feature = "docker-tests")]
                Some(image) => Running::Container(Box::new(
                    super::container::RedisContainer::start(&image, &args, self.dir.path()),
                )),
                #[cfg(not(feature = "docker-tests"))]
                Some(image) => {
                    panic!("REDIS_IMAGE={image} needs the tests built with --features docker-tests")
                }
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.exited() {
                    self.child = None;
                    return false;
                }
            }
            if self.pings() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            // +PONG, or -NOAUTH when a password is set: either way the server is up.
            Ok(n) if n > 0 => {
                buf[0] == b'+'
                    || buf[..n].starts_with(b"-NOAUTH")
                    || (self.accept_loading && buf[..n].starts_with(b"-LOADING"))
            }
            _ => false,
        }
    }

    /// Starts a server that also listens with TLS (certificates from `pki`; `client_certs` is
    /// `--tls-auth-clients`: "yes" or "no"); returns it and its TLS port. The plain port stays, for
    /// the tests' own reads.
    pub fn start_tls(pki: &super::Pki, client_certs: &str) -> (Self, u16) {
        let tls_port = free_port();
        let mut args = tls_args(pki, tls_port);
        args.extend(["--tls-auth-clients".to_string(), client_certs.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (Self::start_with(&args), tls_port)
    }

    /// Starts a cluster node (extra arguments as [`RedisServer::start_with`]) that also listens on a
    /// TLS port, returned, and speaks TLS on the cluster bus (`tls-cluster yes`, whose bus port is
    /// the TLS port + 10000: both are free). Clients are not asked for certificates, but the bus
    /// always asks its peers, so each node presents the client certificate (the server one is
    /// for server authentication only).
    pub fn start_tls_cluster_node(pki: &super::Pki, args: &[&str]) -> (Self, u16) {
        let tls_port = free_cluster_port();
        let f = |n: &str| pki.file(n).display().to_string();
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(tls_args(pki, tls_port));
        all.extend(
            [
                "--tls-client-cert-file",
                &f("client.pem"),
                "--tls-client-key-file",
                &f("client.key"),
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
                "--tls-auth-clients",
                "no",
            ]
            .map(String::from),
        );
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        (Self::start_on(&all, free_port), tls_port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// A connection (authenticated when the server has a password).
    pub fn conn(&self) -> redis::Connection {
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to test server");
        if let Some(pw) = &self.password {
            redis::cmd("AUTH")
                .arg(pw)
                .query::<()>(&mut con)
                .expect("AUTH");
        }
        con
    }

    /// A config for the destination pointing at this server.
    pub fn config(&self) -> Value {
        let mut c = json!({"host": "127.0.0.1", "port": self.port});
        if let Some(pw) = &self.password {
            c["password"] = json!(pw);
        }
        c
    }

    /// Whether the server process runs (it was not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A connection, or `None` when the server does not answer.
    pub fn try_conn(&self) -> Option<redis::Connection> {
        if !self.is_running() {
            return None;
        }
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .ok()?;
        con.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        if let Some(pw) = &self.password {
            redis::cmd("AUTH").arg(pw).query::<()>(&mut con).ok()?;
        }
        Some(con)
    }

    /// `redis-cli` aimed at the server (with its password).
    fn cli_command(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            cmd.args(["-a", pw, "--no-auth-warning"]);
        }
        cmd
    }

    /// Runs redis-cli against the server; its stdout, or `None` when it failed.
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        if !self.is_running() {
            return None;
        }
        let out = self.cli_command().args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs redis-cli against the server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self
            .cli_command()
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the server now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts the server again with extra arguments, returning as soon as it answers at all (even
    /// `-LOADING`, while it is still loading its data).
    pub fn restart_loading(&mut self, extra: &[&str]) {
        self.kill();
        let saved = self.args.clone();
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self.accept_loading = true;
        let up = self.spawn_and_wait();
        self.accept_loading = false;
        self.args = saved;
        assert!(up, "restart failed; log:\n{}", self.log());
    }

    /// Whether the server answers PING with `-LOADING` right now.
    pub fn is_loading(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok()
            && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"-LOADING"))
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn_and_wait(),
            "restart failed; log:\n{}",
            self.log()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
