//! TLS settings: which mode a config asks for, with its certificates validated once.
//!
//! The Java connector's fields keep working: `ssl: true` with `ssl_mode.mode = "verify-full"` and
//! PEM text in `ca_certificate`, `client_certificate`, `client_key`, `client_key_password`. What it got
//! wrong is fixed: `client_key_password` really decrypts an encrypted PKCS#8 key (in memory; nothing
//! is written to disk, nothing is global), the server's name is really verified, and the client
//! certificate is optional. `mode: "disable"` with `ssl: true` does what the Java connector really
//! did: TLS verified against the system's roots. `mode: "encrypted-unverified"` encrypts without
//! verifying the server (for self-signed servers), and says so loudly.

use super::pem;
use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfo, SecretDocument};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};

use super::fields::ConfigError;

/// How the connection is encrypted.
#[derive(Clone, PartialEq, Eq)]
pub enum Tls {
    /// Plain TCP.
    Off,
    /// TLS, the server's certificate chain and name verified.
    Verified {
        /// PEM of the CA(s) to trust; `None` trusts the system's roots.
        ca: Option<Vec<u8>>,
        /// The client certificate and (decrypted) key, for servers that require one.
        client: Option<ClientIdentity>,
    },
    /// TLS without any verification of the server (encrypted, not authenticated).
    Unverified,
}

/// A client certificate and its private key (PEM, unencrypted).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Certificate chain, PEM.
    pub cert: Vec<u8>,
    /// Private key, PEM; never shown.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tls::Off => f.write_str("Off"),
            Tls::Verified { ca, client } => f
                .debug_struct("Verified")
                .field("custom_ca", &ca.is_some())
                .field("client_certificate", &client.is_some())
                .finish(),
            Tls::Unverified => f.write_str("Unverified"),
        }
    }
}

fn err(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn text<'a>(mode: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ConfigError> {
    match mode.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(err(&format!("ssl_mode.{name}"), "must be a string")),
    }
}

/// The TLS mode of a config whose `ssl` is `ssl`, and warnings to log.
pub fn from_config(ssl: bool, ssl_mode: Option<&Value>) -> Result<(Tls, Vec<String>), ConfigError> {
    if !ssl {
        return Ok((Tls::Off, Vec::new()));
    }
    let empty = Map::new();
    let mode = match ssl_mode {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(err("ssl_mode", "must be an object with a \"mode\"")),
    };
    let mut warnings = Vec::new();
    let tls = match mode.get("mode").and_then(Value::as_str).unwrap_or("disable") {
        // What the Java connector really did with this label: TLS against the system's roots.
        "disable" => Tls::Verified { ca: None, client: None },
        "verify-full" => {
            // Pasted PEM is mended first (literal \n, spaces or no line breaks).
            let ca = text(mode, "ca_certificate")?
                .map(|pem| certificates("ssl_mode.ca_certificate", &pem::mend(pem)))
                .transpose()?;
            let cert = text(mode, "client_certificate")?.map(pem::mend);
            let key = text(mode, "client_key")?.map(pem::mend);
            let password = text(mode, "client_key_password")?;
            let client = match (cert, key) {
                (None, None) => None,
                (Some(_), None) => return Err(err("ssl_mode.client_key", "is needed with client_certificate")),
                (None, Some(_)) => return Err(err("ssl_mode.client_certificate", "is needed with client_key")),
                (Some(cert), Some(key)) => {
                    let cert = certificates("ssl_mode.client_certificate", &cert)?;
                    let key = private_key(&key, password, &mut warnings)?;
                    check_pair(&cert, &key)?;
                    Some(ClientIdentity { cert, key })
                }
            };
            Tls::Verified { ca, client }
        }
        "encrypted-unverified" => {
            warnings.push(
                "TLS without verification (ssl_mode encrypted-unverified): the connection is encrypted, but the server's identity is NOT checked; anyone on the path can impersonate it. Use verify-full with the server's CA to close that hole.".to_string(),
            );
            Tls::Unverified
        }
        other => {
            return Err(err(
                "ssl_mode.mode",
                format!("{other:?} is not a mode; use \"verify-full\", \"disable\" (TLS against the system's roots) or \"encrypted-unverified\""),
            ))
        }
    };
    Ok((tls, warnings))
}

/// Checks that `pem` holds at least one certificate, each a real one; returns the PEM bytes.
fn certificates(field: &str, pem: &str) -> Result<Vec<u8>, ConfigError> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        // The parser's words may quote the text: name the field only.
        let der = c.map_err(|_| {
            err(
                field,
                "is not valid PEM: expected -----BEGIN CERTIFICATE----- blocks of base64 text",
            )
        })?;
        rustls::RootCertStore::empty().add(der).map_err(|_| {
            err(
                field,
                "holds a CERTIFICATE block that is not a valid X.509 certificate (damaged or cut short)",
            )
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(err(
            field,
            "holds no certificate (expected PEM text with -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(pem.as_bytes().to_vec())
}

/// Checks, before any connection, that the client key is a usable key and belongs to the first
/// certificate of the client chain (both PEM, already checked to parse as PEM).
fn check_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), ConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| err("ssl_mode.client_certificate", "is not valid PEM"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| err("ssl_mode.client_key", "holds no usable private key"))?;
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(err(
            "ssl_mode.client_key",
            "does not belong to ssl_mode.client_certificate (their public keys differ): give the key the certificate was issued for",
        )),
        Err(rustls::Error::General(_)) => Err(err(
            "ssl_mode.client_key",
            "holds no usable private key: not an RSA, ECDSA or Ed25519 key, or damaged",
        )),
        Err(_) => Err(err(
            "ssl_mode.client_certificate",
            "is not a valid certificate for TLS client authentication",
        )),
    }
}

/// The client key as unencrypted PEM: decrypted with `password` when it is an encrypted PKCS#8 key.
fn private_key(
    pem: &str,
    password: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<u8>, ConfigError> {
    const FIELD: &str = "ssl_mode.client_key";
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let password = password.ok_or_else(|| {
            err(
                "ssl_mode.client_key_password",
                "is needed: the client key is encrypted",
            )
        })?;
        // Never the parser's words: they may quote the key.
        let (label, doc) = SecretDocument::from_pem(pem).map_err(|_| {
            err(
                FIELD,
                "is not valid PEM (an -----BEGIN ENCRYPTED PRIVATE KEY----- block of base64 text)",
            )
        })?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(err(FIELD, format!("holds a {label}, not a private key")));
        }
        let info = EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|_| err(FIELD, "is not an encrypted PKCS#8 key"))?;
        let key = info.decrypt(password).map_err(|_| {
            err(
                "ssl_mode.client_key_password",
                "does not decrypt the client key (wrong password, or an unsupported cipher)",
            )
        })?;
        let pem = key
            .to_pem("PRIVATE KEY", LineEnding::LF)
            .map_err(|_| err(FIELD, "could not be re-encoded after decryption"))?;
        return Ok(pem.as_bytes().to_vec());
    }
    if pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(err(
            FIELD,
            "is a traditionally encrypted key; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc`",
        ));
    }
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        err(
            FIELD,
            "holds no usable private key: expected a PEM block (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY) of base64 text",
        )
    })?;
    if password.is_some() {
        warnings.push("ssl_mode.client_key_password is set but the client key is not encrypted; the password is ignored.".into());
    }
    Ok(pem.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes() {
        assert_eq!(
            from_config(false, Some(&json!({"mode": "verify-full"})))
                .unwrap()
                .0,
            Tls::Off
        );
        assert_eq!(
            from_config(true, Some(&json!({"mode": "disable"})))
                .unwrap()
                .0,
            Tls::Verified {
                ca: None,
                client: None
            }
        );
        assert_eq!(
            from_config(true, None).unwrap().0,
            Tls::Verified {
                ca: None,
                client: None
            }
        );
        let (tls, warnings) =
            from_config(true, Some(&json!({"mode": "encrypted-unverified"}))).unwrap();
        assert_eq!(tls, Tls::Unverified);
        assert!(warnings[0].contains("NOT checked"));
        let e = from_config(true, Some(&json!({"mode": "prefer"}))).unwrap_err();
        assert!(e.to_string().starts_with("config.ssl_mode.mode:"), "{e}");
    }

    #[test]
    fn bad_pem_is_named() {
        let e = from_config(
            true,
            Some(&json!({"mode": "verify-full", "ca_certificate": "not a pem"})),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("config.ssl_mode.ca_certificate:"),
            "{e}"
        );
        let e = from_config(
            true,
            Some(&json!({"mode": "verify-full", "client_key": "x"})),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config.ssl_mode.client_certificate:"),
            "{e}"
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let tls = Tls::Verified {
            ca: None,
            client: Some(ClientIdentity {
                cert: b"CERT".to_vec(),
                key: b"SECRET-KEY".to_vec(),
            }),
        };
        assert!(!format!("{tls:?}").contains("SECRET"));
    }
}
