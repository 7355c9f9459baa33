//! Custom metrics collector: built-ins (sysinfo), commands (argv, no shell, timeout) and files.
//!
//! Every value goes through [`parse_custom_value`] (text sources) and `custom_metric::check_value` before
//! it enters the sample; a metric that fails is left out and yields an [`Error::Custom`].

use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sysinfo::{Components, DiskRefreshKind, Disks, System};

use super::{read_bounded, Builtin, CustomMetricSettings, CustomSource, Error};
use crate::custom_metric::{check_value, CustomMetricType, CustomRuleError, CustomValue};

/// Most bytes of stdout (or of a file) a custom metric may produce; more is an error, not a
/// truncation, so a runaway command cannot grow the agent.
pub const MAX_CUSTOM_OUTPUT_BYTES: usize = 64 * 1024;

/// Most elements in one list value: ~10 KB of report at worst, well under the 128 KB payload limit.
pub const MAX_LIST_ITEMS: usize = 256;

/// Most bytes of a failing command's stderr kept for the error message.
const MAX_STDERR_BYTES: usize = 512;

/// Why one custom metric produced no value.
#[derive(Debug, thiserror::Error)]
pub enum CustomError {
    /// The program could not be started.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        /// `argv[0]`
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// The program ran past its timeout and was killed (with its process group) and reaped.
    #[error("{program:?} did not finish within {timeout:?}; killed")]
    Timeout {
        /// `argv[0]`
        program: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The program exited unsuccessfully.
    #[error("{program:?} exited with {status}; stderr: {stderr:?}")]
    Exit {
        /// `argv[0]`
        program: String,
        /// Exit status (code or signal).
        status: ExitStatus,
        /// The start of its stderr.
        stderr: String,
    },
    /// Talking to the child failed (poll/read/wait).
    #[error("i/o with {program:?} failed: {source}")]
    Io {
        /// `argv[0]`
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// The command printed (or the file holds) more than [`MAX_CUSTOM_OUTPUT_BYTES`].
    #[error("output larger than {MAX_CUSTOM_OUTPUT_BYTES} bytes")]
    OutputTooLarge,
    /// The source file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The text does not hold a value of the metric's type.
    #[error("cannot parse a {metric_type} value: {fault}")]
    Parse {
        /// The metric's type.
        metric_type: CustomMetricType,
        /// What was wrong.
        fault: ParseFault,
    },
    /// The value breaks the AWS value rules (spec: metrics-report.md D.10).
    #[error("invalid value: {0}")]
    Rule(#[from] CustomRuleError),
    /// A built-in could not be measured.
    #[error("built-in {builtin}: {reason}")]
    Builtin {
        /// Which built-in.
        builtin: &'static str,
        /// Why.
        reason: String,
    },
}

impl CustomError {
    /// A stable name of the cause, for "log once per episode" (see `Episodes`).
    pub fn kind(&self) -> &'static str {
        match self {
            CustomError::Spawn { .. } => "spawn",
            CustomError::Timeout { .. } => "timeout",
            CustomError::Exit { .. } => "exit",
            CustomError::Io { .. } => "io",
            CustomError::OutputTooLarge => "output-too-large",
            CustomError::File { .. } => "file",
            CustomError::Parse { .. } => "parse",
            CustomError::Rule(_) => "rule",
            CustomError::Builtin { .. } => "builtin",
        }
    }
}

/// What was wrong with a custom metric's text.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseFault {
    /// No token at all where a number was expected.
    Empty,
    /// A token that is not a number.
    NotANumber(String),
    /// A token that is not an IPv4/IPv6 address.
    NotAnIp(String),
    /// More than [`MAX_LIST_ITEMS`] elements.
    TooManyItems(usize),
}

impl fmt::Display for ParseFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseFault::Empty => f.write_str("no value"),
            ParseFault::NotANumber(t) => write!(f, "{t:?} is not a number"),
            ParseFault::NotAnIp(t) => write!(f, "{t:?} is not an IP address"),
            ParseFault::TooManyItems(n) => write!(f, "{n} items, more than {MAX_LIST_ITEMS}"),
        }
    }
}

/// Parses a command's stdout or a file's content as a value of `metric_type`:
/// - `number`: the first whitespace-separated token;
/// - `number-list`: numbers separated by whitespace and/or commas;
/// - `string-list`: one string per non-empty line, trimmed;
/// - `ip-address-list`: whitespace-separated IPv4/IPv6 addresses.
///
/// The value is then checked against the AWS rules (15 digits, charset), so what comes back can go
/// into a report as is. Lists may be empty (the source says "none").
pub fn parse_custom_value(
    text: &str,
    metric_type: CustomMetricType,
) -> Result<CustomValue, CustomError> {
    let fault = |fault| CustomError::Parse { metric_type, fault };
    let number = |t: &str| {
        t.parse::<f64>()
            .map_err(|_| fault(ParseFault::NotANumber(t.to_owned())))
    };
    let bounded = |n: usize| {
        if n > MAX_LIST_ITEMS {
            Err(fault(ParseFault::TooManyItems(n)))
        } else {
            Ok(())
        }
    };
    let value = match metric_type {
        CustomMetricType::Number => {
            let token = text
                .split_ascii_whitespace()
                .next()
                .ok_or(fault(ParseFault::Empty))?;
            CustomValue::Number(number(token)?)
        }
        CustomMetricType::NumberList => {
            let tokens: Vec<&str> = text
                .split(|c: char| c.is_ascii_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .collect();
            bounded(tokens.len())?;
            CustomValue::NumberList(tokens.into_iter().map(number).collect::<Result<_, _>>()?)
        }
        CustomMetricType::StringList => {
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            bounded(lines.len())?;
            CustomValue::StringList(lines)
        }
        CustomMetricType::IpAddressList => {
            let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
            bounded(tokens.len())?;
            CustomValue::IpList(
                tokens
                    .into_iter()
                    .map(|t| {
                        t.parse::<IpAddr>()
                            .map_err(|_| fault(ParseFault::NotAnIp(t.to_owned())))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    check_value(&value)?;
    Ok(value)
}

/// Runs `argv` directly (no shell) with stdin closed, and returns its stdout once it exits 0.
///
/// The child gets its own process group; if it (or anything it started that still holds its
/// stdout) runs past `timeout`, the whole group is killed with SIGKILL and the child reaped.
/// Output beyond [`MAX_CUSTOM_OUTPUT_BYTES`] is an error.
pub fn run_command(argv: &[String], timeout: Duration) -> Result<String, CustomError> {
    let program = argv.first().cloned().unwrap_or_default();
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(&program)
        .args(argv.get(1..).unwrap_or(&[]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| CustomError::Spawn {
            program: program.clone(),
            source,
        })?;
    let outcome = drain_and_wait(&mut child, deadline);
    let kill_and_reap = |child: &mut Child| {
        // Negative pid: the whole process group the child leads (process_group(0) above).
        if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: plain syscall on a process group we created; failure (already gone) is fine.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    match outcome {
        // Invalid UTF-8 is replaced (U+FFFD), which then fails the type's parse or charset check.
        Ok((status, stdout, _)) if status.success() => {
            Ok(String::from_utf8_lossy(&stdout).into_owned())
        }
        Ok((status, _, stderr)) => {
            // The child exited; its group may linger (e.g. a background job holding nothing).
            Err(CustomError::Exit {
                program,
                status,
                stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
            })
        }
        Err(Drain::TimedOut) => {
            kill_and_reap(&mut child);
            Err(CustomError::Timeout { program, timeout })
        }
        Err(Drain::TooLarge) => {
            kill_and_reap(&mut child);
            Err(CustomError::OutputTooLarge)
        }
        Err(Drain::Io(source)) => {
            kill_and_reap(&mut child);
            Err(CustomError::Io { program, source })
        }
    }
}

enum Drain {
    TimedOut,
    TooLarge,
    Io(io::Error),
}

/// Reads stdout and stderr until both close, then waits for exit, all before `deadline`.
fn drain_and_wait(
    child: &mut Child,
    deadline: Instant,
) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), Drain> {
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut chunk = [0u8; 4096];
    while stdout_pipe.is_some() || stderr_pipe.is_some() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Drain::TimedOut);
        }
        let mut fds = [
            pollfd(stdout_pipe.as_ref().map(|p| p.as_raw_fd())),
            pollfd(stderr_pipe.as_ref().map(|p| p.as_raw_fd())),
        ];
        let ms = libc::c_int::try_from(remaining.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of 2 pollfd; negative fds are ignored by poll.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Drain::Io(e));
        }
        // Invariant: `fds` is a fixed array of 2.
        if fds[0].revents != 0 {
            if let Some(pipe) = stdout_pipe.as_mut() {
                let n = pipe.read(&mut chunk).map_err(Drain::Io)?;
                if n == 0 {
                    stdout_pipe = None;
                } else if stdout.len() + n > MAX_CUSTOM_OUTPUT_BYTES {
                    return Err(Drain::TooLarge);
                } else {
                    stdout.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                }
            }
        }
        if fds[1].revents != 0 {
            if let Some(pipe) = stderr_pipe.as_mut() {
                let n = pipe.read(&mut chunk).map_err(Drain::Io)?;
                if n == 0 {
                    stderr_pipe = None;
                } else {
                    // Keep the start for the error message; drop the rest so stderr cannot block.
                    let room = MAX_STDERR_BYTES.saturating_sub(stderr.len()).min(n);
                    stderr.extend_from_slice(chunk.get(..room).unwrap_or(&[]));
                }
            }
        }
    }
    // Both pipes closed: the child has exited or is about to. Wait, still bounded by the deadline.
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().map_err(Drain::Io)? {
            return Ok((status, stdout, stderr));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Drain::TimedOut);
        }
        std::thread::sleep(pause.min(remaining));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn pollfd(fd: Option<std::os::fd::RawFd>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// sysinfo state kept between samples: CPU usage needs the previous reading.
#[derive(Default)]
struct BuiltinState {
    system: Option<System>,
    disks: Option<Disks>,
    components: Option<Components>,
}

/// Evaluates the configured custom metrics, in configuration order.
pub(crate) struct CustomCollector {
    metrics: Vec<CustomMetricSettings>,
    proc_root: PathBuf,
    /// `sample(&self)` may run on any blocking thread; one sample at a time touches sysinfo.
    state: Mutex<BuiltinState>,
}

impl fmt::Debug for CustomCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomCollector")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl CustomCollector {
    /// Validates the settings and primes what the built-ins need (a first CPU reading).
    pub(crate) fn new(metrics: Vec<CustomMetricSettings>, proc_root: &Path) -> Result<Self, Error> {
        let mut seen = std::collections::HashSet::new();
        for m in &metrics {
            let invalid = |reason: String| Error::CustomSettings {
                metric: m.name.clone(),
                reason,
            };
            crate::custom_metric::check_custom_metric_name(&m.name)
                .map_err(|e| invalid(e.to_string()))?;
            if !seen.insert(m.name.as_str()) {
                return Err(invalid("defined twice".into()));
            }
            match &m.source {
                CustomSource::Command { argv, timeout } => {
                    if argv.first().is_none_or(|p| p.is_empty()) {
                        return Err(invalid("command argv is empty".into()));
                    }
                    if timeout.is_zero() {
                        return Err(invalid("command timeout is zero".into()));
                    }
                }
                CustomSource::File { .. } => {}
                CustomSource::Builtin(b) => {
                    if !matches!(
                        m.metric_type,
                        CustomMetricType::Number | CustomMetricType::NumberList
                    ) {
                        return Err(invalid(format!(
                            "built-in {} gives numbers; type {} is not number or number-list",
                            b.name(),
                            m.metric_type
                        )));
                    }
                }
            }
        }
        let collector = CustomCollector {
            metrics,
            proc_root: proc_root.to_owned(),
            state: Mutex::new(BuiltinState::default()),
        };
        if collector
            .metrics
            .iter()
            .any(|m| matches!(m.source, CustomSource::Builtin(Builtin::CpuUsagePercent)))
        {
            // First reading now, so the first sample already has an interval to measure.
            let mut state = collector.lock_state();
            if let Ok(system) = state_system(&mut state) {
                system.refresh_cpu_usage();
            }
        }
        Ok(collector)
    }

    /// Values of every metric that succeeded; one error per metric that failed.
    pub(crate) fn collect(&self, errors: &mut Vec<Error>) -> Vec<(String, CustomValue)> {
        let mut values = Vec::with_capacity(self.metrics.len());
        for m in &self.metrics {
            match self.evaluate(m) {
                Ok(value) => values.push((m.name.clone(), value)),
                Err(cause) => errors.push(Error::Custom {
                    metric: m.name.clone(),
                    cause,
                }),
            }
        }
        values
    }

    fn evaluate(&self, m: &CustomMetricSettings) -> Result<CustomValue, CustomError> {
        match &m.source {
            CustomSource::Command { argv, timeout } => {
                parse_custom_value(&run_command(argv, *timeout)?, m.metric_type)
            }
            CustomSource::File { path } => {
                let text =
                    read_bounded(path, MAX_CUSTOM_OUTPUT_BYTES as u64).map_err(|source| {
                        if source.kind() == io::ErrorKind::FileTooLarge {
                            CustomError::OutputTooLarge
                        } else {
                            CustomError::File {
                                path: path.clone(),
                                source,
                            }
                        }
                    })?;
                parse_custom_value(&text, m.metric_type)
            }
            CustomSource::Builtin(builtin) => {
                let numbers = self.builtin(builtin)?;
                let value = match (m.metric_type, numbers.as_slice()) {
                    (CustomMetricType::Number, [first, ..]) => CustomValue::Number(*first),
                    (CustomMetricType::Number, []) => {
                        return Err(CustomError::Builtin {
                            builtin: builtin.name(),
                            reason: "no value".into(),
                        })
                    }
                    _ => CustomValue::NumberList(numbers),
                };
                check_value(&value)?;
                Ok(value)
            }
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, BuiltinState> {
        // A panic while holding the lock cannot leave sysinfo state unusable: take it anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The built-in's numbers, rounded to 2 decimals so they fit the 15-digit rule.
    fn builtin(&self, builtin: &Builtin) -> Result<Vec<f64>, CustomError> {
        let fail = |reason: String| CustomError::Builtin {
            builtin: builtin.name(),
            reason,
        };
        let values = match builtin {
            Builtin::CpuUsagePercent => {
                let mut state = self.lock_state();
                let system = state_system(&mut state).map_err(fail)?;
                system.refresh_cpu_usage();
                vec![f64::from(system.global_cpu_usage())]
            }
            Builtin::MemoryUsedPercent => {
                let mut state = self.lock_state();
                let system = state_system(&mut state).map_err(fail)?;
                system.refresh_memory();
                let total = system.total_memory();
                if total == 0 {
                    return Err(fail("total memory reads as 0".into()));
                }
                vec![system.used_memory() as f64 * 100.0 / total as f64]
            }
            Builtin::DiskUsedPercent { mount } => {
                let mut state = self.lock_state();
                vec![disk_used_percent(&mut state, mount).map_err(fail)?]
            }
            Builtin::LoadAverage => {
                let load = System::load_average().map_err(|e| fail(e.to_string()))?;
                vec![load.one, load.five, load.fifteen]
            }
            Builtin::UptimeSecs => {
                vec![System::uptime().map_err(|e| fail(e.to_string()))? as f64]
            }
            Builtin::ProcessCount => vec![count_processes(&self.proc_root).map_err(fail)? as f64],
            Builtin::Temperature { sensor } => {
                let mut state = self.lock_state();
                temperatures(&mut state, sensor).map_err(fail)?
            }
        };
        Ok(values.into_iter().map(round2).collect())
    }
}

fn state_system(state: &mut BuiltinState) -> Result<&mut System, String> {
    if state.system.is_none() {
        state.system = Some(System::new().map_err(|e| e.to_string())?);
    }
    state
        .system
        .as_mut()
        .ok_or_else(|| "no system state".into())
}

fn disk_used_percent(state: &mut BuiltinState, mount: &Path) -> Result<f64, String> {
    let storage = DiskRefreshKind::nothing().with_storage();
    if state.disks.is_none() {
        state.disks = Some(Disks::new().map_err(|e| e.to_string())?);
    }
    let disks = state.disks.as_mut().ok_or("no disk state")?;
    let find = |disks: &mut Disks| disks.iter_mut().position(|d| d.mount_point() == mount);
    let index = match find(disks) {
        Some(i) => i,
        None => {
            // Mounts change (USB sticks, overlays): relist once before giving up.
            disks.refresh_specifics(true, DiskRefreshKind::nothing());
            find(disks).ok_or_else(|| format!("no mounted file system at {}", mount.display()))?
        }
    };
    let disk = disks
        .get_mut(index)
        .ok_or_else(|| format!("no mounted file system at {}", mount.display()))?;
    if !disk.refresh_specifics(storage) {
        return Err(format!("cannot stat {}", mount.display()));
    }
    let total = disk.total_space();
    if total == 0 {
        return Err(format!("{} reports a size of 0", mount.display()));
    }
    Ok(total.saturating_sub(disk.available_space()) as f64 * 100.0 / total as f64)
}

fn temperatures(state: &mut BuiltinState, sensor: &str) -> Result<Vec<f64>, String> {
    if state.components.is_none() {
        state.components = Some(Components::new_with_refreshed_list().map_err(|e| e.to_string())?);
    }
    let components = state.components.as_mut().ok_or("no sensor state")?;
    let mut values = Vec::new();
    for c in components.iter_mut().filter(|c| c.label().contains(sensor)) {
        c.refresh();
        if let Some(t) = c.temperature().filter(|t| t.is_finite()) {
            values.push(f64::from(t));
        }
        if sensor.is_empty() && !values.is_empty() {
            break; // empty sensor name = the first readable sensor
        }
    }
    if values.is_empty() {
        let labels: Vec<&str> = components.iter().map(|c| c.label()).take(16).collect();
        return Err(format!(
            "no readable temperature sensor matching {sensor:?} (sensors: {labels:?})"
        ));
    }
    Ok(values)
}

/// Processes = numeric directories of `<proc_root>` (cheaper than sysinfo's per-process reads).
fn count_processes(proc_root: &Path) -> Result<usize, String> {
    let entries = std::fs::read_dir(proc_root)
        .map_err(|e| format!("cannot list {}: {e}", proc_root.display()))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.as_encoded_bytes();
            !name.is_empty() && name.iter().all(u8::is_ascii_digit)
        })
        .count())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, t: CustomMetricType) -> Result<CustomValue, CustomError> {
        parse_custom_value(text, t)
    }

    #[test]
    fn a_number_is_the_first_token() {
        assert_eq!(
            parse(" 42.5 degrees\n", CustomMetricType::Number).unwrap(),
            CustomValue::Number(42.5)
        );
        assert_eq!(
            parse("-3", CustomMetricType::Number).unwrap(),
            CustomValue::Number(-3.0)
        );
        assert!(matches!(
            parse("  \n", CustomMetricType::Number),
            Err(CustomError::Parse {
                fault: ParseFault::Empty,
                ..
            })
        ));
        assert!(matches!(
            parse("warm", CustomMetricType::Number),
            Err(CustomError::Parse {
                fault: ParseFault::NotANumber(_),
                ..
            })
        ));
    }

    #[test]
    fn number_lists_split_on_whitespace_and_commas() {
        assert_eq!(
            parse("41, 43.5\n44,45", CustomMetricType::NumberList).unwrap(),
            CustomValue::NumberList(vec![41.0, 43.5, 44.0, 45.0])
        );
        assert_eq!(
            parse("", CustomMetricType::NumberList).unwrap(),
            CustomValue::NumberList(vec![])
        );
        let too_many = "1 ".repeat(MAX_LIST_ITEMS + 1);
        assert!(matches!(
            parse(&too_many, CustomMetricType::NumberList),
            Err(CustomError::Parse {
                fault: ParseFault::TooManyItems(_),
                ..
            })
        ));
    }

    #[test]
    fn string_lists_are_trimmed_non_empty_lines() {
        assert_eq!(
            parse("  plant-a \n\nplant-b\n", CustomMetricType::StringList).unwrap(),
            CustomValue::StringList(vec!["plant-a".into(), "plant-b".into()])
        );
    }

    #[test]
    fn ip_lists_are_whitespace_separated_addresses() {
        assert_eq!(
            parse("192.0.2.1\n 2001:db8::1", CustomMetricType::IpAddressList).unwrap(),
            CustomValue::IpList(vec![
                "192.0.2.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap()
            ])
        );
        assert!(matches!(
            parse("192.0.2.300", CustomMetricType::IpAddressList),
            Err(CustomError::Parse {
                fault: ParseFault::NotAnIp(_),
                ..
            })
        ));
    }

    #[test]
    fn values_that_break_the_aws_rules_are_rejected() {
        for (text, t) in [
            ("0.30000000000000004", CustomMetricType::Number),
            ("NaN", CustomMetricType::Number),
            ("inf", CustomMetricType::NumberList),
            ("has space", CustomMetricType::StringList),
            ("ümlaut", CustomMetricType::StringList),
        ] {
            assert!(
                matches!(parse(text, t), Err(CustomError::Rule(_))),
                "{text:?} as {t} should break a rule"
            );
        }
    }

    #[test]
    fn builtin_values_are_rounded_to_two_decimals() {
        assert_eq!(round2(12.345_678_9), 12.35);
        assert!(crate::custom_metric::check_number(round2(100.0 / 3.0)).is_ok());
    }

    #[test]
    fn processes_are_the_numeric_directories_of_proc_root() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["1", "42", "self", "net", "4a"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(count_processes(dir.path()).unwrap(), 2);
    }
}
