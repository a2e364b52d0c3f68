//! `spoke-agent`: parse and validate config, run the agent, drain on Ctrl-C or SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;

use spoke_agent::Config;
use spoke_agent::config::Error as ConfigError;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `EX_USAGE` from sysexits.h: bad configuration.
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // `spoke-agent join ...` takes the same options, joins, and exits.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let join = args.get(1).is_some_and(|a| a == "join");
    if join {
        args.remove(1);
    }
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(ConfigError::Args(e))
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Args(e)) => {
            let _ = e.print();
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Err(e) => {
            eprintln!("spoke-agent: bad configuration: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };

    // `Targets` reads RUST_LOG's `level,target=level` directives without
    // EnvFilter's regex engine, which would add about a mebibyte to a binary
    // built for small boards.
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    let output = tracing_subscriber::fmt::layer()
        // Colour codes only for people: logs collected from a pipe stay greppable.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(output)
        .with(filter)
        .init();

    if join {
        return run_join(&config);
    }

    let runtime = match spoke_agent::runtime::tokio_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spoke-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(spoke_agent::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `spoke-agent join`: exchange the bootstrap token for node credentials.
fn run_join(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spoke-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(spoke_agent::identity::join_only(config)) {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spoke-agent join: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
