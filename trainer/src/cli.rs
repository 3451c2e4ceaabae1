//! The `sirocco` command line: argument parsing and error reporting for every subcommand
//! (their logic lives in the other modules). Public so that a user crate that registers its
//! own optimizer types can ship the whole command line in a three-line `main`:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     // xla_optim::register::<MyOptimizerConfig>("my_optimizer").unwrap();
//!     trainer::cli::main()
//! }
//! ```

use std::io::IsTerminal as _;
use std::process::ExitCode;

use crate::bench::{self, EmitBenchArgs, OptimizerBenchArgs};
use crate::devices::{self, DevicesArgs};
use crate::optim_tools::{self, ReplayArgs};
use crate::tokenizer::{self, TrainTokenizerArgs};
use crate::train::{self, HloArgs, JobArgs, TrainBenchArgs};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "sirocco", version, about = "Train models on XLA through PJRT plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model from a YAML job config.
    Train(JobArgs),
    /// Write the train step's StableHLO and XLA's optimized HLO.
    Hlo(HloArgs),
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
    /// Time a job's train step: compile, resident batch, live data pipeline.
    Train(TrainBenchArgs),
}

/// Parses the arguments, runs the subcommand, prints errors; the process's exit code.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,trainer=info,sirocco=info,xla_optim=info")
        }))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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

/// The line `sirocco train` prints when the run is over.
fn summary_line(summary: &train::TrainSummary) -> String {
    let outputs = summary.run_dir.display();
    if summary.already_done {
        let from = summary
            .resumed_from
            .as_ref()
            .map_or(String::new(), |dir| format!(" (checkpoint {})", dir.display()));
        return format!(
            "already done at step {}{from}: nothing trained (raise trainer.num_train_steps to go on); outputs in {outputs}",
            summary.steps_done
        );
    }
    let loss = |loss: Option<f64>| loss.map_or("-".into(), |loss| format!("{loss:.4}"));
    let mut line = format!(
        "trained {} steps: loss {} -> {}",
        summary.steps_done,
        loss(summary.first_loss),
        loss(summary.last_loss)
    );
    // The losses are those of steps whose update was applied: say so when some were not.
    match (summary.skipped_steps, summary.last_loss) {
        (0, _) => {}
        (_, Some(_)) => line.push_str(" (last finite step)"),
        (_, None) => line.push_str(" (no finite step)"),
    }
    line.push_str(&format!(
        ", eval loss {}, {:.0} tokens/s",
        loss(summary.last_eval_loss),
        summary.tokens_per_second
    ));
    if summary.skipped_steps > 0 {
        line.push_str(&format!(
            ", {} of {} steps skipped (non-finite loss or gradients)",
            summary.skipped_steps, summary.trained_steps
        ));
    }
    format!("{line}; outputs in {outputs}")
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train(args) => {
            let summary = tokio_runtime()?.block_on(train::train(&args))?;
            println!("{}", summary_line(&summary));
            if summary.stopped_early {
                println!("stopped early on request; the checkpoint is saved and the run resumes from it");
            }
        }
        Command::Hlo(args) => {
            for file in train::dump_hlo(&args)? {
                println!("{}", file.display());
            }
        }
        Command::Bench(BenchCommand::Train(args)) => {
            let report = tokio_runtime()?.block_on(train::benchmark(&args))?;
            print_report(&report, args.json)?;
        }
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
