//! TensorBoard event files, written without TensorFlow.
//!
//! An event file is a TFRecord stream of serialized `Event` protos: each record is the data's
//! length (u64, little-endian), the masked CRC-32C of those 8 bytes, the data, and the masked
//! CRC-32C of the data. The first event carries `file_version = "brain.Event:2"`; TensorBoard
//! reads the rest as summaries. The messages below mirror TensorFlow's `event.proto`,
//! `summary.proto` and `tensor.proto` (same field numbers), holding only the fields written here.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;

use crate::error::{Result, TrainerError};

/// The version TensorBoard expects in an event file's first event.
pub const FILE_VERSION: &str = "brain.Event:2";

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "EventContent", tags = "3, 5, 7")]
    pub content: Option<EventContent>,
}

/// The `what` oneof of `tensorflow.Event`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EventContent {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`: one tagged value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "SummaryValueContent", tags = "2, 8")]
    pub content: Option<SummaryValueContent>,
}

/// The `value` oneof of `tensorflow.Summary.Value`. Being a oneof, a `SimpleValue(0.0)` is
/// written (a plain proto3 float would drop it, and TensorBoard would not see the scalar).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum SummaryValueContent {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorflow.SummaryMetadata`: which TensorBoard plugin shows the value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
}

/// `tensorflow.TensorProto`, for a scalar string (the text plugin's data); a missing
/// `tensor_shape` is the scalar shape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.DataType.DT_STRING`.
pub const DT_STRING: i32 = 7;

/// `tensorflow.SessionLog`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `tensorflow.SessionLog.SessionStatus.START`.
pub const SESSION_START: i32 = 1;

/// CRC-32C of `bytes`, masked as TFRecord does (a CRC stored next to the data it covers would
/// otherwise make CRCs of CRCs degenerate).
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends `data` to `out` as one TFRecord.
pub fn encode_record(data: &[u8], out: &mut Vec<u8>) {
    let length = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Writes one event file. Events are buffered; [`EventFileWriter::flush`] hands them to the OS.
pub struct EventFileWriter {
    path: PathBuf,
    file: BufWriter<File>,
    record: Vec<u8>,
}

impl EventFileWriter {
    /// Creates `events.out.tfevents.{unix_secs}.{hostname}` in `directory` (with `.1`, `.2`, ...
    /// appended if a file of that name exists, so that every writer has its own file) and writes
    /// the file-version event.
    pub fn create(directory: &Path) -> Result<EventFileWriter> {
        std::fs::create_dir_all(directory).map_err(|error| TrainerError::io(directory, error))?;
        let unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let base_name = format!("events.out.tfevents.{unix_secs}.{}", hostname());
        let mut attempt = 0;
        let (path, file) = loop {
            let name = if attempt == 0 { base_name.clone() } else { format!("{base_name}.{attempt}") };
            let path = directory.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => attempt += 1,
                Err(error) => return Err(TrainerError::io(&path, error)),
            }
        };
        let mut writer = EventFileWriter { path, file: BufWriter::new(file), record: Vec::new() };
        writer.write_event(Event {
            wall_time: wall_time(),
            step: 0,
            content: Some(EventContent::FileVersion(FILE_VERSION.into())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event at `step` holding a scalar per value, tagged with its name.
    pub fn add_scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        self.add_summary(step, scalars_summary(values))
    }

    /// A text summary (shown as Markdown by TensorBoard's text plugin).
    pub fn add_text(&mut self, step: u64, tag: &str, markdown: &str) -> Result<()> {
        let value = SummaryValue {
            tag: tag.into(),
            metadata: Some(SummaryMetadata { plugin_data: Some(PluginData { plugin_name: "text".into() }) }),
            content: Some(SummaryValueContent::Tensor(TensorProto {
                dtype: DT_STRING,
                string_val: vec![markdown.as_bytes().to_vec()],
            })),
        };
        self.add_summary(step, Summary { value: vec![value] })
    }

    /// Marks the start of a session (a run, or a resumed run) whose first step is `step`.
    /// TensorBoard takes every start after a run's first as a restart and forgets what earlier
    /// files recorded at `step` and after, so a resumed run shows each step once.
    pub fn add_session_start(&mut self, step: u64) -> Result<()> {
        self.write_event(Event {
            wall_time: wall_time(),
            step: event_step(step),
            content: Some(EventContent::SessionLog(SessionLog { status: SESSION_START })),
        })
    }

    /// Hands the buffered events to the OS.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|error| TrainerError::io(&self.path, error))
    }

    fn add_summary(&mut self, step: u64, summary: Summary) -> Result<()> {
        self.write_event(Event {
            wall_time: wall_time(),
            step: event_step(step),
            content: Some(EventContent::Summary(summary)),
        })
    }

    fn write_event(&mut self, event: Event) -> Result<()> {
        self.record.clear();
        encode_record(&event.encode_to_vec(), &mut self.record);
        self.file.write_all(&self.record).map_err(|error| TrainerError::io(&self.path, error))
    }
}

/// A summary of one scalar per value, tagged with its name (stored as f32, the proto's type).
fn scalars_summary(values: &[(&str, f64)]) -> Summary {
    let value = values
        .iter()
        .map(|&(name, value)| SummaryValue {
            tag: name.into(),
            metadata: None,
            content: Some(SummaryValueContent::SimpleValue(value as f32)),
        })
        .collect();
    Summary { value }
}

fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Steps are int64 in the proto; no run reaches 2^63 steps.
fn event_step(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

/// The machine's name, for the event file's name (TensorBoard only requires `tfevents` in it).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().replace('/', "_"))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(events: &[Event]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events {
            encode_record(&event.encode_to_vec(), &mut out);
        }
        out
    }

    // Golden bytes from tensorboard 2.21's own writer (Python):
    //   RecordWriter(buf).write(Event(wall_time=1.5, step=3, summary=Summary(value=[
    //       Summary.Value(tag="loss", simple_value=2.5)])).SerializeToString())
    #[test]
    fn scalar_event_matches_tensorboard_writer() {
        let event = Event {
            wall_time: 1.5,
            step: 3,
            content: Some(EventContent::Summary(scalars_summary(&[("loss", 2.5)]))),
        };
        let expected: [u8; 42] = [
            0x1a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x9b, 0xd8, 0x2d, 0x09, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0xf8, 0x3f, 0x10, 0x03, 0x2a, 0x0d, 0x0a, 0x0b, 0x0a, 0x04, 0x6c, 0x6f, 0x73,
            0x73, 0x15, 0x00, 0x00, 0x20, 0x40, 0x81, 0xc5, 0x10, 0xf9,
        ];
        assert_eq!(records(&[event]), expected);
    }

    // Golden bytes from tensorboard 2.21's own writer (Python): a zero scalar at step 0 (written,
    // being a oneof member), then SessionLog(status=START) at step 7 with wall_time=2.0.
    #[test]
    fn zero_scalar_and_session_start_match_tensorboard_writer() {
        let zero = Event {
            wall_time: 0.0,
            step: 0,
            content: Some(EventContent::Summary(scalars_summary(&[("lr", 0.0)]))),
        };
        let session_start = Event {
            wall_time: 2.0,
            step: 7,
            content: Some(EventContent::SessionLog(SessionLog { status: SESSION_START })),
        };
        let expected: [u8; 60] = [
            0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3c, 0x37, 0xb8, 0x34, 0x2a, 0x0b, 0x0a, 0x09,
            0x0a, 0x02, 0x6c, 0x72, 0x15, 0x00, 0x00, 0x00, 0x00, 0x91, 0x31, 0x5d, 0xe0, 0x0f, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x6d, 0x53, 0x2b, 0x09, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x40, 0x10, 0x07, 0x3a, 0x02, 0x08, 0x01, 0xd1, 0x71, 0x5d, 0xcb,
        ];
        assert_eq!(records(&[zero, session_start]), expected);
    }

    #[test]
    fn writers_in_one_directory_get_their_own_files() {
        let directory = tempfile::tempdir().unwrap();
        let first = EventFileWriter::create(directory.path()).unwrap();
        let second = EventFileWriter::create(directory.path()).unwrap();
        assert_ne!(first.path(), second.path());
        for writer in [&first, &second] {
            let name = writer.path().file_name().unwrap().to_string_lossy().to_string();
            assert!(name.starts_with("events.out.tfevents."), "{name}");
        }
    }
}
