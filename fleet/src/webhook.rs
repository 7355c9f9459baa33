//! The webhook alarm output: every violation event the fleet alarms on is POSTed as JSON (the
//! bytes the agent's alarm outputs write: the event's JSON) to a URL, `http://` or `https://`.
//!
//! - Never blocks the ingest: [`Webhook::send`] only puts the event in a bounded queue
//!   ([`QUEUE_CAPACITY`]); when it is full the event is dropped for this output (it is in the
//!   store: `violations list`) and that is logged once per episode.
//! - One worker task per webhook delivers the queue in order: a 2xx answer is delivered; any
//!   other answer, a timeout or a connection error is tried again after a pause that starts at
//!   [`FIRST_PAUSE`] and doubles, up to [`MAX_PAUSE`], `attempts` tries in all. An event that
//!   failed every try is dropped; the failure is logged once per episode (until a delivery works
//!   again, which is logged too).
//! - HTTP/1.1, one connection per delivery (`Connection: close`), no redirects followed. TLS
//!   with rustls (ring), the system's roots or `ca_file`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Events waiting for one webhook at most.
pub const QUEUE_CAPACITY: usize = 256;
/// Pause before the second try.
pub const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// Longest pause between tries.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

/// One `[[alarms]] type = "webhook"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `http://host[:port]/path` or `https://…`.
    pub url: String,
    /// Per try: connect, send, answer.
    pub timeout: Duration,
    /// Tries per event (the first included).
    pub attempts: u32,
    /// `https` only: the CA file (PEM) to trust instead of the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why a URL cannot be a webhook (config check).
pub fn check_url(url: &str) -> Result<(), String> {
    Target::parse(url).map(|_| ())
}

/// Where to connect, parsed once.
#[derive(Debug, Clone)]
struct Target {
    uri: Uri,
    tls: bool,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("is not a URL ({e}): use http://host[:port]/path"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("must start with http:// or https://".into()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("must not carry credentials (user@host)".into());
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            uri,
            tls,
            host,
            port,
        })
    }

    /// What the request line names: the path and query.
    fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The `Host` header.
    fn authority(&self) -> String {
        self.uri
            .authority()
            .map_or_else(|| self.host.clone(), |a| a.as_str().to_owned())
    }
}

/// A running webhook output.
#[derive(Debug)]
pub struct Webhook {
    tx: mpsc::Sender<Vec<u8>>,
    url: String,
    full_logged: bool,
}

impl Webhook {
    /// Starts the worker (call inside a tokio runtime). The URL was checked by the config; an
    /// unusable one (or an unreadable `ca_file`) is an error here.
    pub fn start(settings: &Settings) -> Result<Webhook, String> {
        let target = Target::parse(&settings.url)?;
        let tls = if target.tls {
            Some(tls_connector(settings.ca_file.as_deref())?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let worker = Worker {
            target,
            tls,
            timeout: settings.timeout,
            attempts: settings.attempts.max(1),
            url: settings.url.clone(),
        };
        tokio::spawn(worker.run(rx));
        Ok(Webhook {
            tx,
            url: settings.url.clone(),
            full_logged: false,
        })
    }

    /// Queues one event's JSON; never waits.
    pub fn send(&mut self, json: &[u8]) {
        match self.tx.try_send(json.to_vec()) {
            Ok(()) => self.full_logged = false,
            Err(_) => {
                if !self.full_logged {
                    warn!(url = %self.url, "The webhook is behind; events are not sent to it until it catches up (they are in the store).");
                    self.full_logged = true;
                }
            }
        }
    }
}

fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A system root rustls cannot use is skipped, as every client does.
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to trust (set ca_file)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

struct Worker {
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    attempts: u32,
    url: String,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) {
        let mut failing = false;
        while let Some(json) = rx.recv().await {
            let body = Bytes::from(json);
            let mut pause = FIRST_PAUSE;
            let mut result = Ok(());
            for attempt in 1..=self.attempts {
                result = match tokio::time::timeout(self.timeout, self.post(body.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {} s", self.timeout.as_secs())),
                };
                if result.is_ok() || attempt == self.attempts {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            match (result, failing) {
                (Ok(()), true) => {
                    info!(url = %self.url, "The webhook works again.");
                    failing = false;
                }
                (Err(e), false) => {
                    warn!(url = %self.url, error = %e, attempts = self.attempts, "Webhook delivery failed; the event is in the store. Further failures are not logged until it works again.");
                    failing = true;
                }
                _ => {}
            }
        }
    }

    /// One POST: Ok on a 2xx answer.
    async fn post(&self, body: Bytes) -> Result<(), String> {
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.exchange(TokioIo::new(tcp), body).await,
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(self.target.host.clone())
                    .map_err(|e| format!("bad host name: {e}"))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.exchange(TokioIo::new(stream), body).await
            }
        }
    }

    async fn exchange<T>(&self, io: TokioIo<T>, body: Bytes) -> Result<(), String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let conn = tokio::spawn(conn);
        let req = Request::post(self.target.path())
            .header(hyper::header::HOST, self.target.authority())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("defender-fleet/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::CONNECTION, "close")
            .body(Full::new(body))
            .map_err(|e| format!("HTTP request: {e}"))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
            let status = resp.status();
            // Read (and bound) the answer so the connection ends cleanly; its text is not used.
            let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        }
        .await;
        conn.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_url("https://hooks.example/x?y=1").is_ok());
        assert!(check_url("http://[::1]:9/").is_ok());
        for bad in [
            "ftp://x/",
            "127.0.0.1:80",
            "http://",
            "http://u:p@h/",
            "not a url",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let t = Target::parse("http://[::1]:9/a?b").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path()), ("::1", 9, "/a?b"));
        assert_eq!(Target::parse("https://h").unwrap().port, 443);
    }

    /// A TLS server on loopback with a certificate for `localhost` signed by a test CA: the
    /// webhook with that CA as `ca_file` delivers the event's bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_with_a_ca_file_delivers_the_body() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (got_tx, mut got_rx) = mpsc::channel::<Vec<u8>>(4);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = tls.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before the body");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap();
                    if buf.len() >= end + 4 + len {
                        got_tx.send(buf[end + 4..].to_vec()).await.unwrap();
                        break;
                    }
                }
            }
            tls.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let _ = tls.shutdown().await;
        });
        let mut hook = Webhook::start(&Settings {
            url: format!("https://localhost:{port}/h"),
            timeout: Duration::from_secs(10),
            attempts: 1,
            ca_file: Some(ca_file),
        })
        .unwrap();
        hook.send(br#"{"violationId":"v1"}"#);
        let body = tokio::time::timeout(Duration::from_secs(20), got_rx.recv())
            .await
            .expect("delivered within 20 s")
            .unwrap();
        assert_eq!(body, br#"{"violationId":"v1"}"#);
        // A CA file that is not one is refused at start.
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let e = Webhook::start(&Settings {
            url: "https://localhost:1/".into(),
            timeout: Duration::from_secs(1),
            attempts: 1,
            ca_file: Some(bad),
        })
        .unwrap_err();
        assert!(e.contains("no CA certificate"), "{e}");
    }
}
