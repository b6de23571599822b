//! Making a connection to Redis: TCP or TLS (rustls) with timeouts, AUTH in the form the server
//! accepts, SELECT.
//!
//! AUTH rules: no password means no AUTH; a username sends the two-argument (ACL) form and falls
//! back to the one-argument form when the server is older than 6.0; a password sent to a server
//! that has none is accepted with a warning (saved Java configs carry one). Every failure becomes a
//! [`Failure`] through [`classify`].

pub mod cluster;
pub mod nodes;
pub mod sentinel;
#[cfg(feature = "ssh-tunnel")]
pub mod tunnel;

use std::time::Duration;

use redis::{
    Client, ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};

pub use crate::classify::{classify, Context};
use crate::config::tls::Tls;
use crate::config::topology::Topology;
use crate::config::{Secret, Settings, Target};
use crate::error::Failure;

/// The route to Redis: directly, or through an SSH tunnel that lives as long as this value.
pub struct Route {
    /// Where the configured server is reached: `host`/`port`, or the tunnel's local port. (In
    /// sentinel mode the sentinels name the master; in cluster mode the slot map names the nodes.)
    pub entry: Target,
    /// Things the user should hear about the route.
    pub warnings: Vec<String>,
    #[cfg(feature = "ssh-tunnel")]
    _tunnel: Option<tunnel::Tunnel>,
}

/// Opens the tunnel when the config has one; the returned entry connects through it.
pub fn route(settings: &Settings) -> Result<Route, Failure> {
    #[cfg(feature = "ssh-tunnel")]
    if let Some(t) = &settings.tunnel {
        let tunnel = tunnel::open(t, &settings.host, settings.port, settings.connect_timeout)?;
        return Ok(Route {
            entry: Target::through_tunnel(settings, tunnel.local_port),
            warnings: tunnel.warnings.clone(),
            _tunnel: Some(tunnel),
        });
    }
    Ok(Route {
        entry: Target::configured(settings),
        warnings: Vec::new(),
        #[cfg(feature = "ssh-tunnel")]
        _tunnel: None,
    })
}

/// A ready connection, and what the user should hear about how it was made.
pub struct Connected {
    /// The connection, authenticated, on the configured database.
    pub con: redis::Connection,
    /// Warnings to log (e.g. a password the server does not need).
    pub warnings: Vec<String>,
}

/// Connects to `to` (TLS as configured), authenticates, checks in sentinel mode that it is a
/// master, and selects the database. Replies are awaited at most `reply_timeout`.
pub fn connect(
    settings: &Settings,
    to: &Target,
    reply_timeout: Duration,
) -> Result<Connected, Failure> {
    let ctx = Context::at(settings, to, "while connecting");
    let client = client(settings, to).map_err(|e| classify(&e, &ctx))?;
    let mut con = client
        .get_connection_with_timeout(settings.connect_timeout)
        .map_err(|e| classify(&e, &ctx.clone().connecting()))?;
    con.set_read_timeout(Some(reply_timeout))
        .and_then(|()| con.set_write_timeout(Some(reply_timeout)))
        .map_err(|e| classify(&e, &ctx))?;
    let mut warnings = Vec::new();
    let auth = Context::at(settings, to, "authenticating");
    authenticate(
        &mut con,
        settings.username.as_ref(),
        settings.password.as_ref(),
        &auth,
        &mut warnings,
    )?;
    if let Topology::Sentinel(_) = settings.topology {
        sentinel::ensure_master(&mut con, &ctx)?;
    }
    if settings.db != 0 {
        redis::cmd("SELECT")
            .arg(settings.db)
            .query::<()>(&mut con)
            .map_err(|e| classify(&e, &Context::at(settings, to, "selecting the database")))?;
    }
    // Lets operators see the destination in CLIENT LIST; refused by some ACLs, which is harmless.
    // A server at its maxclients answers the first command with its refusal and hangs up: that
    // refusal is the one to report, not the lost connection that follows. A server that does not
    // answer at all is reported now (the next command would only wait as long again).
    let named = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("destination-redis")
        .query::<()>(&mut con);
    if let Err(e) = &named {
        if e.to_string().contains("max number of clients") || e.is_timeout() || e.is_io_error() {
            return Err(classify(e, &ctx));
        }
    }
    // A connection holding megabytes of pipelined batches must not be the one the server evicts
    // when clients use too much memory (Redis 7+); older servers and ACLs refuse: harmless. Only
    // asked of a server that answered like Redis (the next command reports one that does not).
    if named.is_ok() {
        let _ = redis::cmd("CLIENT")
            .arg("NO-EVICT")
            .arg("on")
            .query::<()>(&mut con);
    }
    Ok(Connected { con, warnings })
}

/// A client for `to` in the configured TLS mode.
fn client(settings: &Settings, to: &Target) -> redis::RedisResult<Client> {
    let (host, port) = (to.host.clone(), to.port);
    let addr = match &settings.tls {
        Tls::Off => ConnectionAddr::Tcp(host, port),
        Tls::Verified { .. } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        },
        Tls::Unverified => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: true,
            tls_params: None,
        },
    };
    let info = addr
        .into_connection_info()?
        .set_redis_settings(RedisConnectionInfo::default().set_skip_set_lib_name());
    match &settings.tls {
        Tls::Verified { ca, client } => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: client.as_ref().map(|c| ClientTlsConfig {
                    client_cert: c.cert.clone(),
                    client_key: c.key.clone(),
                }),
                root_cert: ca.clone(),
            },
        ),
        _ => Client::open(info),
    }
}

/// AUTH in the form the server accepts (none without a password); `ctx` names the server.
fn authenticate(
    con: &mut redis::Connection,
    username: Option<&String>,
    password: Option<&Secret>,
    ctx: &Context,
    warnings: &mut Vec<String>,
) -> Result<(), Failure> {
    let Some(password) = password else {
        return Ok(());
    };
    let one_arg =
        |con: &mut redis::Connection| redis::cmd("AUTH").arg(password.expose()).query::<()>(con);
    let result = match username {
        Some(user) => {
            let two = redis::cmd("AUTH")
                .arg(user)
                .arg(password.expose())
                .query::<()>(con);
            match two {
                Err(e) if detail_has(&e, "wrong number of arguments") => {
                    warnings.push(format!(
                        "The server at {} is older than Redis 6 and has no ACL users; the username {user:?} is ignored.",
                        ctx.address
                    ));
                    one_arg(con)
                }
                other => other,
            }
        }
        None => one_arg(con),
    };
    match result {
        Err(e)
            if detail_has(&e, "without any password configured")
                || detail_has(&e, "no password is set") =>
        {
            warnings.push(format!(
                "The server at {} has no password, but one is configured; it was not needed.",
                ctx.address
            ));
            Ok(())
        }
        other => other.map_err(|e| classify(&e, ctx)),
    }
}

fn detail_has(err: &redis::RedisError, needle: &str) -> bool {
    err.to_string().contains(needle)
}
