//! `run`: the daemon on a current-thread tokio runtime, with SIGTERM/SIGINT (shutdown) and
//! SIGHUP (reload) wired to the agent.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::agent;

/// `run [--config FILE] [--dry-run]`.
pub fn run(path: Option<&Path>, dry_run: bool) -> anyhow::Result<ExitCode> {
    // The same checks as `check-config` (TLS files, Detect files, state directory): a deployment
    // that cannot work stops here with every problem listed (exit 2), not in the agent loop. A dry
    // run uses no link and no spool: the file's text is checked only.
    let (mut config, from_file) = match path {
        Some(p) => {
            let c = if dry_run {
                crate::config::Config::load(p)?
            } else {
                crate::config::Config::load_checked(p)?
            };
            for w in &c.warnings {
                tracing::warn!("{}: {w}", p.display());
            }
            (c, true)
        }
        None => super::load_config(None)?,
    };
    if !from_file {
        if !dry_run {
            anyhow::bail!("`run` needs --config FILE (or --dry-run to print reports from a built-in configuration)");
        }
        // Built-in demo: this machine, short intervals, nothing written outside a scratch dir.
        config.collect.sample_interval = Duration::from_secs(5);
        config.report.interval = Duration::from_secs(10);
        config.report.startup_jitter = Duration::ZERO;
        config.state_dir = agent::scratch_state_dir();
        tracing::info!(
            "Built-in configuration: a report every 10 s, printed to stdout (Ctrl-C stops)."
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let opts = agent::RunOptions {
        dry_run,
        config_path: path.map(Path::to_owned),
    };
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        spawn_signal_handlers(shutdown.clone(), reload_tx)?;
        match agent::run(config, opts, shutdown, reload_rx).await {
            Ok(()) => anyhow::Ok(ExitCode::SUCCESS),
            // Bad input, not a runtime failure: a second agent or an unusable spool path.
            Err(e @ (agent::Error::SpoolLocked(_) | agent::Error::SpoolNotAFile(_))) => {
                eprintln!("defender-agent: {e}");
                Ok(ExitCode::from(super::EXIT_BAD_INPUT))
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// SIGTERM and SIGINT cancel `shutdown`; SIGHUP asks for a configuration reload.
fn spawn_signal_handlers(
    shutdown: tokio_util::sync::CancellationToken,
    reload: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down."); shutdown.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down."); shutdown.cancel(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading the configuration."); let _ = reload.try_send(()); }
            }
        }
    });
    Ok(())
}
