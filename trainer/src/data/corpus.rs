//! Corpus files: which files `data.train_urls` names, and the documents each holds.
//!
//! An entry is a file, a directory (searched recursively, in sorted order) or a glob. Files are
//! `.txt` (the whole file is one document), `.jsonl` and `.jsonl.gz` (one JSON object a line,
//! the document at `text_key`). Empty documents and blank lines are skipped.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Result, TrainerError};

/// How a corpus file stores its documents, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Text,
    Jsonl,
    JsonlGz,
}

impl FileKind {
    /// The kind of `path`, or `None` when its name ends in none of the known extensions.
    pub fn of(path: &Path) -> Option<FileKind> {
        let name = path.file_name()?.to_str()?;
        if name.ends_with(".jsonl.gz") {
            Some(FileKind::JsonlGz)
        } else if name.ends_with(".jsonl") {
            Some(FileKind::Jsonl)
        } else if name.ends_with(".txt") {
            Some(FileKind::Text)
        } else {
            None
        }
    }
}

const KINDS: &str = ".txt, .jsonl or .jsonl.gz";

/// The corpus files `urls` name, in order: each entry's files sorted, a file named twice kept
/// once. An entry that matches no corpus file is an error naming it.
pub fn resolve_files(urls: &[String]) -> Result<Vec<PathBuf>> {
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for url in urls {
        let matched = resolve_entry(url)?;
        if matched.is_empty() {
            return Err(TrainerError::data(url, format!("matches no {KINDS} file")));
        }
        files.extend(matched.into_iter().filter(|file| seen.insert(file.clone())));
    }
    Ok(files)
}

fn resolve_entry(url: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(url);
    if path.is_dir() {
        return files_under(path);
    }
    if path.is_file() {
        if FileKind::of(path).is_none() {
            return Err(TrainerError::data(path, format!("is not a {KINDS} file")));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    if !url.contains(['*', '?', '[']) {
        return Err(TrainerError::data(path, "no such file or directory"));
    }
    // As in a shell, `*` does not match a leading dot.
    let options = glob::MatchOptions { require_literal_leading_dot: true, ..glob::MatchOptions::new() };
    let entries = glob::glob_with(url, options)
        .map_err(|error| TrainerError::data(url, format!("invalid glob pattern: {error}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|error| {
            let path = error.path().to_path_buf();
            TrainerError::io(path, error.into())
        })?;
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else if FileKind::of(&path).is_some() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The corpus files below `directory`, depth first in name order; hidden entries are skipped.
fn files_under(directory: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(directory)
        .map_err(|error| TrainerError::io(directory, error))?
        .map(|entry| entry.map(|entry| entry.path()).map_err(|error| TrainerError::io(directory, error)))
        .collect::<Result<_>>()?;
    entries.sort();
    let mut files = Vec::new();
    for path in entries {
        if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else if FileKind::of(&path).is_some() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The documents of one corpus file, read as they are asked for. After an error (which names
/// the file, and the line for JSONL) it yields nothing more.
pub struct DocumentReader {
    path: PathBuf,
    text_key: String,
    source: Source,
    line_number: usize,
    line: String,
}

enum Source {
    /// A `.txt` file's one document, until taken.
    Whole(Option<String>),
    Lines(Box<dyn BufRead + Send>),
    Finished,
}

impl DocumentReader {
    pub fn open(path: &Path, text_key: &str) -> Result<DocumentReader> {
        let kind =
            FileKind::of(path).ok_or_else(|| TrainerError::data(path, format!("is not a {KINDS} file")))?;
        let open = || File::open(path).map_err(|error| TrainerError::io(path, error));
        let source = match kind {
            FileKind::Text => {
                let bytes = std::fs::read(path).map_err(|error| TrainerError::io(path, error))?;
                let text = String::from_utf8(bytes).map_err(|error| {
                    TrainerError::data(
                        path,
                        format!(
                            "is not UTF-8 text (invalid byte at offset {})",
                            error.utf8_error().valid_up_to()
                        ),
                    )
                })?;
                Source::Whole(Some(text))
            }
            FileKind::Jsonl => Source::Lines(Box::new(BufReader::new(open()?))),
            FileKind::JsonlGz => {
                Source::Lines(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(open()?))))
            }
        };
        Ok(DocumentReader {
            path: path.to_path_buf(),
            text_key: text_key.to_string(),
            source,
            line_number: 0,
            line: String::new(),
        })
    }

    fn line_error(&self, message: impl std::fmt::Display) -> TrainerError {
        TrainerError::data(&self.path, format!("line {}: {message}", self.line_number))
    }

    /// The document on the current JSONL line; `None` for a blank line.
    fn parse_line(&self) -> Result<Option<String>> {
        let line = self.line.trim();
        if line.is_empty() {
            return Ok(None);
        }
        let value: Value =
            serde_json::from_str(line).map_err(|error| self.line_error(format!("invalid JSON: {error}")))?;
        let Value::Object(mut object) = value else {
            return Err(self.line_error("expected a JSON object"));
        };
        match object.remove(&self.text_key) {
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.line_error(format!(
                "field `{}` is {}, not a string",
                self.text_key,
                json_kind(&other)
            ))),
            None => Err(self.line_error(format!(
                "no field `{}` (set data.text_key to the field holding the text)",
                self.text_key
            ))),
        }
    }

    fn next_line_document(&mut self) -> Option<Result<String>> {
        loop {
            let Source::Lines(reader) = &mut self.source else { return None };
            self.line.clear();
            self.line_number += 1;
            match reader.read_line(&mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => return Some(Err(self.line_error(format!("cannot read: {error}")))),
            }
            match self.parse_line() {
                Ok(Some(text)) if !text.is_empty() => return Some(Ok(text)),
                Ok(_) => {}
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Iterator for DocumentReader {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        let item = match &mut self.source {
            Source::Whole(text) => text.take().filter(|text| !text.is_empty()).map(Ok),
            Source::Lines(_) => self.next_line_document(),
            Source::Finished => None,
        };
        if !matches!(item, Some(Ok(_))) {
            self.source = Source::Finished;
        }
        item
    }
}
