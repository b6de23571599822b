//! SSH tunnels (ssh2): a local ephemeral loopback port forwarded to Redis as the bastion sees it.
//!
//! One SSH session per tunnel, in non-blocking mode: ssh2 guards every call with one session lock,
//! and a blocking read on one channel would hold it while another waits to write (a deadlock under
//! pipelined traffic). Each forwarded connection gets a pump thread that moves bytes both ways and
//! never blocks on the session. Keepalives keep a long sync's session open. The bastion's host key
//! is checked against `known_hosts` when given; otherwise its fingerprint is logged so it can be
//! pinned. A forward the bastion refuses is reported as that, not as a Redis error.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use ssh2::{CheckResult, HashType, KnownHostFileKind, MethodType, Session};

use crate::config::{Secret, TunnelAuth, TunnelSettings};
use crate::error::Failure;

/// A running tunnel; it stops when dropped.
pub struct Tunnel {
    /// The local loopback port that leads to Redis.
    pub local_port: u16,
    /// Things the user should hear (the host key's fingerprint when it was not pinned).
    pub warnings: Vec<String>,
    stop: Arc<AtomicBool>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

const LIBSSH2_ERROR_EAGAIN: i32 = -37;

/// The ciphers offered to the bastion, best first: AES-GCM (OpenSSL's, on the CPU's AES
/// instructions) before chacha20-poly1305 (libssh2's first choice, its own portable code; the
/// tunnel wrote 1.14× faster with AES-GCM), then every other cipher libssh2 knows, in its own
/// order, so that no bastion it could talk to before is refused now (those libssh2 was built
/// without are left out by libssh2).
const CIPHERS: &str =
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,\
aes256-ctr,aes192-ctr,aes128-ctr,aes256-cbc,rijndael-cbc@lysator.liu.se,aes192-cbc,aes128-cbc,\
blowfish-cbc,arcfour128,arcfour,cast128-cbc,3des-cbc";

/// Opens a tunnel through `t` to `remote_host:remote_port` (as the bastion sees it).
pub fn open(
    t: &TunnelSettings,
    remote_host: &str,
    remote_port: u16,
    timeout: Duration,
) -> Result<Tunnel, Failure> {
    let bastion = format!("{}:{}", t.host, t.port);
    let addr = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| Failure::config(format!("The SSH bastion host {:?} does not resolve: check \"tunnel_method.tunnel_host\".", t.host), e))?
        .next()
        .ok_or_else(|| Failure::config(format!("The SSH bastion host {:?} has no address.", t.host), "no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        Failure::transient(format!("Could not reach the SSH bastion at {bastion}: {e}. Check tunnel_host and tunnel_port."), &e)
    })?;
    // Pipelined calls end in packets shorter than a segment: Nagle would hold each such tail
    // until the bastion acknowledges the last segment (a delayed ACK, up to 40 ms).
    let _ = tcp.set_nodelay(true);
    let mut sess =
        Session::new().map_err(|e| Failure::system("Could not start an SSH session.", e))?;
    // Pipelined calls end in packets shorter than a segment: Nagle must not hold them back.
    let _ = tcp.set_nodelay(true);
    // The pumps re-arm quick ACKs on it (see `wait_for_io`).
    let ssh_socket = Arc::new(
        tcp.try_clone()
            .map_err(|e| Failure::system("Could not share the SSH connection's socket.", e))?,
    );
    sess.set_tcp_stream(tcp);
    sess.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
    for way in [MethodType::CryptCs, MethodType::CryptSc] {
        // Best effort: libssh2's own order stands where this one cannot be set.
        let _ = sess.method_pref(way, CIPHERS);
    }
    sess.handshake().map_err(|e| {
        Failure::transient(
            format!("The SSH handshake with {bastion} failed: is it an SSH server?"),
            e,
        )
    })?;

    let mut warnings = Vec::new();
    let (key, _) = sess
        .host_key()
        .ok_or_else(|| Failure::system("The SSH bastion sent no host key.", "no host key"))?;
    let fingerprint = sess
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", STANDARD_NO_PAD.encode(h)))
        .unwrap_or_else(|| "unknown".into());
    match &t.known_hosts {
        Some(lines) => {
            let mut kh = sess.known_hosts().map_err(|e| Failure::system("Could not read known_hosts.", e))?;
            kh.read_str(lines, KnownHostFileKind::OpenSSH)
                .map_err(|e| Failure::config("tunnel_method.known_hosts is not in OpenSSH known_hosts format.", e))?;
            match kh.check_port(&t.host, t.port, key) {
                CheckResult::Match => {}
                CheckResult::Mismatch => {
                    return Err(Failure::config(
                        format!("The SSH bastion's host key ({fingerprint}) does not match tunnel_method.known_hosts: the host key changed, or someone is in between. Verify it before updating known_hosts."),
                        "host key mismatch",
                    ))
                }
                CheckResult::NotFound | CheckResult::Failure => {
                    return Err(Failure::config(
                        format!("tunnel_method.known_hosts has no key for {bastion} (its key is {fingerprint}): add the bastion's line, e.g. from ssh-keyscan -p {} {}.", t.port, t.host),
                        "host key not found",
                    ))
                }
            }
        }
        None => warnings.push(format!(
            "The SSH bastion {bastion} presented host key {fingerprint}; it was not checked. Set tunnel_method.known_hosts to pin it."
        )),
    }

    let auth = match &t.auth {
        TunnelAuth::Key { key, passphrase } => {
            let pem = key.expose().replace("\\n", "\n");
            sess.userauth_pubkey_memory(
                &t.user,
                None,
                &pem,
                passphrase.as_ref().map(Secret::expose),
            )
        }
        TunnelAuth::Password(p) => sess.userauth_password(&t.user, p.expose()),
    };
    // libssh2 reads the key itself: LIBSSH2_ERROR_FILE (a key it cannot read) and
    // LIBSSH2_ERROR_KEYFILE_AUTH_FAILED (a wrong passphrase) are this side's, not a refusal.
    if let (Err(e), TunnelAuth::Key { passphrase, .. }) = (&auth, &t.auth) {
        if KEY_UNREADABLE
            .map(ssh2::ErrorCode::Session)
            .contains(&e.code())
        {
            let fix = if passphrase.is_some() {
                "check that tunnel_method.ssh_key is the whole private key (OpenSSH or PEM, with its BEGIN and END lines) and that tunnel_method.ssh_key_passphrase is its passphrase"
            } else {
                "check that tunnel_method.ssh_key is the whole private key (OpenSSH or PEM, with its BEGIN and END lines); if the key is encrypted, set tunnel_method.ssh_key_passphrase"
            };
            return Err(Failure::config(
                format!("The SSH key in tunnel_method.ssh_key could not be read here (the bastion did not refuse it): {fix}."),
                format!("libssh2 error {}", e.message()),
            ));
        }
    }
    if auth.is_err() || !sess.authenticated() {
        let what = match t.auth {
            TunnelAuth::Key { .. } => "ssh_key (and its passphrase)",
            TunnelAuth::Password(_) => "tunnel_user_password",
        };
        let cause = auth
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "not authenticated".into());
        return Err(Failure::config(
            format!(
                "The SSH bastion {bastion} refused user {:?}: check tunnel_user and {what}.",
                t.user
            ),
            cause,
        ));
    }

    // One probe channel: a forward the bastion refuses (AllowTcpForwarding no, PermitOpen) shows here.
    match sess.channel_direct_tcpip(remote_host, remote_port, None) {
        Ok(mut ch) => {
            let _ = ch.close();
        }
        Err(e) if e.message().contains("prohibited") || e.message().contains("refused") || e.to_string().contains("prohibited") => {
            return Err(Failure::config(
                format!("The SSH bastion {bastion} refused to forward to {remote_host}:{remote_port} (AllowTcpForwarding or PermitOpen on the bastion): allow the forward, or check host and port as the bastion sees them."),
                e,
            ))
        }
        Err(e) => {
            return Err(Failure::transient(
                format!("The SSH bastion {bastion} could not open a connection to {remote_host}:{remote_port}: check host and port as the bastion sees them."),
                e,
            ))
        }
    }

    sess.set_keepalive(false, 30);
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Failure::system("Could not open the tunnel's local port.", e))?;
    let local_port = listener
        .local_addr()
        .map_err(|e| Failure::system("No local tunnel port.", e))?
        .port();
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::system("Could not set up the tunnel's local port.", e))?;
    sess.set_blocking(false);
    let stop = Arc::new(AtomicBool::new(false));
    let (remote, stop2) = (remote_host.to_string(), stop.clone());
    std::thread::spawn(move || accept_loop(listener, sess, ssh_socket, remote, remote_port, stop2));
    Ok(Tunnel {
        local_port,
        warnings,
        stop,
    })
}

/// libssh2's codes for a key it could not read (LIBSSH2_ERROR_FILE) or decrypt
/// (LIBSSH2_ERROR_KEYFILE_AUTH_FAILED).
const KEY_UNREADABLE: [std::os::raw::c_int; 2] = [-16, -48];

fn accept_loop(
    listener: TcpListener,
    sess: Session,
    ssh_socket: Arc<TcpStream>,
    host: String,
    port: u16,
    stop: Arc<AtomicBool>,
) {
    let mut last_keepalive = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((tcp, _)) => {
                let (sess, ssh, host, stop) =
                    (sess.clone(), ssh_socket.clone(), host.clone(), stop.clone());
                std::thread::spawn(move || pump(sess, &ssh, tcp, &host, port, &stop));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        if last_keepalive.elapsed() > Duration::from_secs(10) {
            let _ = sess.keepalive_send();
            last_keepalive = Instant::now();
        }
    }
}

/// Moves bytes between a local connection and a new channel to Redis until either side ends.
fn pump(
    sess: Session,
    ssh: &TcpStream,
    mut tcp: TcpStream,
    host: &str,
    port: u16,
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let mut ch = loop {
        match sess.channel_direct_tcpip(host, port, None) {
            Ok(ch) => break ch,
            Err(e)
                if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
                    && started.elapsed() < Duration::from_secs(30) =>
            {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(_) => return,
        }
    };
    if tcp.set_nonblocking(true).is_err() {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    let (mut client_done, mut eof_sent) = (false, false);
    while !stop.load(Ordering::SeqCst) {
        let mut progress = false;
        if up.is_empty() && !client_done {
            match tcp.read(&mut buf) {
                Ok(0) => client_done = true,
                Ok(n) => {
                    up.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => client_done = true,
            }
        }
        if !up.is_empty() {
            match ch.write(&up) {
                Ok(n) => {
                    up.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if client_done && up.is_empty() && !eof_sent {
            eof_sent = ch.send_eof().is_ok();
        }
        if down.is_empty() {
            match ch.read(&mut buf) {
                Ok(0) if ch.eof() => break,
                Ok(0) => {}
                Ok(n) => {
                    down.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if !down.is_empty() {
            match tcp.write(&down) {
                Ok(n) => {
                    down.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if client_done && eof_sent && down.is_empty() && ch.eof() {
            break;
        }
        if !progress {
            wait_for_io(&sess, ssh, &tcp, !down.is_empty());
        }
    }
    let _ = ch.close();
}

/// Sleeps until the local socket or the SSH socket (`ssh`, the session's) has something to do
/// (at most 20 ms).
///
/// First it asks for quick ACKs on the SSH socket: a pump waits when the channel's window is spent
/// or the replies are all read, and then what it waits for, the bastion's window adjust or next
/// reply, is a small packet that the bastion's Nagle holds back until its last one is
/// acknowledged; a delayed ACK (up to 40 ms on Linux) made every such wait a stall. Measured with
/// `TUNNEL=1 bash scripts/bench-ab.sh`, this and the cipher order took the tunnel from 0.43 of the
/// plain connection's speed to 0.85.
fn wait_for_io(sess: &Session, ssh: &TcpStream, tcp: &TcpStream, tcp_writable: bool) {
    // Best effort (the kernel leaves quick-ACK mode on its own, hence every time).
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(ssh).set_tcp_quickack(true);
    #[cfg(not(target_os = "linux"))]
    let _ = ssh;
    use std::os::unix::io::AsRawFd;
    let ssh_events = match sess.block_directions() {
        ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both => {
            libc::POLLIN | libc::POLLOUT
        }
        _ => libc::POLLIN,
    };
    let tcp_events = if tcp_writable {
        libc::POLLIN | libc::POLLOUT
    } else {
        libc::POLLIN
    };
    let mut fds = [
        libc::pollfd {
            fd: tcp.as_raw_fd(),
            events: tcp_events,
            revents: 0,
        },
        libc::pollfd {
            fd: sess.as_raw_fd(),
            events: ssh_events,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two pollfd structs that outlives the call.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20);
    }
}
