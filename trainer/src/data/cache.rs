//! The tokenized cache: each split is tokenized once into `cache_dir/<split>-<key>/`.
//!
//! The key hashes everything the tokens depend on: the resolved input files with their sizes and
//! modification times, `text_key`, the tokenizer's fingerprint and [`FORMAT_VERSION`]. Inside,
//! input file `i` becomes `shard-0000i.bin` (its documents' ids, each document followed by the
//! end-of-text id, little-endian u16 when the vocabulary fits, else u32) and `shard-0000i.done`
//! (its counts), and `manifest.json` is written last. Every file is written to a temporary name
//! and renamed, so an interrupted build leaves only whole shards with their markers: the next
//! build removes stray temporary files, keeps the finished shards and tokenizes the rest. One
//! build at a time per directory.

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::corpus::{resolve_files, DocumentReader};
use super::tokenizer::Tokenizer;
use crate::config::DataConfig;
use crate::error::{Result, TrainerError};
use crate::files::write_atomically;

/// Version of the cache layout; changing it changes every key.
pub const FORMAT_VERSION: u32 = 1;

/// Documents tokenized together (in parallel) before their ids are written.
const DOCUMENTS_PER_CHUNK: usize = 4096;

/// A tokenized split: where its shards are and what they hold.
#[derive(Clone, Debug)]
pub struct TokenizedSplit {
    pub directory: PathBuf,
    pub manifest: Manifest,
    /// Input files this call tokenized: 0 when the cache was reused whole.
    pub files_tokenized: usize,
}

/// The file of a split's directory that lists its shards, written last.
pub const MANIFEST_FILE: &str = "manifest.json";

impl TokenizedSplit {
    /// The split's `manifest.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.directory.join(MANIFEST_FILE)
    }
}

/// `manifest.json`: the split's totals and its shards in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub split: String,
    pub key: String,
    pub tokenizer: String,
    pub text_key: String,
    pub vocab_size: i64,
    pub eos_id: u32,
    /// Bytes per stored token: 2 (u16) or 4 (u32), little-endian.
    pub token_width: u32,
    pub num_documents: u64,
    pub num_tokens: u64,
    /// UTF-8 bytes of the documents (end-of-text tokens stand for none).
    pub num_bytes: u64,
    pub shards: Vec<Shard>,
}

/// One input file's tokens; also the content of its `.done` marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// The shard's file name inside the split's directory.
    pub file: String,
    pub source: PathBuf,
    pub num_documents: u64,
    pub num_tokens: u64,
    pub num_bytes: u64,
}

/// One input file as it enters the key.
struct Input {
    path: PathBuf,
    size: u64,
    modified_ns: u128,
}

/// Tokenizes the files `urls` name into the cache, or reuses what an earlier call built. `split`
/// names the split in the directory name and in messages (`train`, `validation`).
pub fn tokenize_split(
    config: &DataConfig,
    urls: &[String],
    split: &str,
    tokenizer: &Tokenizer,
) -> Result<TokenizedSplit> {
    if urls.is_empty() {
        return Err(TrainerError::Other(format!(
            "data.{split}_urls: split `{split}` names no files, directories or globs"
        )));
    }
    let inputs = resolve_files(urls)?.iter().map(|path| describe_input(path)).collect::<Result<Vec<_>>>()?;
    let fingerprint = tokenizer.fingerprint();
    let key = cache_key(&inputs, &config.text_key, &fingerprint);
    let directory = config.cache_dir.join(format!("{split}-{key}"));
    let manifest_path = directory.join(MANIFEST_FILE);
    if manifest_path.is_file() {
        let manifest = read_json::<Manifest>(&manifest_path)?;
        tracing::info!(
            "{split}: reusing the tokenized cache {} ({} tokens)",
            directory.display(),
            manifest.num_tokens
        );
        return Ok(TokenizedSplit { directory, manifest, files_tokenized: 0 });
    }

    std::fs::create_dir_all(&directory).map_err(|error| TrainerError::io(&directory, error))?;
    remove_temporary_files(&directory)?;
    let token_width = if tokenizer.vocab_size() <= 1 << 16 { 2 } else { 4 };
    let built: Vec<(Shard, bool)> = inputs
        .par_iter()
        .enumerate()
        .map(|(index, input)| {
            let name = format!("shard-{index:05}.bin");
            match finished_shard(&directory, &name, &input.path, token_width) {
                Some(shard) => Ok((shard, false)),
                None => build_shard(&directory, name, &input.path, &config.text_key, tokenizer, token_width)
                    .map(|shard| (shard, true)),
            }
        })
        .collect::<Result<_>>()?;
    let files_tokenized = built.iter().filter(|(_, tokenized)| *tokenized).count();
    let shards: Vec<Shard> = built.into_iter().map(|(shard, _)| shard).collect();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        split: split.to_string(),
        key,
        tokenizer: fingerprint,
        text_key: config.text_key.clone(),
        vocab_size: tokenizer.vocab_size(),
        eos_id: tokenizer.eos_id(),
        token_width,
        num_documents: shards.iter().map(|shard| shard.num_documents).sum(),
        num_tokens: shards.iter().map(|shard| shard.num_tokens).sum(),
        num_bytes: shards.iter().map(|shard| shard.num_bytes).sum(),
        shards,
    };
    write_json(&manifest_path, &manifest)?;
    tracing::info!(
        "{split}: tokenized {files_tokenized} of {} files ({} documents, {} bytes, {} tokens) into {}",
        inputs.len(),
        manifest.num_documents,
        manifest.num_bytes,
        manifest.num_tokens,
        directory.display()
    );
    Ok(TokenizedSplit { directory, manifest, files_tokenized })
}

fn describe_input(path: &Path) -> Result<Input> {
    let path = std::fs::canonicalize(path).map_err(|error| TrainerError::io(path, error))?;
    let metadata = std::fs::metadata(&path).map_err(|error| TrainerError::io(&path, error))?;
    let modified_ns = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    Ok(Input { path, size: metadata.len(), modified_ns })
}

/// 16 hex digits of a SHA-256 over every field, each length-prefixed so that no two lists of
/// fields hash alike.
fn cache_key(inputs: &[Input], text_key: &str, tokenizer_fingerprint: &str) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(&FORMAT_VERSION.to_le_bytes());
    field(text_key.as_bytes());
    field(tokenizer_fingerprint.as_bytes());
    for input in inputs {
        field(input.path.as_os_str().as_encoded_bytes());
        field(&input.size.to_le_bytes());
        field(&input.modified_ns.to_le_bytes());
    }
    hasher.finalize().iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

fn done_marker(directory: &Path, shard_file: &str) -> PathBuf {
    directory.join(shard_file.replace(".bin", ".done"))
}

/// The shard an earlier, interrupted build finished: its marker reads, names the same source,
/// and its file has the length the marker promises. Anything else is tokenized again.
fn finished_shard(directory: &Path, name: &str, source: &Path, token_width: u32) -> Option<Shard> {
    let marker = done_marker(directory, name);
    let shard = marker.is_file().then(|| read_json::<Shard>(&marker).ok()).flatten()?;
    let length = std::fs::metadata(directory.join(name)).map(|metadata| metadata.len()).ok();
    let whole = length == Some(shard.num_tokens * u64::from(token_width));
    (whole && shard.source == source && shard.file == name).then_some(shard)
}

fn build_shard(
    directory: &Path,
    name: String,
    source: &Path,
    text_key: &str,
    tokenizer: &Tokenizer,
    token_width: u32,
) -> Result<Shard> {
    let path = directory.join(&name);
    let temporary = directory.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write_shard_tokens(&temporary, source, text_key, tokenizer, token_width);
    let (num_documents, num_tokens, num_bytes) = match result {
        Ok(counts) => counts,
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
    };
    std::fs::rename(&temporary, &path).map_err(|error| TrainerError::io(&path, error))?;
    let shard = Shard { file: name, source: source.to_path_buf(), num_documents, num_tokens, num_bytes };
    write_json(&done_marker(directory, &shard.file), &shard)?;
    Ok(shard)
}

/// Writes the ids of `source`'s documents to `temporary`; returns (documents, tokens, bytes).
fn write_shard_tokens(
    temporary: &Path,
    source: &Path,
    text_key: &str,
    tokenizer: &Tokenizer,
    token_width: u32,
) -> Result<(u64, u64, u64)> {
    let io_error = |error| TrainerError::io(temporary, error);
    let file = std::fs::File::create(temporary).map_err(io_error)?;
    let mut writer = BufWriter::new(file);
    let mut documents = DocumentReader::open(source, text_key)?;
    let eos = tokenizer.eos_id();
    let (mut num_documents, mut num_tokens, mut num_bytes) = (0u64, 0u64, 0u64);
    loop {
        let chunk: Vec<String> = documents.by_ref().take(DOCUMENTS_PER_CHUNK).collect::<Result<_>>()?;
        if chunk.is_empty() {
            break;
        }
        let encoded: Vec<Vec<u32>> =
            chunk.par_iter().map(|document| tokenizer.encode(document)).collect::<Result<_>>()?;
        for (document, ids) in chunk.iter().zip(encoded) {
            for id in ids.into_iter().chain([eos]) {
                match token_width {
                    2 => writer.write_all(&(id as u16).to_le_bytes()),
                    _ => writer.write_all(&id.to_le_bytes()),
                }
                .map_err(io_error)?;
                num_tokens += 1;
            }
            num_documents += 1;
            num_bytes += document.len() as u64;
        }
    }
    let file = writer.into_inner().map_err(|error| io_error(error.into_error()))?;
    file.sync_all().map_err(io_error)?;
    Ok((num_documents, num_tokens, num_bytes))
}

/// Removes what killed builds left: temporary files are named `.NAME.tmp-PID`.
fn remove_temporary_files(directory: &Path) -> Result<()> {
    let entries = std::fs::read_dir(directory).map_err(|error| TrainerError::io(directory, error))?;
    for entry in entries {
        let path = entry.map_err(|error| TrainerError::io(directory, error))?.path();
        let name = path.file_name().map(|name| name.to_string_lossy().to_string()).unwrap_or_default();
        if name.starts_with('.') && name.contains(".tmp-") {
            std::fs::remove_file(&path).map_err(|error| TrainerError::io(&path, error))?;
        }
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|error| TrainerError::io(path, error))?;
    serde_json::from_slice(&text).map_err(|error| {
        TrainerError::data(path, format!("is corrupt ({error}); delete its directory to tokenize again"))
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text =
        serde_json::to_vec_pretty(value).map_err(|error| TrainerError::data(path, error.to_string()))?;
    text.push(b'\n');
    write_atomically(path, &text)
}
