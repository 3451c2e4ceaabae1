//! The data pipeline, shaped like Levanter's: corpus files are tokenized once into a cache of
//! token shards, packed into fixed-length sequences, shuffled per epoch from a seed and served in
//! batches by a background thread.
//!
//! ```text
//! DataConfig ──corpus──▶ documents ──Tokenizer──▶ tokenize_split ──▶ cache_dir/<split>-<key>/
//!            Dataset::open (packing) ──▶ BatchIter (per-epoch permutation) ──▶ Prefetcher
//! ```
//!
//! A [`DataPosition`] (epoch, batch index) saved with a checkpoint restarts the batch stream
//! exactly where it stopped.

pub mod cache;
pub mod corpus;
pub mod loader;
pub mod tokenizer;

pub use cache::{tokenize_split, Manifest, Shard, TokenizedSplit};
pub use corpus::{resolve_files, DocumentReader};
pub use loader::{epoch_permutation, eval_batches, Batch, BatchIter, DataPosition, Dataset, Prefetcher};
pub use tokenizer::Tokenizer;
