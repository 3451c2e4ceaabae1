//! The sirocco trainer library: the logic behind every `sirocco` subcommand.
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod devices;
pub mod error;
pub mod files;
pub mod metrics;
pub mod model;
pub mod optim_tools;
pub mod progress;
pub mod signals;
pub mod step;
pub mod tensors;
pub mod tokenizer;
pub mod train;

pub use error::{Result, TrainerError};
