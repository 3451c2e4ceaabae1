//! HuggingFace tokenizers: one trained here (through `trainer::tokenizer` and through
//! `sirocco tokenizer train`), loaded by the data pipeline, used to tokenize a split.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trainer::config::DataConfig;
use trainer::data::{tokenize_split, Dataset, Tokenizer};
use trainer::tokenizer::{train, TrainTokenizerArgs};

const SENTENCES: [&str; 6] = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be or not to be, that is the question.",
    "Naïve café owners serve crème brûlée — ✓ déjà vu.",
    "All that glitters is not gold; the fox knows the dog.",
    "Brevity is the soul of wit, and the quick are lazy.",
];

/// A JSONL corpus of the sentences, repeated so that merges have counts.
fn corpus(root: &Path) -> PathBuf {
    let path = root.join("corpus.jsonl");
    let lines: String = (0..20)
        .flat_map(|_| SENTENCES)
        .map(|text| format!("{}\n", serde_json::json!({ "text": text })))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

fn args(input: &Path, out: &Path, vocab_size: usize) -> TrainTokenizerArgs {
    TrainTokenizerArgs {
        input: vec![input.display().to_string()],
        text_key: "text".into(),
        vocab_size,
        min_frequency: 2,
        out: out.to_path_buf(),
    }
}

#[test]
fn a_trained_tokenizer_loads_and_accounts_for_every_byte() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("tok/tokenizer.json");
    let report = train(&args(&corpus(directory.path()), &out, 400)).unwrap();
    assert_eq!((report.files, report.documents, report.vocab_size), (1, 120, 400));

    let tokenizer = Tokenizer::load(out.to_str().unwrap()).unwrap();
    assert_eq!(tokenizer.vocab_size(), 400);
    assert_eq!(tokenizer.eos_id(), 0, "the special token comes first");
    let lengths = tokenizer.token_byte_lengths();
    assert_eq!(lengths.len(), 400);
    assert_eq!(lengths[0], 0);
    for text in SENTENCES.iter().copied().chain(["unseen wörds 🦀 and\ttabs\n"]) {
        let ids = tokenizer.encode(text).unwrap();
        assert!(!ids.contains(&tokenizer.eos_id()));
        let bytes: u32 = ids.iter().map(|&id| lengths[id as usize]).sum();
        assert_eq!(bytes as usize, text.len(), "{text}");
    }
    assert!(tokenizer.encode(SENTENCES[0]).unwrap().len() < SENTENCES[0].len() / 2, "merges were learned");
    assert_eq!(tokenizer.fingerprint(), Tokenizer::load(out.to_str().unwrap()).unwrap().fingerprint());
    assert_ne!(tokenizer.fingerprint(), Tokenizer::load("byte").unwrap().fingerprint());

    // The split is stored as u16 ids and reads back as the encoder's ids.
    let config = DataConfig { cache_dir: directory.path().join("cache"), ..DataConfig::default() };
    let urls = [directory.path().join("corpus.jsonl").display().to_string()];
    let split = tokenize_split(&config, &urls, "train", &tokenizer).unwrap();
    assert_eq!(split.manifest.vocab_size, 400);
    assert_eq!(split.manifest.token_width, 2);
    let per_pass: usize = SENTENCES.iter().map(|text| tokenizer.encode(text).unwrap().len() + 1).sum();
    assert_eq!(split.manifest.num_tokens, 20 * per_pass as u64);
    let dataset = Dataset::open(&split, 8).unwrap();
    let mut expected = tokenizer.encode(SENTENCES[0]).unwrap();
    expected.push(0);
    assert_eq!(dataset.sequence(0), expected[..9]);
}

#[test]
fn a_tokenizer_without_end_of_text_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("tokenizer.json");
    train(&args(&corpus(directory.path()), &out, 300)).unwrap();
    let renamed = std::fs::read_to_string(&out).unwrap().replace("<|endoftext|>", "<|end|>");
    std::fs::write(&out, renamed).unwrap();
    let error = Tokenizer::load(out.to_str().unwrap()).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{}: has no end-of-text token", out.display())), "{error}");
}

/// `sirocco tokenizer train --input INPUT --vocab-size N --out OUT`.
fn sirocco_tokenizer_train(input: &Path, vocab_size: usize, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sirocco"))
        .args(["tokenizer", "train", "--input"])
        .arg(input)
        .args(["--vocab-size", &vocab_size.to_string(), "--out"])
        .arg(out)
        .output()
        .expect("the sirocco binary runs")
}

#[test]
fn sirocco_tokenizer_train_end_to_end() {
    let directory = tempfile::tempdir().unwrap();
    let input = corpus(directory.path());
    let out = directory.path().join("tokenizer.json");
    let output = sirocco_tokenizer_train(&input, 320, &out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("of 320 tokens on 120 documents from 1 files"), "{stdout}");
    assert_eq!(Tokenizer::load(out.to_str().unwrap()).unwrap().vocab_size(), 320);

    let unwritten = directory.path().join("unwritten.json");
    let output = sirocco_tokenizer_train(&input, 100, &unwritten);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--vocab-size must be at least 257"), "{stderr}");
    // A size no trainer could allocate is refused, not attempted.
    let output = sirocco_tokenizer_train(&input, 100_000_000_000, &unwritten);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--vocab-size must be at most 16777216"), "{stderr}");

    let bad = directory.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"txt\": \"typo\"}\n").unwrap();
    let output = sirocco_tokenizer_train(&bad, 300, &unwritten);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}: line 2: no field `text`", bad.display())), "{stderr}");
    assert!(!stderr.contains("panicked") && !unwritten.exists(), "{stderr}");
}
