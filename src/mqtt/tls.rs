//! TLS for the link: loads the CA, client certificate and key (PEM), builds a rustls
//! `ClientConfig` on the ring provider with ALPN, and checks the key file's permissions.
//!
//! Verification is never disabled: the server chain must lead to the configured CA and the
//! server certificate must name the endpoint (spec: metrics-report.md A.8).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;

/// The ALPN protocol AWS IoT Core requires for MQTT with client certificates on port 443.
pub const AWS_MQTT_ALPN: &str = "x-amzn-mqtt-ca";

/// The port on which AWS IoT Core wants [`AWS_MQTT_ALPN`].
pub const ALPN_PORT: u16 = 443;

/// A TLS file could not be used; every variant names the file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid PEM, or holds no item of the kind needed.
    #[error("{}: {what}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was looked for ("CA certificate", "client certificate", "private key").
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A CA certificate was rejected by the root store.
    #[error("{}: CA certificate not usable: {source}", path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The client certificate and key do not form a usable identity (e.g. they do not match).
    #[error("client certificate {} with key {}: {source}", cert.display(), key.display())]
    ClientAuth {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// Installs ring as the process-wide rustls provider; a provider already installed (by us or
/// anyone else) is left in place.
pub fn install_ring_provider() {
    // Err means "already installed": fine, our own configs name ring explicitly anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The ALPN protocols to offer: the configured one, or [`AWS_MQTT_ALPN`] when nothing is
/// configured and the port is 443 (AWS refuses MQTT on 443 without it). Empty otherwise.
pub fn alpn_protocols(port: u16, alpn: &str) -> Vec<Vec<u8>> {
    let alpn = alpn.trim();
    if !alpn.is_empty() {
        vec![alpn.as_bytes().to_vec()]
    } else if port == ALPN_PORT {
        vec![AWS_MQTT_ALPN.as_bytes().to_vec()]
    } else {
        Vec::new()
    }
}

/// True when a private key file's mode gives any access to group or others.
pub fn key_mode_too_open(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Returns the key file's permission bits when group or others may access it (the caller warns),
/// `None` when it is private.
pub fn check_key_permissions(key_file: &Path) -> Result<Option<u32>, TlsError> {
    let meta = fs::metadata(key_file).map_err(|source| TlsError::Read {
        path: key_file.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    Ok(key_mode_too_open(mode).then_some(mode))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what,
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        reason: match e {
            pem::Error::NoItemsFound => {
                "no PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1) found".into()
            }
            other => other.to_string(),
        },
    })
}

/// Builds the client configuration: roots from `ca_file` only (no platform store), client
/// authentication from `cert_file` + `key_file`, the given ALPN list, ring as the provider.
pub fn client_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(ca_file, "CA certificate")? {
        roots.add(ca).map_err(|source| TlsError::BadCa {
            path: ca_file.to_path_buf(),
            source,
        })?;
    }
    let chain = certificates(cert_file, "client certificate")?;
    let key = private_key(key_file)?;
    let client_auth = |source| TlsError::ClientAuth {
        cert: cert_file.to_path_buf(),
        key: key_file.to_path_buf(),
        source,
    };
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(client_auth)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(client_auth)?;
    config.alpn_protocols = alpn;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_443_offers_the_aws_alpn_unless_one_is_configured() {
        assert_eq!(alpn_protocols(443, ""), vec![b"x-amzn-mqtt-ca".to_vec()]);
        assert_eq!(alpn_protocols(443, "mqtt"), vec![b"mqtt".to_vec()]);
        assert_eq!(
            alpn_protocols(8883, "x-amzn-mqtt-ca"),
            vec![b"x-amzn-mqtt-ca".to_vec()]
        );
        assert!(alpn_protocols(8883, "").is_empty());
        assert!(alpn_protocols(8883, "  ").is_empty());
    }

    #[test]
    fn a_key_readable_by_group_or_others_is_too_open() {
        assert!(!key_mode_too_open(0o600));
        assert!(!key_mode_too_open(0o400));
        assert!(key_mode_too_open(0o640));
        assert!(key_mode_too_open(0o604));
        assert!(key_mode_too_open(0o644));
        assert!(key_mode_too_open(0o602));
    }

    #[test]
    fn a_group_readable_key_file_is_reported_with_its_mode() {
        let dir = std::env::temp_dir().join(format!("mqtt-key-mode-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        fs::write(&key, "x").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(check_key_permissions(&key).unwrap(), Some(0o640));
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(check_key_permissions(&key).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let err = client_config(
            Path::new("/nonexistent/ca.pem"),
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
            vec![],
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_file_without_pem_blocks_is_refused_naming_what_was_expected() {
        let dir = std::env::temp_dir().join(format!("mqtt-tls-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("not-a-ca.pem");
        fs::write(&ca, "hello\n").unwrap();
        let err = client_config(&ca, &ca, &ca, vec![]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("not-a-ca.pem") && text.contains("CA certificate"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
