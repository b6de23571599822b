//! A TCP proxy that stops the destination at its k-th Redis command, as a crash would.
//!
//! It reads the client's RESP arrays and forwards whole commands only, counting them over every
//! connection. The k-th command is forwarded and given time to run on the server; from that moment
//! no reply reaches the client any more, every connection is closed, and new connections are
//! closed as soon as they are accepted. So the server has executed exactly the first k commands
//! (those of other connections in flight excepted) and the destination learns nothing more: it
//! fails the way it would fail on a dead link, and its next run must recover from that point.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Shared {
    /// Commands forwarded so far, over every connection.
    forwarded: Mutex<u64>,
    /// Forward this many commands, then stop everything.
    cut_after: u64,
    tripped: AtomicBool,
    stop: AtomicBool,
}

/// The proxy; its threads stop on drop.
pub struct CommandCutter {
    port: u16,
    shared: Arc<Shared>,
}

impl CommandCutter {
    /// Listens on a free loopback port, forwards to `127.0.0.1:target_port`, and stops after the
    /// `cut_after`-th command (`u64::MAX`: never, to count a whole run's commands).
    pub fn start(target_port: u16, cut_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind cutter");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            forwarded: Mutex::new(0),
            cut_after,
            tripped: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if s.tripped.load(Ordering::SeqCst) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        connect_pair(client, server, s.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        CommandCutter { port, shared }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Commands forwarded to the server so far.
    pub fn forwarded(&self) -> u64 {
        *self.shared.forwarded.lock().expect("lock")
    }

    /// Whether the cut happened.
    pub fn tripped(&self) -> bool {
        self.shared.tripped.load(Ordering::SeqCst)
    }
}

impl Drop for CommandCutter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn connect_pair(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (c_read, c_write) = (client.try_clone().expect("clone"), client);
    let (s_read, s_write) = (server.try_clone().expect("clone"), server);
    let up = shared.clone();
    std::thread::spawn(move || upstream(c_read, s_write, &up));
    std::thread::spawn(move || downstream(s_read, c_write, &shared));
}

/// The length of the first whole RESP array command in `buf`, if it is all there.
fn command_len(buf: &[u8]) -> Option<usize> {
    let (n, mut pos) = header(buf, 0, b'*')?;
    for _ in 0..n {
        let (len, after) = header(buf, pos, b'$')?;
        pos = after + len + 2;
        if pos > buf.len() {
            return None;
        }
    }
    Some(pos)
}

/// Reads `<kind><digits>\r\n` at `at`: the number and the position after the line.
fn header(buf: &[u8], at: usize, kind: u8) -> Option<(usize, usize)> {
    assert_eq!(
        *buf.get(at)?,
        kind,
        "the destination sends RESP arrays of bulk strings"
    );
    let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
    let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
    Some((n, end + 2))
}

fn upstream(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if shared.tripped.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        }
        let mut start = 0;
        while let Some(len) = command_len(&pending[start..]) {
            let mut forwarded = shared.forwarded.lock().expect("lock");
            if shared.tripped.load(Ordering::SeqCst) {
                break;
            }
            let last = *forwarded + 1 == shared.cut_after;
            if last {
                // No reply of this command (or of any other) reaches the client any more.
                shared.tripped.store(true, Ordering::SeqCst);
            }
            if to.write_all(&pending[start..start + len]).is_err() {
                break;
            }
            *forwarded += 1;
            start += len;
            if last {
                // Time for the server to run it (one short script call).
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
        }
        pending.drain(..start);
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn downstream(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if shared.tripped.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if shared.tripped.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                    break;
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
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
