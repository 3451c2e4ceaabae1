//! Run tracking: every logged record goes to `run_dir/metrics.jsonl` (one JSON object a line,
//! the file wandb users `pandas.read_json(lines=True)`), and to a TensorBoard event file when the
//! config asks for one. `finish` draws the loss curve into `run_dir/loss.png`.

mod plot;
pub mod tensorboard;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use crate::config::TrackerKind;
use crate::error::{Result, TrainerError};
use crate::files::write_atomically;
pub use plot::plot_losses;
use tensorboard::EventFileWriter;

/// The metrics file in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The resolved config in a run directory.
pub const CONFIG_FILE: &str = "config.yaml";
/// The loss plot in a run directory.
pub const LOSS_PLOT_FILE: &str = "loss.png";
/// The directory of TensorBoard event files in a run directory (`tensorboard --logdir` it).
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// Records a run's metrics. Each `log` reaches the OS before it returns, so a crash loses no
/// logged step.
pub struct Tracker {
    run_dir: PathBuf,
    metrics_path: PathBuf,
    metrics: BufWriter<File>,
    tensorboard: Option<EventFileWriter>,
}

impl Tracker {
    /// Opens `run_dir/metrics.jsonl` (always written, whatever `kinds` says; appended to on
    /// resume, after dropping lines whose step > `resume_step` so a resumed run doesn't
    /// duplicate steps; started afresh without `resume_step`) and, with Tensorboard in `kinds`,
    /// a new event file in `run_dir/tensorboard/`. The event file starts with a session start
    /// at the first step to come (`resume_step + 1`, or 0), so TensorBoard too drops what the
    /// run that died logged after its checkpoint (and what an earlier run in the same
    /// directory logged, for a fresh run).
    pub fn open(run_dir: &Path, kinds: &[TrackerKind], resume_step: Option<u64>) -> Result<Tracker> {
        std::fs::create_dir_all(run_dir).map_err(|error| TrainerError::io(run_dir, error))?;
        let metrics_path = run_dir.join(METRICS_FILE);
        let file = match resume_step {
            Some(step) => {
                drop_records_after(&metrics_path, step)?;
                OpenOptions::new().create(true).append(true).open(&metrics_path)
            }
            None => File::create(&metrics_path),
        }
        .map_err(|error| TrainerError::io(&metrics_path, error))?;
        let tensorboard = if kinds.contains(&TrackerKind::Tensorboard) {
            let mut writer = EventFileWriter::create(&run_dir.join(TENSORBOARD_DIR))?;
            writer.add_session_start(resume_step.map_or(0, |step| step + 1))?;
            writer.flush()?;
            Some(writer)
        } else {
            None
        };
        Ok(Tracker {
            run_dir: run_dir.to_path_buf(),
            metrics_path,
            metrics: BufWriter::new(file),
            tensorboard,
        })
    }

    /// One JSON object `{"step": step, name: value, ...}` per call (non-finite values written
    /// as null), and one TensorBoard scalar per value (tag = name; non-finite values kept, as
    /// TensorBoard shows them).
    pub fn log(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let line =
            json_line(step, values).map_err(|message| TrainerError::metrics(&self.metrics_path, message))?;
        self.metrics
            .write_all(line.as_bytes())
            .map_err(|error| TrainerError::io(&self.metrics_path, error))?;
        self.metrics.flush().map_err(|error| TrainerError::io(&self.metrics_path, error))?;
        if let Some(tensorboard) = &mut self.tensorboard {
            tensorboard.add_scalars(step, values)?;
            tensorboard.flush()?;
        }
        Ok(())
    }

    /// Records the hyperparameters / resolved config once: `run_dir/config.yaml`, and a
    /// TensorBoard text summary tagged `config` (TensorBoard's Text tab).
    pub fn log_config(&mut self, config_yaml: &str) -> Result<()> {
        write_atomically(&self.run_dir.join(CONFIG_FILE), config_yaml.as_bytes())?;
        if let Some(tensorboard) = &mut self.tensorboard {
            tensorboard.add_text(0, "config", &format!("```yaml\n{config_yaml}\n```"))?;
            tensorboard.flush()?;
        }
        Ok(())
    }

    /// Flushes, and draws `run_dir/loss.png` from metrics.jsonl (nothing to draw, no plot).
    pub fn finish(&mut self) -> Result<()> {
        self.metrics.flush().map_err(|error| TrainerError::io(&self.metrics_path, error))?;
        if let Some(tensorboard) = &mut self.tensorboard {
            tensorboard.flush()?;
        }
        let series = plot::LossSeries::read(&self.metrics_path)?;
        if series.is_empty() {
            tracing::info!("{}: no loss logged, no loss plot", self.metrics_path.display());
            return Ok(());
        }
        series.draw(&self.run_dir.join(LOSS_PLOT_FILE))
    }
}

/// `{"step":step,"name":value,...}` and a newline, names in the caller's order.
fn json_line(step: u64, values: &[(&str, f64)]) -> std::result::Result<String, String> {
    let mut line = format!("{{\"step\":{step}");
    for (index, &(name, value)) in values.iter().enumerate() {
        if name == "step" || values[..index].iter().any(|&(earlier, _)| earlier == name) {
            return Err(format!("metric {name:?} logged twice at step {step} (`step` is the record's step)"));
        }
        let value = if value.is_finite() { Json::from(value) } else { Json::Null };
        line.push(',');
        line.push_str(&Json::from(name).to_string());
        line.push(':');
        line.push_str(&value.to_string());
    }
    line.push_str("}\n");
    Ok(line)
}

/// A metrics.jsonl line as a JSON object with an integer `step`; `None` for anything else (a
/// line torn by a crash).
fn parse_record(line: &str) -> Option<(u64, Map<String, Json>)> {
    match serde_json::from_str(line) {
        Ok(Json::Object(record)) => Some((record.get("step")?.as_u64()?, record)),
        _ => None,
    }
}

/// Rewrites `path` without the records whose step is after `resume_step` (and without lines
/// that are not records). A missing file is a run that logged nothing yet.
fn drop_records_after(path: &Path, resume_step: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(TrainerError::io(path, error)),
    };
    let mut kept = String::with_capacity(text.len());
    let (mut after, mut unreadable) = (0usize, 0usize);
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        match parse_record(line) {
            Some((step, _)) if step <= resume_step => {
                kept.push_str(line);
                kept.push('\n');
            }
            Some(_) => after += 1,
            None => unreadable += 1,
        }
    }
    if unreadable > 0 {
        tracing::warn!("{}: dropped {unreadable} unreadable line(s) (torn by a crash?)", path.display());
    }
    if after > 0 {
        tracing::info!("{}: dropped {after} record(s) after the resumed step {resume_step}", path.display());
    }
    if kept == text {
        return Ok(());
    }
    write_atomically(path, kept.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_keeps_order_and_writes_non_finite_as_null() {
        let line =
            json_line(7, &[("loss", 2.5), ("lr", 1e-4), ("grad_norm", f64::NAN), ("mfu", f64::INFINITY)]);
        assert_eq!(
            line.unwrap(),
            "{\"step\":7,\"loss\":2.5,\"lr\":0.0001,\"grad_norm\":null,\"mfu\":null}\n"
        );
    }

    #[test]
    fn json_line_rejects_repeated_names() {
        assert!(json_line(1, &[("loss", 1.0), ("loss", 2.0)]).unwrap_err().contains("\"loss\" logged twice"));
        assert!(json_line(1, &[("step", 1.0)]).is_err());
    }

    #[test]
    fn torn_lines_are_not_records() {
        assert_eq!(parse_record("{\"step\":3,\"loss\":1.0}").map(|(step, _)| step), Some(3));
        assert!(parse_record("{\"step\":3,\"lo").is_none());
        assert!(parse_record("{\"loss\":1.0}").is_none());
        assert!(parse_record("[1, 2]").is_none());
    }
}
