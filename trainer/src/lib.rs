//! The sirocco trainer library: the logic behind every `sirocco` subcommand.
pub mod bench;
pub mod config;
pub mod devices;
pub mod error;
pub mod files;
pub mod optim_tools;
pub mod tensors;

pub use error::{Result, TrainerError};
