//! A TCP proxy that breaks connections after a chosen number of bytes, in either direction: it
//! closes them (FIN), resets them (RST), or stalls a direction and delivers its bytes late.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which way the bytes that trigger a fault flow.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Client → Redis (the fault falls in the middle of a request).
    Up,
    /// Redis → client (requests were applied; their replies are lost or late).
    Down,
}

/// What happens at the fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Both sockets are shut down (FIN).
    Drop,
    /// Both sockets are reset (RST, through SO_LINGER 0).
    Reset,
    /// The direction holds its bytes for this many milliseconds, then delivers them late and closes.
    Stall(u64),
}

/// A fault: once `after` bytes went `direction`, do `kind`.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Which way the counted bytes flow.
    pub direction: Direction,
    /// How many bytes pass before the fault.
    pub after: u64,
    /// What the fault is.
    pub kind: Kind,
}

/// Drops at the given points: each `(up, at)` is a fraction `at` of the request traffic
/// (`request_bytes`, about the input's size plus the setup's scripts) when `up`, else of the
/// reply traffic (`replies` bytes, small).
pub fn drops_at(points: &[(bool, f64)], request_bytes: usize, replies: usize) -> Vec<Cut> {
    points
        .iter()
        .map(|(up, at)| Cut {
            kind: Kind::Drop,
            direction: if *up { Direction::Up } else { Direction::Down },
            after: if *up {
                (at * request_bytes as f64) as u64
            } else {
                (at * replies as f64) as u64
            },
        })
        .collect()
}

/// The proxy: the i-th accepted connection gets the i-th fault (later ones pass untouched).
pub struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    faults_done: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub fn start(target_port: u16, cuts: Vec<Cut>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let faults_done = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, done, conns) = (stop.clone(), faults_done.clone(), connections.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let i = conns.fetch_add(1, Ordering::SeqCst);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        forward(
                            client,
                            server,
                            cuts.get(i).copied(),
                            done.clone(),
                            s.clone(),
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FaultProxy {
            port,
            stop,
            faults_done,
            connections,
        }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many faults happened.
    pub fn cuts(&self) -> u64 {
        self.faults_done.load(Ordering::SeqCst)
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn forward(
    client: TcpStream,
    server: TcpStream,
    cut: Option<Cut>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let broken = Arc::new(AtomicBool::new(false));
    let pairs = [
        (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
            true,
        ),
        (server, client, false),
    ];
    for (from, to, up) in pairs {
        let fault = cut.filter(|c| matches!(c.direction, Direction::Up) == up);
        let (done, stop, broken) = (done.clone(), stop.clone(), broken.clone());
        std::thread::spawn(move || pump(from, to, fault, &done, &stop, &broken));
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    fault: Option<Cut>,
    done: &AtomicU64,
    stop: &AtomicBool,
    broken: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut passed = 0u64;
    loop {
        if broken.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut n = n as u64;
                let hit = fault.filter(|f| passed + n >= f.after);
                if let Some(f) = hit {
                    n = f.after - passed;
                }
                if to.write_all(&buf[..n as usize]).is_err() {
                    break;
                }
                passed += n;
                if let Some(f) = hit {
                    done.fetch_add(1, Ordering::SeqCst);
                    let rest = buf[n as usize..].to_vec();
                    break_connection(from, to, f.kind, rest, broken);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    if broken.load(Ordering::SeqCst) {
        let _ = from.shutdown(Shutdown::Both);
    }
}

fn break_connection(
    mut from: TcpStream,
    mut to: TcpStream,
    kind: Kind,
    mut held: Vec<u8>,
    broken: &AtomicBool,
) {
    match kind {
        Kind::Stall(ms) => {
            // Hold what follows, deliver it late (after the client gave up), then close.
            let mut buf = vec![0u8; 64 * 1024];
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(ms) {
                match from.read(&mut buf) {
                    Ok(0) => std::thread::sleep(Duration::from_millis(10)),
                    Ok(n) => held.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            let _ = to.write_all(&held);
            std::thread::sleep(Duration::from_millis(100));
            broken.store(true, Ordering::SeqCst);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
        Kind::Reset => {
            broken.store(true, Ordering::SeqCst);
            for s in [&from, &to] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
        }
        Kind::Drop => {
            broken.store(true, Ordering::SeqCst);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}
