//! A real Sentinel setup on loopback: one master, one replica, three sentinels (quorum 2), every
//! process on a free port in a temp dir, all stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::server::{free_port, RedisServer};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "destination-test";

/// One master, one replica and three sentinels.
pub struct SentinelSet {
    /// The two data servers; which one is the master changes with a failover.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<(Child, u16)>,
    /// Sentinels of [`SentinelSet::start_stray_sentinel`], apart from the set's.
    strays: Vec<(Child, u16)>,
    dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts the servers and the sentinels and waits until the sentinels see each other and the
    /// replica (so a failover can happen).
    pub fn start() -> Self {
        let master = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
        wait_for(Duration::from_secs(20), "the replica to sync", || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let mut set = SentinelSet {
            servers: vec![master, replica],
            sentinels: Vec::new(),
            strays: Vec::new(),
            dir,
        };
        let master_port = set.servers[0].port();
        for _ in 0..3 {
            let sentinel = set.start_sentinel(master_port);
            set.sentinels.push(sentinel);
        }
        wait_for(
            Duration::from_secs(30),
            "the sentinels to see each other and the replica",
            || {
                set.sentinel_cli(0, &["SENTINEL", "CKQUORUM", MASTER_NAME])
                    .starts_with("OK 3 usable")
                    && set
                        .sentinel_cli(0, &["SENTINEL", "REPLICAS", MASTER_NAME])
                        .contains(&set.servers[1].port().to_string())
            },
        );
        set
    }

    /// Starts one more sentinel that monitors [`MASTER_NAME`] at `master_port`, another server
    /// than the set's: it never hears of the set's failovers, so it keeps naming that server at
    /// config epoch 0, as a sentinel that missed the latest failover would. Returns its port.
    pub fn start_stray_sentinel(&mut self, master_port: u16) -> u16 {
        let stray = self.start_sentinel(master_port);
        let port = stray.1;
        self.strays.push(stray);
        port
    }

    /// A running sentinel monitoring [`MASTER_NAME`] at `master_port`, and its port.
    fn start_sentinel(&self, master_port: u16) -> (Child, u16) {
        for _ in 0..5 {
            let port = free_port();
            let conf = self.dir.path().join(format!("sentinel-{port}.conf"));
            let log = self.dir.path().join(format!("sentinel-{port}.log"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n",
                    dir = self.dir.path().display(),
                    log = log.display(),
                ),
            )
            .expect("sentinel config");
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if cli(port, &["PING"]).trim() == "PONG" {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                return (child, port);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("a sentinel did not start");
    }

    /// `host:port` of every sentinel, comma-separated (the config's `topology.sentinels`).
    pub fn addresses(&self) -> String {
        self.sentinels
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A destination config in sentinel mode (no `host`: the sentinels name the master).
    pub fn config(&self) -> Value {
        json!({"topology": {"mode": "sentinel", "sentinels": self.addresses(), "master_name": MASTER_NAME}})
    }

    /// redis-cli against sentinel `i`.
    pub fn sentinel_cli(&self, i: usize, args: &[&str]) -> String {
        cli(self.sentinels[i].1, args)
    }

    /// The port the sentinels currently name as the master's.
    pub fn master_port(&self) -> u16 {
        sentinel_named_port(self.sentinels[0].1)
    }

    /// The data server that is the master now.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port();
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .expect("the master is one of ours")
    }

    /// The data server `port` belongs to, mutably (to kill or restart it).
    pub fn server_mut(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .expect("one of ours")
    }

    /// Waits until the sentinels name a master other than `old` and it answers as a master.
    pub fn wait_for_new_master(&self, old: u16, within: Duration) -> u16 {
        let mut new = old;
        wait_for(within, "a new master", || {
            new = self.master_port();
            new != old && cli(new, &["ROLE"]).starts_with("master")
        });
        new
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (child, _) in self.sentinels.iter_mut().chain(&mut self.strays) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The master port the sentinel at `port` names for [`MASTER_NAME`].
pub fn sentinel_named_port(port: u16) -> u16 {
    let out = cli(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
    out.lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no master address: {out:?}"))
}

/// redis-cli against the server or sentinel at `port` on 127.0.0.1; its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Polls `ok` every 50 ms until it holds; panics naming `what` after `within`.
pub fn wait_for(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
