//! Logging set-up shared by the `coordinator` and `worker` binaries.

/// Logs go to stderr (stdout carries machine-readable output, e.g. `worker train --format
/// json`); `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` switches to JSON lines.
/// Colours only on a terminal.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
