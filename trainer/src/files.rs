//! File helpers.

use std::io::Write as _;
use std::path::Path;

use crate::error::{Result, TrainerError};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// then fsync of the directory. Readers see the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory).map_err(|error| TrainerError::io(directory, error))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let temporary = directory.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&temporary).map_err(|error| TrainerError::io(&temporary, error))?;
    file.write_all(bytes).map_err(|error| TrainerError::io(&temporary, error))?;
    file.sync_all().map_err(|error| TrainerError::io(&temporary, error))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|error| TrainerError::io(path, error))?;
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}
