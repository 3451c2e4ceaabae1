//! Checkpoints of a training run: parameters, optimizer state, data position, RNG state and the
//! resolved config, written so that a crash or a preemption never loses the last good one.
//!
//! A checkpoint is a directory `base_path/step-{step:08}/` holding `params.safetensors`,
//! `opt_state.safetensors` and `metadata.json` (format version, step, data position, RNG state,
//! config as YAML text, creation time in unix seconds, and the sha256 and size of each tensor
//! file). It is built in a hidden temporary directory, every file fsync'd, then renamed into
//! place, so a directory named `step-*` that holds `metadata.json` is always complete.
//! Hidden directories a crash can leave behind are cleaned up by [`Checkpointer::latest`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sirocco::hlo::TensorType;
use sirocco::HostTensor;

use crate::config::CheckpointerConfig;
use crate::error::{Result, TrainerError};
use crate::tensors::first_non_finite;

/// Version of the directory layout and of `metadata.json`; `load` refuses newer ones.
pub const FORMAT_VERSION: u64 = 1;

const PARAMS_FILE: &str = "params.safetensors";
const OPT_STATE_FILE: &str = "opt_state.safetensors";
const METADATA_FILE: &str = "metadata.json";

const STEP_PREFIX: &str = "step-";
/// A checkpoint being written (`.tmp-step-{step}-{pid}`).
const TEMPORARY_PREFIX: &str = ".tmp-step-";
/// A checkpoint moved aside while a save of the same step replaces it; restored if the crash
/// came before the new one took its name.
const REPLACED_PREFIX: &str = ".old-step-";
/// A pruned checkpoint being deleted: renamed first, so a half-deleted one never looks complete.
const DELETED_PREFIX: &str = ".deleting-step-";

/// Hidden directories this process is writing or deleting right now; `latest` leaves them alone
/// (a background save may be in flight while the train loop looks for checkpoints).
static IN_FLIGHT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Everything needed to resume a run where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointContents {
    /// Optimizer steps done.
    pub step: u64,
    pub params: Vec<(String, HostTensor)>,
    pub opt_state: Vec<(String, HostTensor)>,
    /// The data loader's position, opaque here.
    pub data_position: serde_json::Value,
    /// The RNG state, opaque here.
    pub rng: serde_json::Value,
    /// The resolved job config.
    pub config: serde_yaml::Value,
}

#[derive(Serialize, Deserialize)]
struct Metadata {
    format_version: u64,
    step: u64,
    data_position: serde_json::Value,
    rng: serde_json::Value,
    /// The job config as YAML text, readable as it is.
    config: String,
    /// Unix seconds.
    created: u64,
    /// sha256 and size of each tensor file, by file name.
    files: BTreeMap<String, FileDigest>,
}

#[derive(Serialize, Deserialize)]
struct FileDigest {
    sha256: String,
    size: u64,
}

impl FileDigest {
    fn of(bytes: &[u8]) -> FileDigest {
        FileDigest { sha256: format!("{:x}", Sha256::digest(bytes)), size: bytes.len() as u64 }
    }
}

/// Decides when to save and writes, finds and prunes the checkpoints of `base_path`.
///
/// Dropping it waits for a background save still in flight (and logs its failure), so a
/// checkpoint started before a clean exit is finished.
pub struct Checkpointer {
    config: CheckpointerConfig,
    last_save: Instant,
    in_flight: Option<JoinHandle<Result<PathBuf>>>,
}

impl Checkpointer {
    pub fn new(config: &CheckpointerConfig) -> Checkpointer {
        Checkpointer { config: config.clone(), last_save: Instant::now(), in_flight: None }
    }

    /// True when a save is due after finishing `step`: `step` is a positive multiple of
    /// `save_interval_steps`, or `save_interval_minutes` passed since the last save (or since
    /// creation). A zero interval disables that trigger.
    pub fn due(&self, step: u64) -> bool {
        self.due_at(step, Instant::now())
    }

    /// [`Checkpointer::due`] with the clock read by the caller.
    pub fn due_at(&self, step: u64, now: Instant) -> bool {
        let interval_steps = self.config.save_interval_steps;
        let by_steps = interval_steps > 0 && step > 0 && step % interval_steps == 0;
        let minutes = self.config.save_interval_minutes;
        let by_time = minutes > 0.0
            && minutes.is_finite()
            && now.saturating_duration_since(self.last_save) >= Duration::from_secs_f64(minutes * 60.0);
        by_steps || by_time
    }

    /// Writes `base_path/step-{step:08}/` atomically (replacing a checkpoint of the same step)
    /// and deletes the oldest complete checkpoints beyond `keep`. Waits first for a background
    /// save in flight and returns its error, if it failed, without saving.
    pub fn save(&mut self, contents: &CheckpointContents) -> Result<PathBuf> {
        self.wait()?;
        self.last_save = Instant::now();
        save_and_prune(&self.config, contents)
    }

    /// [`Checkpointer::save`] on a background thread; [`Checkpointer::wait`] returns its result.
    /// At most one save is in flight: this first waits for the previous one and, if that one
    /// failed, returns its error without starting this one.
    pub fn save_in_background(&mut self, contents: CheckpointContents) -> Result<()> {
        self.wait()?;
        self.last_save = Instant::now();
        let config = self.config.clone();
        let handle = std::thread::Builder::new()
            .name(format!("checkpoint-step-{}", contents.step))
            .spawn(move || save_and_prune(&config, &contents))
            .map_err(|error| {
                TrainerError::checkpoint(
                    &self.config.base_path,
                    format!("cannot start the save thread: {error}"),
                )
            })?;
        self.in_flight = Some(handle);
        Ok(())
    }

    /// Waits for the background save, if any: its directory, or `None` when none was in flight.
    pub fn wait(&mut self) -> Result<Option<PathBuf>> {
        let Some(handle) = self.in_flight.take() else {
            return Ok(None);
        };
        match handle.join() {
            Ok(result) => result.map(Some),
            Err(_) => Err(TrainerError::checkpoint(
                &self.config.base_path,
                "the background save panicked; the previous checkpoint is still the latest",
            )),
        }
    }

    /// The newest complete checkpoint directory (by step), if any. Temporary directories are
    /// never returned; those a crash left behind are removed (a replaced checkpoint whose
    /// replacement never took its name is put back). Contents are not checked: [`load`] does.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        let base = &self.config.base_path;
        if !base.exists() {
            return Ok(None);
        }
        clean_up_after_crashes(base)?;
        let StepEntries { mut complete, incomplete } = step_entries(base)?;
        for (path, reason) in incomplete {
            tracing::warn!("skipping {}: {reason}", path.display());
        }
        Ok(complete.pop().map(|(_, path)| path))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Err(error) = self.wait() {
            tracing::error!("checkpoint save failed: {error}");
        }
    }
}

/// Reads and verifies the checkpoint in `dir`: every file present, sizes and sha256 as
/// recorded in `metadata.json`, its step that of the directory's name (`step-N`, where it has
/// one), tensor files parsable, every float finite.
pub fn load(dir: &Path) -> Result<CheckpointContents> {
    let metadata_path = dir.join(METADATA_FILE);
    let metadata_bytes = std::fs::read(&metadata_path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => {
            TrainerError::checkpoint(&metadata_path, "missing: not a complete checkpoint directory")
        }
        _ => TrainerError::io(&metadata_path, error),
    })?;
    let metadata_json: serde_json::Value = serde_json::from_slice(&metadata_bytes)
        .map_err(|error| TrainerError::checkpoint(&metadata_path, format!("not valid JSON: {error}")))?;
    let version = metadata_json.get("format_version").and_then(serde_json::Value::as_u64);
    match version {
        Some(version) if version <= FORMAT_VERSION => {}
        Some(version) => {
            return Err(TrainerError::checkpoint(
                &metadata_path,
                format!(
                    "format_version {version} is newer than this sirocco reads ({FORMAT_VERSION}); \
                     resume with the sirocco that wrote it"
                ),
            ))
        }
        None => return Err(TrainerError::checkpoint(&metadata_path, "format_version is missing")),
    }
    let metadata: Metadata = serde_json::from_value(metadata_json)
        .map_err(|error| TrainerError::checkpoint(&metadata_path, format!("malformed: {error}")))?;
    let named_step =
        dir.file_name().and_then(|name| name.to_str()?.strip_prefix(STEP_PREFIX)?.parse::<u64>().ok());
    if let Some(named_step) = named_step.filter(|&named| named != metadata.step) {
        return Err(TrainerError::checkpoint(
            &metadata_path,
            format!(
                "step is {}, but the directory is the checkpoint of step {named_step} (was \
                 metadata.json edited or copied from another checkpoint?)",
                metadata.step
            ),
        ));
    }
    let config = serde_yaml::from_str(&metadata.config).map_err(|error| {
        TrainerError::checkpoint(&metadata_path, format!("config is not valid YAML: {error}"))
    })?;
    let contents = CheckpointContents {
        step: metadata.step,
        params: read_verified(dir, PARAMS_FILE, &metadata)?,
        opt_state: read_verified(dir, OPT_STATE_FILE, &metadata)?,
        data_position: metadata.data_position,
        rng: metadata.rng,
        config,
    };
    check_finite_on_load(dir, &contents)?;
    Ok(contents)
}

/// Refuses a checkpoint holding a NaN or an infinity (saves refuse them, so it was written by
/// something else or damaged): resuming from it would fail later, blaming the next checkpoint.
fn check_finite_on_load(dir: &Path, contents: &CheckpointContents) -> Result<()> {
    for (file_name, group, tensors) in
        [(PARAMS_FILE, "params", &contents.params), (OPT_STATE_FILE, "opt_state", &contents.opt_state)]
    {
        for (name, tensor) in tensors {
            if let Some((index, value)) = first_non_finite(tensor) {
                return Err(TrainerError::checkpoint(
                    dir.join(file_name),
                    format!(
                        "{group} `{name}` holds {value} at flat index {index}; not resuming from step \
                         {}: move {} aside to resume from the checkpoint before it",
                        contents.step,
                        dir.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that a loaded checkpoint holds exactly the tensors the run expects, with the same
/// dtypes and shapes; the error lists every difference, naming the tensor and both types.
pub fn check_compatible(
    contents: &CheckpointContents,
    params: &[(String, TensorType)],
    opt_state: &[(String, TensorType)],
) -> Result<()> {
    let mut problems = Vec::new();
    compare_tensors("params", &contents.params, params, &mut problems);
    compare_tensors("opt_state", &contents.opt_state, opt_state, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TrainerError::IncompatibleCheckpoint { step: contents.step, problems })
    }
}

fn compare_tensors(
    group: &str,
    found: &[(String, HostTensor)],
    expected: &[(String, TensorType)],
    problems: &mut Vec<String>,
) {
    let found: BTreeMap<&str, TensorType> = found
        .iter()
        .map(|(name, tensor)| (name.as_str(), TensorType::new(tensor.dtype(), tensor.dims())))
        .collect();
    let expected_names: HashSet<&str> = expected.iter().map(|(name, _)| name.as_str()).collect();
    for (name, expected_type) in expected {
        match found.get(name.as_str()) {
            None => problems.push(format!(
                "{group} `{name}`: missing from the checkpoint (the run expects {expected_type})"
            )),
            Some(found_type) if found_type != expected_type => problems.push(format!(
                "{group} `{name}`: the checkpoint has {found_type}, the run expects {expected_type}"
            )),
            Some(_) => {}
        }
    }
    for (name, found_type) in &found {
        if !expected_names.contains(name) {
            problems.push(format!("{group} `{name}`: in the checkpoint ({found_type}) but not in the run"));
        }
    }
}

fn save_and_prune(config: &CheckpointerConfig, contents: &CheckpointContents) -> Result<PathBuf> {
    let base = &config.base_path;
    if config.keep == 0 {
        return Err(TrainerError::checkpoint(base, "trainer.checkpointer.keep must be at least 1"));
    }
    check_tensors(&step_directory(base, contents.step), contents)?;
    let started = Instant::now();
    let directory = write_checkpoint(base, contents)?;
    prune(base, config.keep, &directory)?;
    tracing::info!("saved checkpoint {} in {:.1} s", directory.display(), started.elapsed().as_secs_f64());
    Ok(directory)
}

/// Refuses duplicate names and non-finite floats: a NaN checkpoint would replace a good one.
fn check_tensors(directory: &Path, contents: &CheckpointContents) -> Result<()> {
    for (group, tensors) in [("params", &contents.params), ("opt_state", &contents.opt_state)] {
        let mut names = HashSet::new();
        for (name, tensor) in tensors {
            if !names.insert(name.as_str()) {
                return Err(TrainerError::checkpoint(
                    directory,
                    format!("{group} holds two tensors named `{name}`; not saving step {}", contents.step),
                ));
            }
            if let Some((index, value)) = first_non_finite(tensor) {
                return Err(TrainerError::checkpoint(
                    directory,
                    format!(
                        "{group} `{name}` holds {value} at flat index {index}; not saving step {} so \
                         that the last good checkpoint stays the latest",
                        contents.step
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Removes its directory from [`IN_FLIGHT`] when dropped.
struct InFlight(Vec<PathBuf>);

impl InFlight {
    fn claim(paths: &[&Path]) -> InFlight {
        let mut set = IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        set.extend(paths.iter().map(|path| path.to_path_buf()));
        InFlight(paths.iter().map(|path| path.to_path_buf()).collect())
    }

    fn holds(path: &Path) -> bool {
        IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(path)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut set = IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for path in &self.0 {
            set.remove(path);
        }
    }
}

fn step_directory(base: &Path, step: u64) -> PathBuf {
    base.join(format!("{STEP_PREFIX}{step:08}"))
}

fn write_checkpoint(base: &Path, contents: &CheckpointContents) -> Result<PathBuf> {
    let step = contents.step;
    let pid = std::process::id();
    let temporary = base.join(format!("{TEMPORARY_PREFIX}{step}-{pid}"));
    let replaced = base.join(format!("{REPLACED_PREFIX}{step}-{pid}"));
    let _claim = InFlight::claim(&[&temporary, &replaced]);
    std::fs::create_dir_all(base).map_err(|error| TrainerError::io(base, error))?;
    if temporary.exists() {
        remove_entry(&temporary)?;
    }
    std::fs::create_dir(&temporary).map_err(|error| TrainerError::io(&temporary, error))?;
    let written =
        fill_directory(&temporary, contents).and_then(|()| publish(base, &temporary, &replaced, step));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&temporary);
    }
    written
}

/// Writes the two tensor files, then `metadata.json` (which marks the directory complete),
/// each fsync'd, then fsyncs the directory.
fn fill_directory(directory: &Path, contents: &CheckpointContents) -> Result<()> {
    let mut files = BTreeMap::new();
    for (file_name, tensors) in [(PARAMS_FILE, &contents.params), (OPT_STATE_FILE, &contents.opt_state)] {
        let path = directory.join(file_name);
        let bytes = crate::tensors::to_bytes(tensors, None)
            .map_err(|error| TrainerError::checkpoint(&path, error.to_string()))?;
        write_synced(&path, &bytes)?;
        files.insert(file_name.to_string(), FileDigest::of(&bytes));
    }
    let metadata_path = directory.join(METADATA_FILE);
    let config = serde_yaml::to_string(&contents.config)
        .map_err(|error| TrainerError::checkpoint(&metadata_path, format!("config: {error}")))?;
    let created = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |time| time.as_secs());
    let metadata = Metadata {
        format_version: FORMAT_VERSION,
        step: contents.step,
        data_position: contents.data_position.clone(),
        rng: contents.rng.clone(),
        config,
        created,
        files,
    };
    let bytes = serde_json::to_vec_pretty(&metadata)
        .map_err(|error| TrainerError::checkpoint(&metadata_path, error.to_string()))?;
    write_synced(&metadata_path, &bytes)?;
    sync_directory(directory)
}

/// Renames the finished `temporary` to `step-{step:08}`; an existing checkpoint of that step
/// is first moved to `replaced` and removed once the new one holds the name.
fn publish(base: &Path, temporary: &Path, replaced: &Path, step: u64) -> Result<PathBuf> {
    let directory = step_directory(base, step);
    let replacing = directory.exists();
    if replacing {
        if replaced.exists() {
            remove_entry(replaced)?;
        }
        std::fs::rename(&directory, replaced).map_err(|error| TrainerError::io(&directory, error))?;
    }
    std::fs::rename(temporary, &directory).map_err(|error| TrainerError::io(&directory, error))?;
    sync_directory(base)?;
    if replacing {
        remove_entry(replaced)?;
    }
    Ok(directory)
}

/// Deletes the oldest complete checkpoints beyond `keep`, never `just_saved` (a run resumed
/// from an older step may find newer ones).
fn prune(base: &Path, keep: usize, just_saved: &Path) -> Result<()> {
    let checkpoints = complete_checkpoints(base)?;
    let excess = checkpoints.len().saturating_sub(keep);
    for (step, directory) in checkpoints.into_iter().filter(|(_, path)| path != just_saved).take(excess) {
        let deleted = base.join(format!("{DELETED_PREFIX}{step}-{}", std::process::id()));
        let _claim = InFlight::claim(&[&deleted]);
        if deleted.exists() {
            remove_entry(&deleted)?;
        }
        std::fs::rename(&directory, &deleted).map_err(|error| TrainerError::io(&directory, error))?;
        remove_entry(&deleted)?;
        tracing::info!("deleted checkpoint {} (keep: {keep})", directory.display());
    }
    Ok(())
}

/// The `step-*` entries of a checkpoint directory.
struct StepEntries {
    /// Complete checkpoints (`step-N` directories holding `metadata.json`), oldest first.
    complete: Vec<(u64, PathBuf)>,
    /// The other `step-*` entries, with why each is not a checkpoint: [`Checkpointer::latest`]
    /// skips them (a checkpoint damaged by hand must not stop a run that has an older good one)
    /// but says so.
    incomplete: Vec<(PathBuf, String)>,
}

fn step_entries(base: &Path) -> Result<StepEntries> {
    let mut entries = StepEntries { complete: Vec::new(), incomplete: Vec::new() };
    let listing = std::fs::read_dir(base).map_err(|error| TrainerError::io(base, error))?;
    for entry in listing {
        let entry = entry.map_err(|error| TrainerError::io(base, error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(digits) = name.strip_prefix(STEP_PREFIX) else { continue };
        let path = entry.path();
        let problem = match digits.parse::<u64>() {
            Err(_) => format!("`{digits}` is not a step number, so it is not a checkpoint"),
            Ok(_) if !path.is_dir() => "not a directory, so not a checkpoint".into(),
            Ok(_) if !path.join(METADATA_FILE).is_file() => {
                format!("no {METADATA_FILE} in it, so not a complete checkpoint")
            }
            Ok(step) => {
                entries.complete.push((step, path));
                continue;
            }
        };
        entries.incomplete.push((path, problem));
    }
    entries.complete.sort();
    entries.incomplete.sort();
    Ok(entries)
}

/// Complete checkpoints (`step-N` directories holding `metadata.json`), oldest first.
fn complete_checkpoints(base: &Path) -> Result<Vec<(u64, PathBuf)>> {
    Ok(step_entries(base)?.complete)
}

/// Removes what a crashed save or prune left behind, except what this process is writing, and
/// puts back a replaced checkpoint whose replacement never took its name.
fn clean_up_after_crashes(base: &Path) -> Result<()> {
    for (name, path) in directory_entries(base)? {
        let stale =
            [TEMPORARY_PREFIX, REPLACED_PREFIX, DELETED_PREFIX].iter().any(|prefix| name.starts_with(prefix));
        if !stale || InFlight::holds(&path) {
            continue;
        }
        if let Some(step) = name.strip_prefix(REPLACED_PREFIX).and_then(parse_hidden_step) {
            let directory = step_directory(base, step);
            if !directory.exists() && path.join(METADATA_FILE).is_file() {
                tracing::warn!(
                    "restoring {} to {} (a save crashed while replacing it)",
                    path.display(),
                    directory.display()
                );
                std::fs::rename(&path, &directory).map_err(|error| TrainerError::io(&path, error))?;
                sync_directory(base)?;
                continue;
            }
        }
        tracing::warn!("removing {} left by an interrupted checkpoint save", path.display());
        remove_entry(&path)?;
    }
    Ok(())
}

/// The step of a hidden directory's name after its prefix (`{step}-{pid}`).
fn parse_hidden_step(rest: &str) -> Option<u64> {
    rest.split_once('-').and_then(|(step, _pid)| step.parse().ok())
}

/// Names and paths of the subdirectories of `base`.
fn directory_entries(base: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(base).map_err(|error| TrainerError::io(base, error))?;
    let mut directories = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| TrainerError::io(base, error))?;
        let path = entry.path();
        if path.is_dir() {
            directories.push((entry.file_name().to_string_lossy().into_owned(), path));
        }
    }
    Ok(directories)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|error| TrainerError::io(path, error))?;
    file.write_all(bytes).map_err(|error| TrainerError::io(path, error))?;
    file.sync_all().map_err(|error| TrainerError::io(path, error))
}

/// Makes renames and new entries in `directory` durable. Filesystems that cannot fsync a
/// directory (they answer EINVAL or "unsupported") are accepted as they are.
fn sync_directory(directory: &Path) -> Result<()> {
    let synced = std::fs::File::open(directory).and_then(|handle| handle.sync_all());
    match synced {
        Err(error)
            if !matches!(
                error.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) =>
        {
            Err(TrainerError::io(directory, error))
        }
        _ => Ok(()),
    }
}

/// Removes a directory tree, or a file where one stands in for a checkpoint directory (a
/// `step-*` file a save replaces).
fn remove_entry(path: &Path) -> Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    };
    removed.map_err(|error| TrainerError::io(path, error))
}

/// Reads `file_name` of the checkpoint in `dir`, checks its size and sha256 against the
/// metadata, then parses it.
fn read_verified(dir: &Path, file_name: &str, metadata: &Metadata) -> Result<Vec<(String, HostTensor)>> {
    let path = dir.join(file_name);
    let digest = metadata.files.get(file_name).ok_or_else(|| {
        TrainerError::checkpoint(
            dir.join(METADATA_FILE),
            format!("records no sha256 and size for {file_name}"),
        )
    })?;
    let bytes = std::fs::read(&path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => TrainerError::checkpoint(&path, "missing from the checkpoint"),
        _ => TrainerError::io(&path, error),
    })?;
    if bytes.len() as u64 != digest.size {
        return Err(TrainerError::checkpoint(
            &path,
            format!("size {} bytes, metadata.json says {} (truncated or corrupt)", bytes.len(), digest.size),
        ));
    }
    if FileDigest::of(&bytes).sha256 != digest.sha256 {
        return Err(TrainerError::checkpoint(&path, "sha256 mismatch (corrupt or truncated)"));
    }
    crate::tensors::read_bytes(&bytes, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_directory_names_give_their_step() {
        assert_eq!(parse_hidden_step("120-4242"), Some(120));
        assert_eq!(parse_hidden_step("x-4242"), None);
        assert_eq!(parse_hidden_step("120"), None);
    }
}
