//! Test certificates generated at test time with rcgen (a copy of the agent's
//! `tests/integration/support/certs.rs`, a separate crate): a CA, server certificates, client
//! certificates, written as PEM files (PKCS#8 keys, mode 0600) into a temporary directory.
//!
//! Typical use:
//! ```ignore
//! let pki = Pki::new();                          // CA + server cert for localhost/127.0.0.1/::1
//! let dev = pki.client("dev1");                  // client cert, CN = dev1
//! let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
//! ```
//! For failure tests: `TestCa::new(pki.dir(), "rogue")` is a second, untrusted CA;
//! `pki.ca.server_cert("wrong-name", &["other.example"])` is a server certificate for another name.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// The names the default server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The PKCS#8 private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// A certificate authority that can sign server and client certificates.
pub struct TestCa {
    name: String,
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca_file: PathBuf,
}

impl TestCa {
    /// A new self-signed CA named `name`, its certificate written to `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        fs::write(&ca_file, cert.pem()).expect("write CA certificate");
        TestCa {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    /// The CA certificate file (PEM).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A server certificate (serverAuth) for `names` (DNS names or IP literals), signed by this
    /// CA, written as `<dir>/<ca name>-<stem>.{crt,key}.pem`.
    pub fn server_cert(&self, stem: &str, names: &[&str]) -> CertFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cn = names.first().cloned().unwrap_or_else(|| stem.to_string());
        self.leaf(stem, names, &cn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (clientAuth) with CN = `client_id` (mosquitto's
    /// `use_identity_as_username` turns it into the user name), signed by this CA.
    pub fn client_cert(&self, client_id: &str) -> CertFiles {
        let stem = format!("client-{client_id}");
        self.leaf(
            &stem,
            Vec::new(),
            client_id,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn leaf(
        &self,
        stem: &str,
        names: Vec<String>,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> CertFiles {
        self.leaf_valid(stem, names, cn, usage, |_| {})
    }

    /// [`TestCa::leaf`] with a last change to the parameters (e.g. the validity period).
    fn leaf_valid(
        &self,
        stem: &str,
        names: Vec<String>,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> CertFiles {
        let mut params = CertificateParams::new(names).expect("valid subject alt names");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        adjust(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let files = CertFiles {
            cert: self.dir.join(format!("{}-{stem}.crt.pem", self.name)),
            key: self.dir.join(format!("{}-{stem}.key.pem", self.name)),
        };
        fs::write(&files.cert, cert.pem()).expect("write certificate");
        write_private(&files.key, &key.serialize_pem());
        files
    }
}

/// Writes a key file readable by its owner only, as the agent expects.
pub fn write_private(path: &Path, contents: &str) {
    fs::write(path, contents).expect("write key");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// A temporary directory with a CA and a server certificate for [`SERVER_NAMES`]; make client
/// certificates with [`Pki::client`]. Files disappear when the `Pki` is dropped.
pub struct Pki {
    dir: TempDir,
    /// The trusted CA (signs the server and the clients).
    pub ca: TestCa,
    /// Server certificate for `localhost`, `127.0.0.1`, `::1`.
    pub server: CertFiles,
}

impl Pki {
    /// Generates the CA and the server certificate (about a millisecond).
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("defender-pki-")
            .tempdir()
            .expect("temp dir");
        let ca = TestCa::new(dir.path(), "trusted");
        let server = ca.server_cert("server", &SERVER_NAMES);
        Pki { dir, ca, server }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA file clients trust (and the broker uses to check client certificates).
    pub fn ca_file(&self) -> &Path {
        self.ca.ca_file()
    }

    /// A client certificate signed by the trusted CA, CN = `client_id`.
    pub fn client(&self, client_id: &str) -> CertFiles {
        self.ca.client_cert(client_id)
    }
}
