//! `sirocco`: the command line of the sirocco trainer. Each subcommand's logic lives in the
//! trainer library; this file only parses arguments and reports errors.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trainer::bench::{self, EmitBenchArgs, OptimizerBenchArgs};
use trainer::devices::{self, DevicesArgs};
use trainer::optim_tools::{self, ReplayArgs};
use trainer::tokenizer::{self, TrainTokenizerArgs};

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
    /// List the registered optimizer types with their fields and defaults.
    Optimizers,
    /// Optimizer tools.
    #[command(subcommand)]
    Optim(OptimCommand),
    /// Benchmarks (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Tokenizer tools.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
}

#[derive(Debug, Subcommand)]
enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on corpus files and write its tokenizer.json.
    Train(TrainTokenizerArgs),
}

#[derive(Debug, Subcommand)]
enum OptimCommand {
    /// Run an optimizer on recorded gradients and save every step's parameters.
    Replay(ReplayArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time the fused optimizer update on N parameters.
    Optimizer(OptimizerBenchArgs),
    /// Time StableHLO emission of a large graph.
    Emit(EmitBenchArgs),
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

fn print_report<T: serde::Serialize + std::fmt::Display>(report: &T, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Devices(args) => {
            let report = devices::report(&args)
                .with_context(|| format!("cannot list the devices of PJRT plugin `{}`", args.plugin))?;
            print!("{report}");
        }
        Command::Optimizers => print!("{}", optim_tools::list_optimizers()),
        Command::Optim(OptimCommand::Replay(args)) => {
            let (params, steps) = optim_tools::replay(&args).context("optim replay failed")?;
            println!("replayed {steps} steps on {params} parameters into {}", args.out.display());
        }
        Command::Bench(BenchCommand::Optimizer(args)) => {
            let report = bench::optimizer(&args).context("optimizer benchmark failed")?;
            print_report(&report, args.json)?;
        }
        Command::Bench(BenchCommand::Emit(args)) => {
            let report = bench::emit(&args).context("emission benchmark failed")?;
            print_report(&report, args.json)?;
        }
        Command::Tokenizer(TokenizerCommand::Train(args)) => {
            let report = tokenizer::train(&args).context("tokenizer training failed")?;
            println!("{report}; wrote {}", args.out.display());
        }
    }
    Ok(())
}
