//! The data pipeline from corpus files to batches: file resolution, document reading and its
//! errors, the tokenized cache (reuse, resume after an interruption) and datasets opened from it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trainer::config::DataConfig;
use trainer::data::{
    resolve_files, tokenize_split, BatchIter, DataPosition, Dataset, DocumentReader, TokenizedSplit,
    Tokenizer,
};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write_gz(path: &Path, text: &str) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap();
}

fn documents(path: &Path) -> Vec<String> {
    DocumentReader::open(path, "text").unwrap().collect::<Result<_, _>>().unwrap()
}

fn names(root: &Path, files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|file| file.strip_prefix(root).unwrap().display().to_string()).collect()
}

/// A corpus of every kind: `b.txt`, `a/one.jsonl`, `a/two.jsonl.gz`, plus files to be ignored.
fn mixed_corpus(root: &Path) {
    write(&root.join("b.txt"), "a whole file\nis one document\n");
    write(&root.join("a/one.jsonl"), "{\"text\": \"first\"}\n\n{\"text\": \"sécond\", \"id\": 2}\n");
    write_gz(&root.join("a/two.jsonl.gz"), "{\"text\": \"zipped\"}\n{\"text\": \"\"}\n");
    write(&root.join("a/README.md"), "not a corpus file");
    write(&root.join(".hidden.txt"), "hidden");
}

#[test]
fn resolves_files_directories_and_globs() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    mixed_corpus(root);
    let all = resolve_files(&[root.display().to_string()]).unwrap();
    assert_eq!(names(root, &all), ["a/one.jsonl", "a/two.jsonl.gz", "b.txt"]);
    let globbed =
        resolve_files(&[format!("{}/a/*.jsonl*", root.display()), format!("{}/*", root.display())]).unwrap();
    assert_eq!(
        names(root, &globbed),
        ["a/one.jsonl", "a/two.jsonl.gz", "b.txt"],
        "files named twice are kept once"
    );
    let single = resolve_files(&[root.join("b.txt").display().to_string()]).unwrap();
    assert_eq!(names(root, &single), ["b.txt"]);
}

#[test]
fn reads_documents_of_each_kind() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    mixed_corpus(root);
    assert_eq!(documents(&root.join("b.txt")), ["a whole file\nis one document\n"]);
    assert_eq!(documents(&root.join("a/one.jsonl")), ["first", "sécond"], "blank lines are skipped");
    assert_eq!(documents(&root.join("a/two.jsonl.gz")), ["zipped"], "empty documents are skipped");
    let other_key: Vec<String> =
        DocumentReader::open(&root.join("a/one.jsonl"), "id").unwrap().filter_map(Result::ok).collect();
    assert!(other_key.is_empty());
}

fn first_error(path: &Path, text_key: &str) -> String {
    match DocumentReader::open(path, text_key) {
        Err(error) => error.to_string(),
        Ok(mut reader) => reader.find_map(Result::err).expect("an error").to_string(),
    }
}

#[test]
fn corpus_errors_name_the_file_and_line() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let bad = root.join("bad.jsonl");
    let cases = [
        ("{\"text\": \"ok\"}\n{\"text\": \"cut\n", "line 2: invalid JSON: "),
        ("{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n", "line 3: no field `text`"),
        ("{\"text\": 7}\n", "line 1: field `text` is a number, not a string"),
        ("[\"text\"]\n", "line 1: expected a JSON object"),
    ];
    for (content, message) in cases {
        write(&bad, content);
        let error = first_error(&bad, "text");
        assert!(error.starts_with(&format!("{}: {message}", bad.display())), "{error}");
    }
    let gz = root.join("bad.jsonl.gz");
    write_gz(&gz, "{\"text\": \"ok\"}\nnot json\n");
    assert!(first_error(&gz, "text").starts_with(&format!("{}: line 2: invalid JSON", gz.display())));
    let latin1 = root.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9").unwrap();
    assert!(first_error(&latin1, "text").contains("latin1.txt: is not UTF-8 text (invalid byte at offset 3)"));

    let pattern = format!("{}/*.jsonl.zst", root.display());
    let error = resolve_files(std::slice::from_ref(&pattern)).unwrap_err().to_string();
    assert_eq!(error, format!("{pattern}: matches no .txt, .jsonl or .jsonl.gz file"));
    let missing = root.join("missing.jsonl").display().to_string();
    assert_eq!(
        resolve_files(std::slice::from_ref(&missing)).unwrap_err().to_string(),
        format!("{missing}: no such file or directory")
    );
    let empty = root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(resolve_files(&[empty.display().to_string()])
        .unwrap_err()
        .to_string()
        .contains("matches no .txt"));
    write(&root.join("notes.md"), "x");
    let error = resolve_files(&[root.join("notes.md").display().to_string()]).unwrap_err().to_string();
    assert!(error.ends_with("notes.md: is not a .txt, .jsonl or .jsonl.gz file"), "{error}");
}

fn config(root: &Path) -> DataConfig {
    DataConfig { cache_dir: root.join("cache"), ..DataConfig::default() }
}

/// Eight JSONL files of a few documents each, named so that their order is their number.
fn numbered_corpus(root: &Path) -> Vec<String> {
    let mut texts = Vec::new();
    for file in 0..8 {
        let mut lines = String::new();
        for document in 0..=file {
            let text = format!("file {file} document {document}: {}", "words ".repeat(document));
            lines.push_str(&serde_json::json!({ "text": text }).to_string());
            lines.push('\n');
            texts.push(text);
        }
        write(&root.join(format!("corpus/part-{file}.jsonl")), &lines);
    }
    texts
}

fn ids_of(texts: &[String], tokenizer: &Tokenizer) -> Vec<u32> {
    texts
        .iter()
        .flat_map(|text| tokenizer.encode(text).unwrap().into_iter().chain([tokenizer.eos_id()]))
        .collect()
}

fn all_tokens(dataset: &Dataset, seq_len: u64) -> Vec<u32> {
    let mut tokens = dataset.sequence(0);
    for k in 1..dataset.num_sequences() {
        tokens.extend(&dataset.sequence(k)[1..]);
    }
    tokens.truncate((dataset.num_sequences() * seq_len + 1) as usize);
    tokens
}

#[test]
fn tokenizes_once_in_file_order_and_reuses_the_cache() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let texts = numbered_corpus(root);
    let config = config(root);
    let urls = [root.join("corpus").display().to_string()];
    let tokenizer = Tokenizer::load("byte").unwrap();

    let split = tokenize_split(&config, &urls, "train", &tokenizer).unwrap();
    assert_eq!(split.files_tokenized, 8);
    assert!(split.directory.file_name().unwrap().to_string_lossy().starts_with("train-"));
    let manifest = &split.manifest;
    let expected = ids_of(&texts, &tokenizer);
    assert_eq!(manifest.num_documents, texts.len() as u64);
    assert_eq!(manifest.num_bytes, texts.iter().map(|text| text.len() as u64).sum::<u64>());
    assert_eq!(manifest.num_tokens, expected.len() as u64);
    assert_eq!(manifest.token_width, 2);
    assert_eq!(manifest.shards.len(), 8);

    let dataset = Dataset::open(&split, 1).unwrap();
    assert_eq!(dataset.num_tokens(), expected.len() as u64);
    assert_eq!(dataset.num_bytes(), manifest.num_bytes);
    assert_eq!(all_tokens(&dataset, 1), expected, "documents in file order, each followed by eos");

    let manifest_path = split.directory.join("manifest.json");
    let written = std::fs::metadata(&manifest_path).unwrap().modified().unwrap();
    let again = tokenize_split(&config, &urls, "train", &tokenizer).unwrap();
    assert_eq!(again.files_tokenized, 0);
    assert_eq!(again.directory, split.directory);
    assert_eq!(again.manifest, split.manifest);
    assert_eq!(std::fs::metadata(&manifest_path).unwrap().modified().unwrap(), written);

    // Another text key, or a changed file, is another cache.
    let other = DataConfig { text_key: "body".into(), ..config.clone() };
    assert!(tokenize_split(&other, &urls, "train", &tokenizer).is_err());
    write(&root.join("corpus/part-3.jsonl"), "{\"text\": \"changed\"}\n");
    let changed = tokenize_split(&config, &urls, "train", &tokenizer).unwrap();
    assert_ne!(changed.directory, split.directory);
    assert_eq!(changed.files_tokenized, 8);
}

#[test]
fn an_interrupted_build_resumes_with_the_finished_shards() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let texts = numbered_corpus(root);
    let config = config(root);
    let urls = [format!("{}/corpus/*.jsonl", root.display())];
    let tokenizer = Tokenizer::load("byte").unwrap();
    let split = tokenize_split(&config, &urls, "validation", &tokenizer).unwrap();

    // What a build killed while writing shard 5 leaves: no manifest, no marker for shard 5 and
    // a temporary file.
    let dir = &split.directory;
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    std::fs::remove_file(dir.join("shard-00005.done")).unwrap();
    std::fs::write(dir.join(".shard-00005.bin.tmp-99999"), b"partial").unwrap();
    std::fs::write(dir.join("shard-00005.bin"), b"stale").unwrap();

    let resumed = tokenize_split(&config, &urls, "validation", &tokenizer).unwrap();
    assert_eq!(resumed.files_tokenized, 1);
    assert_eq!(resumed.manifest, split.manifest);
    assert!(!dir.join(".shard-00005.bin.tmp-99999").exists());
    let dataset = Dataset::open(&resumed, 16).unwrap();
    let expected = ids_of(&texts, &tokenizer);
    assert_eq!(all_tokens(&dataset, 16), expected[..(dataset.num_sequences() * 16 + 1) as usize]);

    // A shard truncated behind the cache's back is reported, not read.
    std::fs::write(dir.join("shard-00002.bin"), b"xy").unwrap();
    let error = Dataset::open(&resumed, 16).unwrap_err().to_string();
    assert!(
        error.contains("shard-00002.bin: holds 2 bytes") && error.contains("to tokenize again"),
        "{error}"
    );
}

#[test]
fn batches_come_from_the_cached_tokens() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let texts = numbered_corpus(root);
    let tokenizer = Tokenizer::load("byte").unwrap();
    let split =
        tokenize_split(&config(root), &[root.join("corpus").display().to_string()], "train", &tokenizer)
            .unwrap();
    let dataset = Arc::new(Dataset::open(&split, 32).unwrap());
    let expected = ids_of(&texts, &tokenizer);
    assert_eq!(dataset.num_sequences(), (expected.len() as u64 - 1) / 32);
    let mut iter = BatchIter::new(dataset.clone(), 4, 0, DataPosition::default()).unwrap();
    let batch = iter.next_batch().unwrap();
    assert_eq!(batch.tokens.dims(), [4, 33]);
    for row in batch.tokens.to_vec::<i32>().unwrap().chunks(33) {
        let start =
            expected.windows(33).position(|window| window.iter().zip(row).all(|(a, &b)| *a as i32 == b));
        assert!(start.is_some_and(|start| start % 32 == 0), "a row that is no packed sequence");
    }

    let error = Dataset::open(&split, expected.len() as i64).unwrap_err().to_string();
    assert!(error.starts_with("split `train` has"), "{error}");
    assert!(error.contains("fewer than seq_len + 1"), "{error}");
    let error = tokenize_split(&config(root), &[], "validation", &tokenizer).unwrap_err().to_string();
    assert!(error.starts_with("data.validation_urls: "), "{error}");
}

/// The numbered corpus under `root`, tokenized by bytes as the train split: its urls, the
/// tokenizer, the split and the path of its manifest.
fn byte_split(root: &Path) -> ([String; 1], Tokenizer, TokenizedSplit, PathBuf) {
    numbered_corpus(root);
    let urls = [root.join("corpus").display().to_string()];
    let tokenizer = Tokenizer::load("byte").unwrap();
    let split = tokenize_split(&config(root), &urls, "train", &tokenizer).unwrap();
    let manifest_path = split.directory.join("manifest.json");
    (urls, tokenizer, split, manifest_path)
}

#[test]
fn a_corrupt_manifest_is_an_error_naming_it_before_anything_is_allocated() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let (urls, tokenizer, split, manifest_path) = byte_split(root);
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    // Edits manifest.json, then opens the split as a run would: the cache is reused as it is.
    let open_edited = |edit: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut manifest = original.clone();
        edit(&mut manifest);
        std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let reused = tokenize_split(&config(root), &urls, "train", &tokenizer).unwrap();
        assert_eq!(reused.files_tokenized, 0);
        Dataset::open(&reused, 16).unwrap_err().to_string()
    };
    let delete = format!("delete {} to tokenize again", split.directory.display());

    // A total of 200 GB of tokens: an error, not an allocation that aborts the process.
    let error = open_edited(&|manifest| manifest["num_tokens"] = 99_999_999_999u64.into());
    let shard_tokens = original["num_tokens"].as_u64().unwrap();
    assert_eq!(
        error,
        format!(
            "{}: num_tokens is 99999999999, but its shards' counts add up to {shard_tokens}; {delete}",
            manifest_path.display()
        )
    );
    // The total and a shard's count changed together: the shard's size on disk disagrees.
    let first_shard_tokens = original["shards"][0]["num_tokens"].as_u64().unwrap();
    let error = open_edited(&|manifest| {
        manifest["num_tokens"] = (shard_tokens - first_shard_tokens + 99_999_999_999).into();
        manifest["shards"][0]["num_tokens"] = 99_999_999_999u64.into();
    });
    let shard = split.directory.join("shard-00000.bin");
    assert!(error.starts_with(&format!("{}: holds ", shard.display())), "{error}");
    assert!(error.contains("not the 99999999999 tokens of 2 bytes"), "{error}");
    assert!(error.ends_with(&format!("that {} says; {delete}", manifest_path.display())), "{error}");
    // Counts that overflow, and a token width the loader cannot read.
    let error = open_edited(&|manifest| manifest["shards"][1]["num_tokens"] = u64::MAX.into());
    assert!(error.contains("but its shards' counts add up to more than 2^64"), "{error}");
    let error = open_edited(&|manifest| manifest["token_width"] = 3.into());
    assert_eq!(error, format!("{}: token_width is 3, not 2 or 4; {delete}", manifest_path.display()));

    std::fs::write(&manifest_path, serde_json::to_vec(&original).unwrap()).unwrap();
    let reused = tokenize_split(&config(root), &urls, "train", &tokenizer).unwrap();
    assert_eq!(Dataset::open(&reused, 16).unwrap().num_tokens(), shard_tokens);
}

#[test]
fn ids_outside_the_vocabulary_are_errors_naming_the_manifest_or_shard() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let (_, _, split, manifest_path) = byte_split(root);
    let delete = format!("delete {} to tokenize again", split.directory.display());
    assert_eq!(Dataset::open_for_model(&split, 16, 257).unwrap().num_tokens(), split.manifest.num_tokens);

    // A cache of a larger vocabulary than the model's (another tokenizer, or an edited manifest).
    let error = Dataset::open_for_model(&split, 16, 100).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{}: vocab_size is 257, ", manifest_path.display())), "{error}");
    assert!(error.contains("more than the model's vocab_size of 100 (the vocabulary of data.tokenizer)"));
    assert!(error.ends_with(&delete), "{error}");

    // An id at or above the manifest's vocabulary in the second shard (u16 ids, as byte ids fit).
    let shard = split.directory.join("shard-00001.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[6..8].copy_from_slice(&0xffffu16.to_le_bytes());
    std::fs::write(&shard, &bytes).unwrap();
    for error in [
        Dataset::open(&split, 16).unwrap_err().to_string(),
        Dataset::open_for_model(&split, 16, 257).unwrap_err().to_string(),
    ] {
        assert_eq!(
            error,
            format!(
                "{}: its token at index 3 is id 65535, outside the vocabulary of 257 ids that {} \
                 records; the shard is corrupt: {delete}",
                shard.display(),
                manifest_path.display()
            )
        );
    }
    // The largest id of the vocabulary is fine: 256, the end of text.
    bytes[6..8].copy_from_slice(&256u16.to_le_bytes());
    std::fs::write(&shard, &bytes).unwrap();
    assert!(Dataset::open_for_model(&split, 16, 257).is_ok());
    // So is a model with a larger vocabulary than the cache's.
    assert!(Dataset::open_for_model(&split, 16, 50_000).is_ok());
}
