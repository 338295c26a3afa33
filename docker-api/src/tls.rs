//! rustls client configuration shared by every TLS connection the project makes:
//! the Docker Engine's TCP endpoint, and (through the crates above) buildkitd's mTLS.
//!
//! The crypto provider is the process default when one is installed
//! (`rustls::crypto::CryptoProvider::install_default`); otherwise the bundled `ring`
//! provider when the `ring` feature is on; otherwise building a config fails with a
//! clear message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where the trust roots and the client identity come from.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// A PEM CA bundle to trust. `None` trusts the public web PKI (webpki-roots).
    pub ca: Option<PathBuf>,
    /// A PEM client certificate (chain) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// The name to verify in the server's certificate, when it differs from the host.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// The Docker convention: `ca.pem`, `cert.pem` and `key.pem` in one directory
    /// (`DOCKER_CERT_PATH`). Missing files are left out.
    pub fn from_cert_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        let pick = |name: &str| {
            let p = dir.join(name);
            p.exists().then_some(p)
        };
        Self {
            ca: pick("ca.pem"),
            cert: pick("cert.pem"),
            key: pick("key.pem"),
            server_name: None,
        }
    }

    /// Trust only the CAs in this PEM bundle (instead of the public web PKI).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Present this client certificate (PEM chain) and key (PEM) for mutual TLS.
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Verify this name in the server's certificate instead of the host dialled.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Builds the rustls client configuration.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                let certs = read_certs(ca)?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("no usable CA certificate in {}", ca.display()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("reading private key {}: {e}", key.display()))?;
                Some((cert, chain, key))
            }
            (None, None) => None,
            (Some(_), None) => return Err("a client certificate was given without its key".into()),
            (None, Some(_)) => return Err("a client key was given without its certificate".into()),
        };
        let builder = ClientConfig::builder_with_provider(crypto_provider()?)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The crypto provider: the process default if installed, else the bundled one.
pub fn crypto_provider() -> Result<Arc<CryptoProvider>, String> {
    if let Some(p) = CryptoProvider::get_default() {
        return Ok(p.clone());
    }
    bundled_provider()
}

#[cfg(feature = "ring")]
fn bundled_provider() -> Result<Arc<CryptoProvider>, String> {
    Ok(Arc::new(rustls::crypto::ring::default_provider()))
}

#[cfg(not(feature = "ring"))]
fn bundled_provider() -> Result<Arc<CryptoProvider>, String> {
    Err(
        "no rustls CryptoProvider is installed: this build has no bundled provider \
         (feature `providerless`), so call `rustls::crypto::CryptoProvider::install_default` \
         before connecting over TLS, or enable the `ring` feature"
            .into(),
    )
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading certificates {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("parsing certificates {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

/// Runs the TLS handshake over `io`, verifying `server_name`.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    server_name: &str,
    io: IO,
) -> std::io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid TLS server name {server_name:?}: {e}"),
        )
    })?;
    TlsConnector::from(config).connect(name, io).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no bundled provider and none installed, the error says what to do.
    #[cfg(not(feature = "ring"))]
    #[test]
    fn providerless_without_an_installed_provider_is_a_clear_error() {
        assert!(CryptoProvider::get_default().is_none());
        let err = TlsOptions::default().client_config().unwrap_err();
        assert!(
            err.contains("no rustls CryptoProvider is installed"),
            "{err}"
        );
        assert!(err.contains("install_default"), "{err}");

        let err = crate::Docker::builder()
            .address("tcp://127.0.0.1:2376")
            .tls(TlsOptions::default())
            .build()
            .unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Config(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("tcp://127.0.0.1:2376"), "{text}");
        assert!(text.contains("CryptoProvider"), "{text}");
    }

    /// The bundled provider is used when none is installed.
    #[cfg(feature = "ring")]
    #[test]
    fn the_bundled_provider_needs_no_setup() {
        let config = TlsOptions::default().client_config().unwrap();
        assert!(!config.crypto_provider().cipher_suites.is_empty());
        crate::Docker::builder()
            .address("tcp://127.0.0.1:2376")
            .tls(TlsOptions::default())
            .build()
            .unwrap();
    }

    #[test]
    fn unreadable_or_mismatched_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let opts = TlsOptions::from_cert_dir(dir.path());
        assert!(opts.ca.is_none() && opts.cert.is_none() && opts.key.is_none());
        let missing = dir.path().join("nope.pem");
        let err = TlsOptions::default()
            .ca_file(&missing)
            .client_config()
            .unwrap_err();
        assert!(
            err.contains("reading certificates") && err.contains("nope.pem"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = TlsOptions::default()
            .client_identity(&empty, &missing)
            .client_config()
            .unwrap_err();
        assert!(
            err.contains("no PEM certificate") && err.contains("empty.pem"),
            "{err}"
        );
        let half = TlsOptions {
            cert: Some(empty),
            ..TlsOptions::default()
        };
        let err = half.client_config().unwrap_err();
        assert!(err.contains("without its key"), "{err}");
    }
}
