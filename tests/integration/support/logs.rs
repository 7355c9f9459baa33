//! The tracing output of the current thread, captured for a test to count log lines. A
//! `#[tokio::test]` runs its runtime on the test's thread, so the tasks it spawns (the link) log
//! here too.
//!
//! ```ignore
//! let logs = Logs::capture();
//! // … run the link …
//! assert_eq!(logs.lines_with("another client may be using client id"), 1);
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// Captured log lines (DEBUG and above, no colours); capture ends when dropped.
pub struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Starts capturing this thread's tracing output.
    pub fn capture() -> Logs {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        Logs {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().expect("log buffer")).into_owned()
    }

    /// How many lines contain all of `needles`.
    pub fn lines_with_all(&self, needles: &[&str]) -> usize {
        self.text()
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    /// How many lines contain `needle`.
    pub fn lines_with(&self, needle: &str) -> usize {
        self.lines_with_all(&[needle])
    }
}
