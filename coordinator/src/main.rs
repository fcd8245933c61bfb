//! `coordinator`: parses flags, starts logging, hands over to the library.

use clap::Parser;
use coordinator::cli::{Cli, Command};
use coordinator::commands;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    stdx::logging::init();
    let result = match cli.command {
        Command::Check(args) => commands::check::check(&args),
        Command::Status(args) => commands::status::status(&args.results),
        Command::Report(args) => commands::report::report(&args.results),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(commands::run::run(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
