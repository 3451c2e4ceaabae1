//! An on-disk cache of compiled executables, so that a restarted job skips XLA compilation.
//!
//! An entry is the plugin's serialized executable behind a header with a checksum. The checksum
//! is verified before the bytes reach the plugin, which may abort the process on a corrupt blob;
//! a corrupt or unloadable entry is logged, recompiled and rewritten.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::client::Client;
use super::error::{PjrtError, Result};
use super::executable::Executable;

/// Start of every entry file.
const MAGIC: &[u8; 8] = b"SRCXEXEC";
/// Version of the entry layout (magic, version, payload length, payload sha256, payload).
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = MAGIC.len() + 4 + 8 + 32;

/// Compiled executables stored in a directory, keyed by everything that shapes the result.
#[derive(Debug)]
pub struct CompileCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How often a cache was used: a hit loaded an executable, a miss compiled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

impl CompileCache {
    /// A cache in `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<CompileCache> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|error| PjrtError::Cache {
            path: dir.clone(),
            reason: format!("cannot create the cache directory: {error}"),
        })?;
        Ok(CompileCache { dir, hits: AtomicU64::new(0), misses: AtomicU64::new(0) })
    }

    /// `$SIROCCO_COMPILE_CACHE`, else `$XDG_CACHE_HOME/sirocco/compile`, else
    /// `~/.cache/sirocco/compile` (the system temporary directory when there is no home).
    pub fn default_dir() -> PathBuf {
        let env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
        if let Some(dir) = env("SIROCCO_COMPILE_CACHE") {
            return dir;
        }
        let cache_home = env("XDG_CACHE_HOME")
            .or_else(|| env("HOME").map(|home| home.join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        cache_home.join("sirocco").join("compile")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }

    /// The cached executable of `program` compiled with `encoded_options` by `client`'s plugin,
    /// or a fresh compilation, which is then stored.
    pub(crate) fn load_or_compile(
        &self,
        client: &Client,
        program: &str,
        encoded_options: &[u8],
    ) -> Result<Executable> {
        let path = self.dir.join(format!("{}.xla", cache_key(client, program, encoded_options)));
        if let Some(payload) = read_entry(&path) {
            match client.deserialize_executable(&payload) {
                Ok(executable) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(executable);
                }
                Err(error) => tracing::warn!(
                    "compile cache entry {} does not load ({error}); recompiling",
                    path.display()
                ),
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let executable = client.compile_encoded(program, encoded_options)?;
        match executable.serialize() {
            Ok(payload) => {
                if let Err(error) = write_entry(&path, &payload) {
                    tracing::warn!("cannot write compile cache entry {}: {error}", path.display());
                }
            }
            Err(error) => {
                tracing::warn!("cannot serialize `{}` for the compile cache: {error}", executable.name())
            }
        }
        Ok(executable)
    }
}

/// sha256 over everything that determines the compiled executable: program, options, plugin
/// (path, C API version, XLA version), platform and `XLA_FLAGS`. Each part is length-prefixed.
fn cache_key(client: &Client, program: &str, encoded_options: &[u8]) -> String {
    let plugin = client.plugin();
    let (major, minor) = plugin.api_version();
    let xla_version =
        plugin.xla_version().map_or_else(|| "unknown".to_owned(), |version| version.to_string());
    let api_version = format!("{major}.{minor}");
    // XLA's flags (read once per process, when the plugin opened) change what it compiles.
    let xla_flags = plugin.xla_flags();
    let parts: [&[u8]; 9] = [
        program.as_bytes(),
        encoded_options,
        plugin.path().as_os_str().as_encoded_bytes(),
        api_version.as_bytes(),
        client.platform_name().as_bytes(),
        client.platform_version().as_bytes(),
        xla_version.as_bytes(),
        xla_flags.as_bytes(),
        &FORMAT_VERSION.to_le_bytes(),
    ];
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// The verified payload of the entry at `path`; `None` (logged unless simply absent) when it is
/// missing, unreadable, truncated or corrupt.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!("cannot read compile cache entry {}: {error}; recompiling", path.display());
            return None;
        }
    };
    match decode_entry(&bytes) {
        Ok(payload) => Some(payload.to_vec()),
        Err(problem) => {
            tracing::warn!("ignoring compile cache entry {}: {problem}; recompiling", path.display());
            None
        }
    }
}

fn encode_entry(payload: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(HEADER_LEN + payload.len());
    entry.extend_from_slice(MAGIC);
    entry.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    entry.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    entry.extend_from_slice(&Sha256::digest(payload));
    entry.extend_from_slice(payload);
    entry
}

/// The payload of an entry whose header and checksum are intact.
fn decode_entry(entry: &[u8]) -> std::result::Result<&[u8], String> {
    if entry.len() < HEADER_LEN {
        return Err(format!("{} bytes is shorter than the {HEADER_LEN}-byte header", entry.len()));
    }
    let (header, payload) = entry.split_at(HEADER_LEN);
    let (magic, rest) = header.split_at(MAGIC.len());
    let (version, rest) = rest.split_at(4);
    let (length, checksum) = rest.split_at(8);
    if magic != MAGIC {
        return Err("not a sirocco compile cache entry".into());
    }
    let version = u32::from_le_bytes(version.try_into().expect("split at 4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!("entry format {version}, expected {FORMAT_VERSION}"));
    }
    let length = u64::from_le_bytes(length.try_into().expect("split at 8 bytes"));
    if length != payload.len() as u64 {
        return Err(format!("header announces {length} payload bytes, the file has {}", payload.len()));
    }
    if Sha256::digest(payload).as_slice() != checksum {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// Writes the entry atomically: a temporary file in the same directory, renamed into place, so
/// readers never see a partial entry.
fn write_entry(path: &Path, payload: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&encode_entry(payload))?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if written.is_err() {
        // Best effort: the temporary may not even exist.
        let _ = fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let payload = b"serialized executable".to_vec();
        let entry = encode_entry(&payload);
        assert_eq!(decode_entry(&entry).unwrap(), payload.as_slice());

        let mut flipped = entry.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode_entry(&flipped).unwrap_err().contains("checksum"));
        assert!(decode_entry(&entry[..entry.len() - 1]).unwrap_err().contains("payload bytes"));
        assert!(decode_entry(&entry[..10]).unwrap_err().contains("shorter"));
        let mut foreign = entry;
        foreign[0] = b'X';
        assert!(decode_entry(&foreign).unwrap_err().contains("not a sirocco"));
    }

    #[test]
    fn writes_replace_entries_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry.xla");
        write_entry(&path, b"first").unwrap();
        write_entry(&path, b"second").unwrap();
        assert_eq!(read_entry(&path).unwrap(), b"second");
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("entry.xla")]);
    }
}
