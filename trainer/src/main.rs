//! `sirocco`: the trainer's command line (see `trainer::cli`).

fn main() -> std::process::ExitCode {
    trainer::cli::main()
}
