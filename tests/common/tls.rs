//! Certificates made at test time (rcgen): a CA and a `localhost` leaf it signs, written as PEM
//! files for `[tls]`, `[upstream] ca_path` and the clients' trust stores.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA, and a server certificate for `localhost` and 127.0.0.1 it issued, on disk.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl TestPki {
    /// Writes `<name>-ca.pem`, `<name>-cert.pem` and `<name>-key.pem` into `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("lingua-proxy test CA {name}"),
        );
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let pki = Self {
            ca_pem: ca.pem(),
            ca_path: dir.join(format!("{name}-ca.pem")),
            cert_path: dir.join(format!("{name}-cert.pem")),
            key_path: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&pki.ca_path, &pki.ca_pem).unwrap();
        pki.install(&leaf.pem(), &leaf_key.serialize_pem());
        pki
    }

    /// Replaces the server's files (as an operator renewing a certificate would).
    pub fn install(&self, cert_pem: &str, key_pem: &str) {
        // Written beside, then renamed: the proxy never reads half a file.
        let tmp = self.cert_path.with_extension("tmp");
        std::fs::write(&tmp, cert_pem).unwrap();
        std::fs::rename(&tmp, &self.cert_path).unwrap();
        std::fs::write(&tmp, key_pem).unwrap();
        std::fs::rename(&tmp, &self.key_path).unwrap();
    }

    /// Puts `other`'s server certificate and key in place of this one's.
    pub fn install_from(&self, other: &TestPki) {
        let cert = std::fs::read_to_string(&other.cert_path).unwrap();
        let key = std::fs::read_to_string(&other.key_path).unwrap();
        self.install(&cert, &key);
    }

    /// A client that trusts this CA only.
    pub fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
    }
}
