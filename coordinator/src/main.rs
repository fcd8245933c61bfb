//! `coordinator`: parses flags, starts logging, hands over to the library.

use clap::Parser;
use coordinator::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    coordinator::run::init_tracing();
    let result = match cli.command {
        Command::Check(args) => coordinator::run::check(&args),
        Command::Status(args) => coordinator::status::read(&args.results).map(|rows| {
            print!("{}", coordinator::status::render(&rows));
            ExitCode::SUCCESS
        }),
        Command::Report(args) => coordinator::run::report(&args.results),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(coordinator::run::run(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
