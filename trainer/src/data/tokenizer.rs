//! Tokenizers: UTF-8 bytes, or a HuggingFace `tokenizer.json`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainerError};

/// The end-of-text tokens looked for in a HuggingFace tokenizer, in this order.
pub const EOS_TOKENS: [&str; 3] = ["<|endoftext|>", "</s>", "<eos>"];

/// The byte tokenizer's end-of-text id (after the 256 byte ids).
const BYTE_EOS_ID: u32 = 256;

/// Turns text into token ids.
pub enum Tokenizer {
    /// UTF-8 bytes as ids 0..=255, end of text 256 (vocabulary 257).
    Byte,
    /// A HuggingFace `tokenizer.json` (no special tokens added when encoding, no truncation or
    /// padding whatever the file says).
    HuggingFace(Box<HuggingFaceTokenizer>),
}

/// A loaded `tokenizer.json` and the facts the pipeline needs from it.
pub struct HuggingFaceTokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
    eos_id: u32,
    vocab_size: i64,
    byte_lengths: Vec<u32>,
    fingerprint: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokenizer::Byte => write!(f, "Tokenizer::Byte"),
            Tokenizer::HuggingFace(hf) => write!(f, "Tokenizer::HuggingFace({})", hf.path.display()),
        }
    }
}

impl Tokenizer {
    /// `byte`, or the path of a HuggingFace `tokenizer.json`.
    pub fn load(spec: &str) -> Result<Tokenizer> {
        if spec == "byte" {
            return Ok(Tokenizer::Byte);
        }
        HuggingFaceTokenizer::load(Path::new(spec)).map(|hf| Tokenizer::HuggingFace(Box::new(hf)))
    }

    /// Number of token ids (the model's vocabulary size): one more than the largest id.
    pub fn vocab_size(&self) -> i64 {
        match self {
            Tokenizer::Byte => i64::from(BYTE_EOS_ID) + 1,
            Tokenizer::HuggingFace(hf) => hf.vocab_size,
        }
    }

    /// The id appended after every document.
    pub fn eos_id(&self) -> u32 {
        match self {
            Tokenizer::Byte => BYTE_EOS_ID,
            Tokenizer::HuggingFace(hf) => hf.eos_id,
        }
    }

    /// The ids of `text`, without special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Byte => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::HuggingFace(hf) => {
                hf.inner.encode_fast(text, false).map(|encoding| encoding.get_ids().to_vec()).map_err(
                    |error| TrainerError::data(&hf.path, format!("cannot encode a document: {error}")),
                )
            }
        }
    }

    /// How many UTF-8 bytes of text each id stands for (0 for special tokens and unused ids),
    /// indexed by id: the denominator of bits per byte.
    pub fn token_byte_lengths(&self) -> Vec<u32> {
        match self {
            Tokenizer::Byte => {
                let mut lengths = vec![1; BYTE_EOS_ID as usize];
                lengths.push(0);
                lengths
            }
            Tokenizer::HuggingFace(hf) => hf.byte_lengths.clone(),
        }
    }

    /// A stable name of the tokenizer's behaviour: part of the tokenized cache's key.
    pub fn fingerprint(&self) -> String {
        match self {
            Tokenizer::Byte => "byte-v1".into(),
            Tokenizer::HuggingFace(hf) => hf.fingerprint.clone(),
        }
    }
}

impl HuggingFaceTokenizer {
    fn load(path: &Path) -> Result<HuggingFaceTokenizer> {
        if !path.is_file() {
            return Err(TrainerError::data(
                path,
                "no such file: data.tokenizer is `byte` or the path of a tokenizer.json \
                 (hub names are not fetched; `sirocco tokenizer train` makes one)",
            ));
        }
        let bytes = std::fs::read(path).map_err(|error| TrainerError::io(path, error))?;
        let not_a_tokenizer = |error: &dyn std::fmt::Display| {
            TrainerError::data(path, format!("is not a tokenizer.json: {error}"))
        };
        let json: Value = serde_json::from_slice(&bytes).map_err(|error| not_a_tokenizer(&error))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|error| not_a_tokenizer(&error))?;
        inner.with_truncation(None).map_err(|error| not_a_tokenizer(&error))?;
        inner.with_padding(None);
        let eos_id = EOS_TOKENS.iter().find_map(|token| inner.token_to_id(token)).ok_or_else(|| {
            TrainerError::data(
                path,
                format!("has no end-of-text token (looked for {})", EOS_TOKENS.join(", ")),
            )
        })?;
        let vocabulary = inner.get_vocab(true);
        let largest_id = vocabulary.values().copied().max().unwrap_or(0);
        let vocab_size = (i64::from(largest_id) + 1).max(inner.get_vocab_size(true) as i64);
        let byte_lengths = byte_lengths(&inner, &json, vocab_size as usize);
        let digest = Sha256::digest(&bytes);
        let fingerprint =
            format!("hf-{}", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>());
        Ok(HuggingFaceTokenizer {
            path: path.to_path_buf(),
            inner,
            eos_id,
            vocab_size,
            byte_lengths,
            fingerprint,
        })
    }
}

/// Bytes of text behind each id. Byte-level BPE (GPT-2 style) spells every byte as one
/// character of a fixed alphabet, so a token's length is its character count; otherwise the
/// token is text, with SentencePiece's `▁` standing for a space, `<0xNN>` byte-fallback tokens
/// for one byte, and the model's subword prefix or suffix (`##`, `</w>`) standing for nothing.
fn byte_lengths(tokenizer: &tokenizers::Tokenizer, json: &Value, vocab_size: usize) -> Vec<u32> {
    let byte_level =
        names_type(&json["decoder"], "ByteLevel") || names_type(&json["pre_tokenizer"], "ByteLevel");
    let alphabet: HashSet<char> =
        tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    let model_string = |key: &str| json["model"][key].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let prefix = model_string("continuing_subword_prefix");
    let suffix = model_string("end_of_word_suffix");
    let added = tokenizer.get_added_tokens_decoder();

    let model_token_length = |token: &str| -> u32 {
        if byte_level {
            return token.chars().map(|c| if alphabet.contains(&c) { 1 } else { c.len_utf8() as u32 }).sum();
        }
        if is_byte_fallback(token) {
            return 1;
        }
        let mut text = token;
        if let Some(prefix) = &prefix {
            text = text.strip_prefix(prefix.as_str()).unwrap_or(text);
        }
        if let Some(suffix) = &suffix {
            text = text.strip_suffix(suffix.as_str()).unwrap_or(text);
        }
        text.chars().map(|c| if c == '▁' { 1 } else { c.len_utf8() as u32 }).sum()
    };

    let mut lengths = vec![0; vocab_size];
    for (token, id) in tokenizer.get_vocab(true) {
        let length = match added.get(&id) {
            Some(added) if added.special => 0,
            Some(added) => added.content.len() as u32,
            None => model_token_length(&token),
        };
        lengths[id as usize] = length;
    }
    lengths
}

/// Whether a component of a tokenizer.json is of `kind`, or a sequence holding one.
fn names_type(component: &Value, kind: &str) -> bool {
    match component {
        Value::Object(object) => {
            object.get("type").and_then(Value::as_str) == Some(kind)
                || ["decoders", "pretokenizers"]
                    .iter()
                    .filter_map(|key| object.get(*key).and_then(Value::as_array))
                    .flatten()
                    .any(|inner| names_type(inner, kind))
        }
        _ => false,
    }
}

/// `<0x41>`: SentencePiece's byte-fallback token for one byte.
fn is_byte_fallback(token: &str) -> bool {
    token.len() == 6
        && token.starts_with("<0x")
        && token.ends_with('>')
        && token[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_utf8() {
        let tokenizer = Tokenizer::load("byte").unwrap();
        let text = "héllo, wörld ✓";
        let ids = tokenizer.encode(text).unwrap();
        let bytes: Vec<u8> = ids.iter().map(|&id| u8::try_from(id).unwrap()).collect();
        assert_eq!(String::from_utf8(bytes).unwrap(), text);
        assert_eq!(tokenizer.vocab_size(), 257);
        assert_eq!(tokenizer.eos_id(), 256);
        let lengths = tokenizer.token_byte_lengths();
        assert_eq!(lengths.len(), 257);
        assert_eq!(ids.iter().map(|&id| lengths[id as usize] as usize).sum::<usize>(), text.len());
        assert_eq!(lengths[256], 0);
    }

    #[test]
    fn recognizes_byte_fallback_tokens() {
        assert!(is_byte_fallback("<0x0A>"));
        assert!(!is_byte_fallback("<0xZZ>"));
        assert!(!is_byte_fallback("<0x0A"));
    }

    #[test]
    fn finds_types_inside_sequences() {
        let json: Value = serde_json::from_str(
            r#"{"type": "Sequence", "decoders": [{"type": "Replace"}, {"type": "ByteLevel"}]}"#,
        )
        .unwrap();
        assert!(names_type(&json, "ByteLevel"));
        assert!(!names_type(&json, "Metaspace"));
    }

    #[test]
    fn missing_and_malformed_files_name_the_path() {
        let error = Tokenizer::load("/nonexistent/tokenizer.json").unwrap_err();
        assert!(error.to_string().starts_with("/nonexistent/tokenizer.json: "), "{error}");
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tokenizer.json");
        std::fs::write(&path, "{\"model\": 3}").unwrap();
        let error = Tokenizer::load(path.to_str().unwrap()).unwrap_err();
        assert!(error.to_string().contains("tokenizer.json: is not a tokenizer.json"), "{error}");
    }
}
