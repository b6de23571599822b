//! The config's `tunnel_method` block: the Java connector's SSH tunnel fields, plus `known_hosts`
//! and `ssh_key_passphrase`. A block whose discriminator is missing is refused (AUTH would otherwise
//! travel outside the tunnel the user asked for).

use serde_json::Value;

use super::fields::{field, int_field, string_field, ConfigError, Secret};

/// How an SSH tunnel authenticates.
#[derive(Clone, Debug)]
pub enum TunnelAuth {
    /// A private key (PEM or OpenSSH format), with its passphrase if it is encrypted.
    Key {
        /// The key text.
        key: Secret,
        /// Its passphrase.
        passphrase: Option<Secret>,
    },
    /// A password.
    Password(Secret),
}

/// The config's `tunnel_method`, validated (the Java connector's fields, plus `known_hosts` and
/// `ssh_key_passphrase`).
#[derive(Clone, Debug)]
pub struct TunnelSettings {
    /// The bastion's host.
    pub host: String,
    /// The bastion's SSH port.
    pub port: u16,
    /// The SSH user.
    pub user: String,
    /// How to authenticate.
    pub auth: TunnelAuth,
    /// OpenSSH known_hosts lines the bastion's key must match (None: accept it and log it).
    pub known_hosts: Option<String>,
}

pub(super) fn tunnel_settings(
    method: Option<&Value>,
) -> Result<Option<TunnelSettings>, ConfigError> {
    let Some(Value::Object(m)) = method else {
        return match method {
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(field("tunnel_method", "must be an object")),
        };
    };
    // Without its discriminator a tunnel block must not silently become a direct connection
    // (AUTH would then travel outside the tunnel the user asked for).
    let kind = match m.get("tunnel_method") {
        Some(Value::String(kind)) => kind.trim(),
        Some(_) => {
            return Err(field(
                "tunnel_method.tunnel_method",
                "must be a string: NO_TUNNEL, SSH_KEY_AUTH or SSH_PASSWORD_AUTH",
            ))
        }
        None => {
            return Err(field(
                "tunnel_method.tunnel_method",
                "is required: NO_TUNNEL, SSH_KEY_AUTH or SSH_PASSWORD_AUTH",
            ))
        }
    };
    if kind == "NO_TUNNEL" {
        return Ok(None);
    }
    let text = |name: &str| -> Result<String, ConfigError> {
        string_field(m, name)?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                field(
                    &format!("tunnel_method.{name}"),
                    "is required for an SSH tunnel",
                )
            })
    };
    let auth = match kind {
        "SSH_KEY_AUTH" => TunnelAuth::Key {
            key: Secret::new(text("ssh_key")?),
            passphrase: string_field(m, "ssh_key_passphrase")?
                .filter(|p| !p.is_empty())
                .map(Secret::new),
        },
        "SSH_PASSWORD_AUTH" => TunnelAuth::Password(Secret::new(
            string_field(m, "tunnel_user_password")?
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    field(
                        "tunnel_method.tunnel_user_password",
                        "is required for SSH_PASSWORD_AUTH",
                    )
                })?,
        )),
        other => {
            return Err(field(
                "tunnel_method.tunnel_method",
                &format!(
                    "{other:?} is not a method; use NO_TUNNEL, SSH_KEY_AUTH or SSH_PASSWORD_AUTH"
                ),
            ))
        }
    };
    let port = int_field(m, "tunnel_port")?.unwrap_or(22);
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| field("tunnel_method.tunnel_port", "must be between 1 and 65535"))?;
    if !cfg!(feature = "ssh-tunnel") {
        return Err(field(
            "tunnel_method",
            "SSH tunnels are not in this build (cargo feature ssh-tunnel); use NO_TUNNEL",
        ));
    }
    Ok(Some(TunnelSettings {
        host: text("tunnel_host")?,
        port,
        user: text("tunnel_user")?,
        auth,
        known_hosts: string_field(m, "known_hosts")?.filter(|k| !k.trim().is_empty()),
    }))
}
