//! `sirocco`: the command line of the sirocco trainer. Each subcommand's logic lives in the
//! trainer library; this file only parses arguments and reports errors.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trainer::devices::{self, DevicesArgs};

#[derive(Debug, Parser)]
#[command(name = "sirocco", version, about = "Train models on XLA through PJRT plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a PJRT plugin's versions and the devices it sees.
    Devices(DevicesArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Devices(args) => {
            let report = devices::report(&args)
                .with_context(|| format!("cannot list the devices of PJRT plugin `{}`", args.plugin))?;
            print!("{report}");
        }
    }
    Ok(())
}
