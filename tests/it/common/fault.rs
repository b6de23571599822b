//! A TCP proxy that cuts connections after a chosen number of bytes, in either direction.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which way the bytes that trigger a cut flow.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Client → Redis (the cut falls in the middle of a request).
    Up,
    /// Redis → client (the request was applied; its reply is lost).
    Down,
}

/// A fault: cut a connection once `after` bytes went `direction`.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Which way the counted bytes flow.
    pub direction: Direction,
    /// How many bytes pass before the cut.
    pub after: u64,
}

/// The proxy: the i-th accepted connection gets the i-th cut (later ones pass untouched).
pub struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    cuts_done: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub fn start(target_port: u16, cuts: Vec<Cut>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let cuts_done = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, done, conns) = (stop.clone(), cuts_done.clone(), connections.clone());
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
            cuts_done,
            connections,
        }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many cuts happened.
    pub fn cuts(&self) -> u64 {
        self.cuts_done.load(Ordering::SeqCst)
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
    let cut_flag = Arc::new(AtomicBool::new(false));
    let pairs = [
        (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
            Direction::Up,
        ),
        (server, client, Direction::Down),
    ];
    for (from, to, dir) in pairs {
        let limit = cut.filter(|c| {
            matches!(
                (c.direction, dir),
                (Direction::Up, Direction::Up) | (Direction::Down, Direction::Down)
            )
        });
        let (done, stop, cut_flag) = (done.clone(), stop.clone(), cut_flag.clone());
        std::thread::spawn(move || pump(from, to, limit.map(|c| c.after), &done, &stop, &cut_flag));
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    limit: Option<u64>,
    done: &AtomicU64,
    stop: &AtomicBool,
    cut: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut passed = 0u64;
    loop {
        if cut.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut n = n as u64;
                let mut cutting = false;
                if let Some(limit) = limit {
                    if passed + n >= limit {
                        n = limit - passed;
                        cutting = true;
                    }
                }
                if to.write_all(&buf[..n as usize]).is_err() {
                    break;
                }
                passed += n;
                if cutting {
                    cut.store(true, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
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
    if cut.load(Ordering::SeqCst) {
        let _ = from.shutdown(Shutdown::Both);
    }
}
