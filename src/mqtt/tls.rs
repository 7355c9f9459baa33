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
    pem_certificates(path, &read(path)?, what)
}

fn pem_certificates(
    path: &Path,
    bytes: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
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
    pem_private_key(path, &read(path)?)
}

fn pem_private_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| TlsError::Pem {
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

/// A client certificate that expires sooner than this is a warning in `check-config`.
pub const EXPIRY_WARNING_SECS: u64 = 30 * 86_400;

/// Which configured TLS file a [`FileProblem`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `ca_file`.
    Ca,
    /// `cert_file`.
    Cert,
    /// `key_file`.
    Key,
}

impl TlsFile {
    /// The configuration key of the file (`ca_file`, `cert_file`, `key_file`).
    pub fn key(self) -> &'static str {
        match self {
            TlsFile::Ca => "ca_file",
            TlsFile::Cert => "cert_file",
            TlsFile::Key => "key_file",
        }
    }
}

/// One problem [`check_files`] found with a TLS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The file it is about.
    pub file: TlsFile,
    /// A warning (the link works) rather than an error (it cannot start).
    pub warning: bool,
    /// What is wrong, naming the file.
    pub message: String,
}

/// Checks the three TLS files as the link would load them, and more, without connecting: each is
/// a readable, non-empty regular file of the right PEM kind; the CA certificates are usable roots;
/// the key matches the client certificate; the client certificate is valid at `now` (expired or
/// not yet valid: error; expiring within [`EXPIRY_WARNING_SECS`]: warning); the key file is
/// private (warning, as the link warns). Returns every problem found.
pub fn check_files(ca: &Path, cert: &Path, key: &Path, now_secs: i64) -> Vec<FileProblem> {
    let mut out = Vec::new();
    let mut error = |file, message: String| {
        out.push(FileProblem {
            file,
            warning: false,
            message,
        })
    };
    let ca_bytes = regular_file(ca).map_err(|m| error(TlsFile::Ca, m)).ok();
    let cert_bytes = regular_file(cert).map_err(|m| error(TlsFile::Cert, m)).ok();
    let key_bytes = regular_file(key).map_err(|m| error(TlsFile::Key, m)).ok();
    if let Some(bytes) = &ca_bytes {
        match pem_certificates(ca, bytes, "CA certificate") {
            Ok(certs) => {
                let mut roots = RootCertStore::empty();
                for c in certs {
                    if let Err(e) = roots.add(c) {
                        error(
                            TlsFile::Ca,
                            TlsError::BadCa {
                                path: ca.to_path_buf(),
                                source: e,
                            }
                            .to_string(),
                        );
                        break;
                    }
                }
            }
            Err(e) => error(TlsFile::Ca, e.to_string()),
        }
    }
    let chain = cert_bytes.as_ref().and_then(|bytes| {
        pem_certificates(cert, bytes, "client certificate")
            .map_err(|e| error(TlsFile::Cert, swapped(e.to_string(), bytes, "PRIVATE KEY")))
            .ok()
    });
    let private = key_bytes.as_ref().and_then(|bytes| {
        pem_private_key(key, bytes)
            .map_err(|e| error(TlsFile::Key, swapped(e.to_string(), bytes, "CERTIFICATE")))
            .ok()
    });
    let mut problems = out;
    if let (Some(chain), Some(private)) = (chain.clone(), private) {
        let provider = rustls::crypto::ring::default_provider();
        if let Err(e) = rustls::sign::CertifiedKey::from_der(chain, private, &provider) {
            problems.push(FileProblem {
                file: TlsFile::Key,
                warning: false,
                message: format!(
                    "{} does not fit the client certificate {}: {e}",
                    key.display(),
                    cert.display()
                ),
            });
        }
    }
    if let Some(leaf) = chain.as_ref().and_then(|c| c.first()) {
        problems.extend(validity_problem(cert, leaf, now_secs));
    }
    if key_bytes.is_some() {
        if let Ok(Some(mode)) = check_key_permissions(key) {
            problems.push(FileProblem {
                file: TlsFile::Key,
                warning: true,
                message: format!(
                    "{} is accessible by group or others (mode {mode:03o}); restrict it with chmod 600",
                    key.display()
                ),
            });
        }
    }
    problems
}

/// Adds a hint when a file holds the other kind of PEM block (cert and key swapped).
fn swapped(message: String, bytes: &[u8], other: &str) -> String {
    let marker = format!("-----BEGIN {other}");
    let holds_other = bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
        || (other == "PRIVATE KEY"
            && [
                &b"-----BEGIN RSA PRIVATE KEY"[..],
                b"-----BEGIN EC PRIVATE KEY",
            ]
            .iter()
            .any(|m| bytes.windows(m.len()).any(|w| w == *m)));
    if holds_other {
        format!(
            "{message} (it holds a {}: are cert_file and key_file swapped?)",
            other.to_lowercase()
        )
    } else {
        message
    }
}

/// Reads a file that must be a non-empty regular file; the message names the file.
fn regular_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!("{} is a directory, not a PEM file", path.display()));
    }
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() == 0 {
        return Err(format!("{} is empty", path.display()));
    }
    read(path).map_err(|e| e.to_string())
}

fn validity_problem(path: &Path, cert: &CertificateDer<'_>, now: i64) -> Option<FileProblem> {
    let problem = |warning, message| {
        Some(FileProblem {
            file: TlsFile::Cert,
            warning,
            message,
        })
    };
    let Some((not_before, not_after)) = validity(cert.as_ref()) else {
        return problem(
            false,
            format!(
                "{}: the certificate's validity cannot be read",
                path.display()
            ),
        );
    };
    let name = path.display();
    if not_after < now {
        return problem(
            false,
            format!("{name}: the certificate expired on {}", utc_date(not_after)),
        );
    }
    if not_before > now {
        return problem(
            true,
            format!(
                "{name}: the certificate is not valid before {} (is the clock right?)",
                utc_date(not_before)
            ),
        );
    }
    let left = not_after - now;
    if left < EXPIRY_WARNING_SECS as i64 {
        return problem(
            true,
            format!(
                "{name}: the certificate expires in {} day(s), on {}",
                left / 86_400,
                utc_date(not_after)
            ),
        );
    }
    None
}

/// A certificate's `notBefore` and `notAfter` in Unix seconds, read from its DER (RFC 5280
/// 4.1: Certificate → TBSCertificate → [0] version, serial, signature, issuer, validity).
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (certificate, _) = der_item(der, 0x30)?;
    let (tbs, _) = der_item(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = der_item(rest, 0xA0)?.1;
    }
    for tag in [0x02, 0x30, 0x30] {
        rest = der_item(rest, tag)?.1;
    }
    let (validity, _) = der_item(rest, 0x30)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Some((not_before, not_after))
}

/// One DER item of `tag` at the start of `bytes`: its content and what follows.
fn der_item(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (digits, rest) = rest.split_at(n);
        (
            digits
                .iter()
                .fold(0usize, |acc, &d| (acc << 8) | usize::from(d)),
            rest,
        )
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, RFC 5280 4.1.2.5.1) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let tag = *bytes.first()?;
    let (content, rest) = der_item(bytes, tag)?;
    let text = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let (year, text) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if text.len() != 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| text.get(i..i + 2).and_then(|f| f.parse::<i64>().ok());
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of Unix seconds (H. Hinnant's `civil_from_days`).
fn utc_date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
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

    #[test]
    fn certificate_times_are_read_from_utc_and_generalized_time() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(11_017 * 86_400 + 5), "2000-03-01");
        let utc = [&[0x17, 13][..], b"491231235959Z"].concat();
        let (t, rest) = der_time(&utc).unwrap();
        assert_eq!(
            (utc_date(t), t % 86_400, rest.len()),
            ("2049-12-31".into(), 86_399, 0)
        );
        let generalized = [&[0x18, 15][..], b"20500101000000Z"].concat();
        assert_eq!(
            der_time(&generalized).map(|(t, _)| utc_date(t)),
            Some("2050-01-01".into())
        );
        assert_eq!(der_time(&[0x17, 3, b'9', b'9', b'Z']), None);
    }
}
