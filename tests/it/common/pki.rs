//! Test certificates made with rcgen: a CA, a server certificate and a client certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A CA with one server and one client certificate, as PEM text and as files in a temp dir.
pub struct Pki {
    /// CA certificate, PEM.
    pub ca: String,
    /// Server certificate, PEM.
    pub server_cert: String,
    /// Server key, PEM.
    pub server_key: String,
    /// Client certificate, PEM.
    pub client_cert: String,
    /// Client key, PEM (PKCS#8, unencrypted).
    pub client_key: String,
    dir: tempfile::TempDir,
}

impl Pki {
    /// A PKI whose server certificate is valid for `names` (DNS names; "127.0.0.1" becomes an IP SAN).
    pub fn new(names: &[&str]) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // Distinct subjects: a certificate whose subject equals its issuer's looks self-issued to OpenSSL.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "destination-redis test CA");
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");

        let dns: Vec<String> = names
            .iter()
            .filter(|n| n.parse::<IpAddr>().is_err())
            .map(|n| n.to_string())
            .collect();
        let mut server = CertificateParams::new(dns).expect("server params");
        for n in names {
            if let Ok(ip) = n.parse::<IpAddr>() {
                server.subject_alt_names.push(SanType::IpAddress(ip));
            }
        }
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server
            .distinguished_name
            .push(DnType::CommonName, "destination-redis test server");
        let server_key = KeyPair::generate().expect("key");
        let server_cert = server.signed_by(&server_key, &ca).expect("server cert");

        let mut client = CertificateParams::new(vec!["client".to_string()]).expect("client params");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client
            .distinguished_name
            .push(DnType::CommonName, "destination-redis test client");
        let client_key = KeyPair::generate().expect("key");
        let client_cert = client.signed_by(&client_key, &ca).expect("client cert");

        let pki = Pki {
            ca: ca.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for (name, pem) in [
            ("ca.pem", &pki.ca),
            ("server.pem", &pki.server_cert),
            ("server.key", &pki.server_key),
            ("client.pem", &pki.client_cert),
            ("client.key", &pki.client_key),
        ] {
            std::fs::write(pki.dir.path().join(name), pem).expect("write pem");
        }
        pki
    }

    /// Path of a file written by [`Pki::new`]: `ca.pem`, `server.pem`, `server.key`, `client.pem`
    /// or `client.key`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client key encrypted as PKCS#8 (PBES2, AES-256-CBC) with `password`, by the openssl CLI.
    pub fn encrypted_client_key(&self, password: &str) -> String {
        let plain = self.file("client.key");
        let out = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout"])
            .arg(format!("pass:{password}"))
            .arg("-in")
            .arg(&plain)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("pem")
    }
}
