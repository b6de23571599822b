//! A TCP proxy that counts EVALSHA calls and how many were sent before any reply came back.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Counters {
    evalsha: AtomicU64,
    since_reply: AtomicU64,
    max_in_flight: AtomicU64,
}

/// The proxy; its threads stop on drop.
pub struct CountingProxy {
    port: u16,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

const PATTERN: &[u8] = b"EVALSHA";

impl CountingProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        pump(client, server, c.clone(), s.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingProxy {
            port,
            counters,
            stop,
        }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// EVALSHA calls forwarded to the server.
    pub fn evalsha_count(&self) -> u64 {
        self.counters.evalsha.load(Ordering::SeqCst)
    }

    /// The most EVALSHA calls forwarded while no reply had come back since the last one.
    pub fn max_in_flight(&self) -> u64 {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(client: TcpStream, server: TcpStream, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let (c_read, s_write) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let (s_read, c_write) = (server, client);
    let up = counters.clone();
    let stop_up = stop.clone();
    // client → server, counting EVALSHA (a pattern split across reads is caught by a kept tail).
    std::thread::spawn(move || {
        copy(c_read, s_write, &stop_up, |chunk, tail: &mut Vec<u8>| {
            let mut window = std::mem::take(tail);
            window.extend_from_slice(chunk);
            let n = window
                .windows(PATTERN.len())
                .filter(|w| *w == PATTERN)
                .count() as u64;
            if n > 0 {
                up.evalsha.fetch_add(n, Ordering::SeqCst);
                let now = up.since_reply.fetch_add(n, Ordering::SeqCst) + n;
                up.max_in_flight.fetch_max(now, Ordering::SeqCst);
            }
            let keep = window.len().min(PATTERN.len() - 1);
            *tail = window[window.len() - keep..].to_vec();
        });
    });
    // server → client: any reply bytes reset the running count.
    std::thread::spawn(move || {
        copy(s_read, c_write, &stop, |_, _| {
            counters.since_reply.store(0, Ordering::SeqCst);
        });
    });
}

fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    stop: &AtomicBool,
    mut seen: impl FnMut(&[u8], &mut Vec<u8>),
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail = Vec::new();
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Count before forwarding, so a reply cannot reset the count ahead of its request.
                seen(&buf[..n], &mut tail);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
