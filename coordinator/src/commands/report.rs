//! `coordinator report RESULTS`: (re)build the report of a results folder, finished or not.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

pub fn report(results: &Path) -> Result<ExitCode> {
    let summary = report::generate(results, &report::ReportOptions::default())
        .with_context(|| format!("building the report of {}", results.display()))?;
    println!("{}", summary.text);
    Ok(ExitCode::SUCCESS)
}
