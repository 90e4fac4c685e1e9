//! rustls configurations, built once at start-up: the upstream client's (web PKI roots plus an
//! optional extra CA file, verification always on), and servers' (the inbound listener, with
//! optional client-certificate authentication and certificates reloaded when their files change;
//! the sandbox).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::cause::BoxError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trusts the Mozilla roots bundled by `webpki-roots`, plus every certificate in `extra_ca`.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, BoxError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        add_certs(&mut roots, path)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration from a PEM certificate chain and a PEM private key (the sandbox).
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, BoxError> {
    let cert = Arc::new(ReloadingCert::load(cert_file, key_file)?);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Inbound TLS for the proxy listener: the certificate (reloadable) and, when `client_ca` is
/// given, client-certificate verification against it, required or optional.
pub fn inbound_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
    client_auth_required: bool,
) -> Result<Arc<ServerConfig>, BoxError> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            add_certs(&mut roots, ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier =
                if client_auth_required { verifier.build()? } else { verifier.allow_unauthenticated().build()? };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The DNS names and SPIFFE ids (subject alternative names) of the client certificate, if one
/// was presented.
pub fn peer_names(conn: &ServerConnection) -> Vec<String> {
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else { return Vec::new() };
    let mut names: Vec<String> = match webpki::EndEntityCert::try_from(cert) {
        Ok(end) => end.valid_dns_names().map(str::to_owned).collect(),
        Err(_) => return Vec::new(),
    };
    names.extend(crate::policy::spiffe_ids(cert));
    names
}

/// A certificate and key that are re-read when their files change, so a rotated certificate
/// (cert-manager, a Kubernetes secret mount) is served without a restart.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    modified: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, BoxError> {
        let key = certified_key(cert_file, key_file)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: ArcSwap::from_pointee(key),
            modified: Mutex::new((modified(cert_file), modified(key_file))),
        })
    }

    /// Re-reads the files if either changed. A broken new pair is reported and the old one kept.
    pub fn reload_if_changed(&self) -> Result<bool, BoxError> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        let mut seen = self.modified.lock().map_err(|_| "certificate state poisoned")?;
        if *seen == stamps {
            return Ok(false);
        }
        *seen = stamps;
        self.current.store(Arc::new(certified_key(&self.cert_file, &self.key_file)?));
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, BoxError> {
    let certs = read_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let signing_key =
        provider().key_provider.load_private_key(key).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key = CertifiedKey::new(certs, signing_key);
    // A rotation that has replaced one file but not yet the other must not be served.
    key.keys_match()
        .map_err(|e| format!("{} and {} do not belong together: {e}", cert_file.display(), key_file.display()))?;
    Ok(key)
}

fn add_certs(roots: &mut RootCertStore, path: &Path) -> Result<(), BoxError> {
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, BoxError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()).into());
    }
    Ok(certs)
}
