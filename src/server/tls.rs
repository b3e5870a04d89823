//! The optional TLS listener (`[tls] cert_path`, `key_path`): rustls with ALPN (`h2`, then
//! `http/1.1`), and a certificate that is reloaded without dropping a connection. Each
//! handshake asks [`Certificates`] for the current certificate, so a reload (on SIGHUP, or when
//! either file changes, checked every two seconds) applies to the next handshake while
//! established connections keep theirs. A reload that fails keeps the certificate in use and
//! logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// How often the files are checked for changes.
const POLL: Duration = Duration::from_secs(2);

/// The certificate handshakes use, replaceable while the proxy runs.
#[derive(Debug)]
pub(crate) struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Reads the certificate chain and key (PEM); an error names the file and what is wrong.
    pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let key = read(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Reads the files again; on success the next handshake uses them.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let key = read(&self.cert_path, &self.key_path)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        Ok(())
    }

    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert_path)?, m(&self.key_path)?))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn read(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert_path {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert_path {}: no certificate in the file",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("tls.key_path {}: {e}", key_path.display()))?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("tls.key_path {}: {e}", key_path.display()))?;
    let key = CertifiedKey::new(certs, signing);
    key.keys_match()
        .map_err(|e| format!("tls: the key does not match the certificate: {e}"))?;
    Ok(key)
}

/// The acceptor of the TLS listener: ALPN `h2` and `http/1.1`, certificates from `certs`.
pub(crate) fn acceptor(certs: Arc<Certificates>) -> tokio_rustls::TlsAcceptor {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Reloads the certificate on SIGHUP and when a file changes, until `shutdown`.
pub(crate) async fn watch_files(certs: Arc<Certificates>, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = certs.modified();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let why = tokio::select! {
            _ = shutdown.changed() => return,
            () = hangup => "SIGHUP",
            _ = tick.tick() => {
                let now = certs.modified();
                if now == seen {
                    continue;
                }
                seen = now;
                "the files changed"
            }
        };
        match certs.reload() {
            Ok(()) => tracing::info!(why, "TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(why, error = %e, "TLS certificate NOT reloaded; keeping the one in use")
            }
        }
    }
}
