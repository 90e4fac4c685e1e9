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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trusts the Mozilla roots bundled by `webpki-roots`, plus every certificate in `extra_ca`.
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        add_certs(&mut roots, path)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Rustls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration from a PEM certificate chain and a PEM private key (the sandbox).
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, Error> {
    let cert = Arc::new(ReloadingCert::load(cert_file, key_file)?);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Rustls)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Inbound TLS for the proxy listener: the certificate (reloadable) and, when `client_ca` is
/// given, client-certificate verification against it, required or optional.
pub(crate) fn inbound_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
    client_auth_required: bool,
) -> Result<Arc<ServerConfig>, Error> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(Error::Rustls)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            add_certs(&mut roots, ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier =
                if client_auth_required { verifier.build() } else { verifier.allow_unauthenticated().build() };
            let verifier = verifier.map_err(|source| Error::ClientCa { path: ca.to_owned(), source })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The DNS names and SPIFFE ids (subject alternative names) of the client certificate, if one
/// was presented.
pub(crate) fn peer_names(conn: &ServerConnection) -> Vec<String> {
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
pub(crate) struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    modified: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    pub(crate) fn load(cert_file: &Path, key_file: &Path) -> Result<Self, Error> {
        let key = certified_key(cert_file, key_file)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: ArcSwap::from_pointee(key),
            modified: Mutex::new((modified(cert_file), modified(key_file))),
        })
    }

    /// Re-reads the files if either changed. A broken new pair is reported and the old one kept.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, Error> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        // The stamps are one assignment: a panic elsewhere cannot leave them half-written.
        let mut seen = self.modified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, Error> {
    let certs = read_certs(cert_file)?;
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|source| Error::Pem { path: key_file.to_owned(), source })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| Error::Key { path: key_file.to_owned(), source })?;
    let key = CertifiedKey::new(certs, signing_key);
    // A rotation that has replaced one file but not yet the other must not be served.
    key.keys_match().map_err(|source| Error::Mismatch {
        cert_file: cert_file.to_owned(),
        key_file: key_file.to_owned(),
        source,
    })?;
    Ok(key)
}

/// The certificates of a CA file, as the upstream client and client authentication take them;
/// a file without any is refused, since trusting nothing is never what was meant.
pub(crate) fn ca_certificates(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    add_certs(&mut roots, path)?;
    Ok(roots)
}

fn add_certs(roots: &mut RootCertStore, path: &Path) -> Result<(), Error> {
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|source| Error::Certificate { path: path.to_owned(), source })?;
    }
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| Error::Pem { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// Why a TLS configuration could not be built. Each names the file at fault; the cause says
/// what is wrong with it.
#[derive(Debug)]
pub enum Error {
    /// The file cannot be read or is not PEM.
    Pem { path: PathBuf, source: rustls_pki_types::pem::Error },
    /// The file is PEM but holds no certificate.
    NoCertificate { path: PathBuf },
    /// A certificate rustls refuses as a trust anchor.
    Certificate { path: PathBuf, source: rustls::Error },
    /// A private key rustls cannot use.
    Key { path: PathBuf, source: rustls::Error },
    /// A certificate and a key that do not belong together (a rotation half done).
    Mismatch { cert_file: PathBuf, key_file: PathBuf, source: rustls::Error },
    /// The CA file for client certificates cannot verify any.
    ClientCa { path: PathBuf, source: rustls::server::VerifierBuilderError },
    /// rustls refused the configuration itself.
    Rustls(rustls::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Pem { path, .. } => write!(f, "{}: cannot read PEM", path.display()),
            Error::NoCertificate { path } => write!(f, "{}: no PEM certificate found", path.display()),
            Error::Certificate { path, .. } => write!(f, "{}: unusable certificate", path.display()),
            Error::Key { path, .. } => write!(f, "{}: unusable private key", path.display()),
            Error::Mismatch { cert_file, key_file, .. } => {
                write!(f, "{} and {} do not belong together", cert_file.display(), key_file.display())
            }
            Error::ClientCa { path, .. } => write!(f, "{}: cannot verify client certificates", path.display()),
            Error::Rustls(_) => f.write_str("rustls refused the TLS configuration"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Pem { source, .. } => Some(source),
            Error::NoCertificate { .. } => None,
            Error::Certificate { source, .. } | Error::Key { source, .. } | Error::Mismatch { source, .. } => {
                Some(source)
            }
            Error::ClientCa { source, .. } => Some(source),
            Error::Rustls(source) => Some(source),
        }
    }
}
