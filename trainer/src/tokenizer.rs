//! `sirocco tokenizer train`: a byte-level BPE tokenizer (GPT-2's scheme: every byte is a symbol,
//! merges learned from the corpus, special token `<|endoftext|>`) trained on the same files the
//! data pipeline reads, saved as a HuggingFace `tokenizer.json`.

use std::path::PathBuf;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::data::corpus::{resolve_files, DocumentReader};
use crate::error::{Result, TrainerError};
use crate::files::write_atomically;

/// The end-of-text token of trained tokenizers.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The 256 byte symbols and the end-of-text token.
const MIN_VOCAB_SIZE: usize = 257;
/// Token ids are stored in at most 32 bits; past a few million, a BPE vocabulary is a mistake.
const MAX_VOCAB_SIZE: usize = 1 << 24;

/// Arguments of `sirocco tokenizer train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainTokenizerArgs {
    /// Corpus files, directories or globs (.txt, .jsonl, .jsonl.gz).
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<String>,
    /// The JSONL field holding the text.
    #[arg(long, default_value = "text")]
    pub text_key: String,
    /// Vocabulary size, the 256 byte symbols and `<|endoftext|>` included (at least 257).
    #[arg(long)]
    pub vocab_size: usize,
    /// Pairs seen fewer times than this are not merged.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Where to write the tokenizer.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// What `train` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainedTokenizer {
    pub files: usize,
    pub documents: u64,
    /// The vocabulary reached; below the one asked for when the corpus has too few pairs.
    pub vocab_size: usize,
}

impl std::fmt::Display for TrainedTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trained a byte-level BPE tokenizer of {} tokens on {} documents from {} files",
            self.vocab_size, self.documents, self.files
        )
    }
}

/// Trains the tokenizer `args` describes and writes it to `args.out`.
pub fn train(args: &TrainTokenizerArgs) -> Result<TrainedTokenizer> {
    if args.vocab_size < MIN_VOCAB_SIZE {
        return Err(TrainerError::Other(format!(
            "--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte symbols and {END_OF_TEXT}), got {}",
            args.vocab_size
        )));
    }
    if args.vocab_size > MAX_VOCAB_SIZE {
        return Err(TrainerError::Other(format!(
            "--vocab-size must be at most {MAX_VOCAB_SIZE}, got {}",
            args.vocab_size
        )));
    }
    let files = resolve_files(&args.input)?;
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(args.vocab_size)
        .min_frequency(args.min_frequency)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    // No prefix space: the ids of a text then stand for exactly its bytes.
    let byte_level = ByteLevel::new(false, true, true);
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_post_processor(Some(byte_level));
    tokenizer.with_decoder(Some(byte_level));

    let mut failure = None;
    let mut documents = 0;
    let sequences = corpus_documents(&files, &args.text_key, &mut failure, &mut documents);
    let trained = tokenizer.train(&mut trainer, sequences).map(|_| ());
    if let Some(error) = failure {
        return Err(error);
    }
    trained.map_err(|error| TrainerError::Other(format!("BPE training failed: {error}")))?;
    if documents == 0 {
        return Err(TrainerError::Other(format!("{} hold no documents", args.input.join(", "))));
    }
    let json = tokenizer
        .to_string(false)
        .map_err(|error| TrainerError::data(&args.out, format!("cannot serialize the tokenizer: {error}")))?;
    write_atomically(&args.out, json.as_bytes())?;
    Ok(TrainedTokenizer { files: files.len(), documents, vocab_size: tokenizer.get_vocab_size(true) })
}

/// The documents of `files` in order, counted into `documents`; the first error goes to
/// `failure` and ends the sequence (the BPE trainer takes a plain iterator of strings).
fn corpus_documents<'a>(
    files: &'a [PathBuf],
    text_key: &'a str,
    failure: &'a mut Option<TrainerError>,
    documents: &'a mut u64,
) -> impl Iterator<Item = String> + Send + 'a {
    let mut files = files.iter();
    let mut reader: Option<DocumentReader> = None;
    std::iter::from_fn(move || loop {
        if failure.is_some() {
            return None;
        }
        match reader.as_mut().and_then(Iterator::next) {
            Some(Ok(document)) => {
                *documents += 1;
                return Some(document);
            }
            Some(Err(error)) => *failure = Some(error),
            None => match DocumentReader::open(files.next()?, text_key) {
                Ok(next) => reader = Some(next),
                Err(error) => *failure = Some(error),
            },
        }
    })
}
