//! TensorBoard event files read back: the TFRecord framing and its CRCs are checked here
//! independently of the writer, then each record is decoded as a `tensorflow.Event`.

use std::path::{Path, PathBuf};

use prost::Message as _;
use trainer::config::TrackerKind;
use trainer::metrics::tensorboard::{Event, EventContent, SummaryValueContent, DT_STRING, SESSION_START};
use trainer::metrics::Tracker;

/// TFRecord's CRC mask, written as the format defines it rather than as the writer computes it.
#[allow(clippy::manual_rotate)]
fn masked(crc: u32) -> u32 {
    ((crc >> 15) | (crc << 17)).wrapping_add(0xa282ead8)
}

/// The records of an event file; panics on a bad length, CRC or trailing bytes.
fn records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut rest = &bytes[..];
    let mut records = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 12, "truncated record header");
        let (length_bytes, after) = rest.split_at(8);
        let length = u64::from_le_bytes(length_bytes.try_into().unwrap()) as usize;
        let length_crc = u32::from_le_bytes(after[..4].try_into().unwrap());
        assert_eq!(
            length_crc,
            masked(crc32c::crc32c(length_bytes)),
            "length CRC of record {}",
            records.len()
        );
        let after = &after[4..];
        assert!(after.len() >= length + 4, "truncated record data");
        let (data, after) = after.split_at(length);
        let data_crc = u32::from_le_bytes(after[..4].try_into().unwrap());
        assert_eq!(data_crc, masked(crc32c::crc32c(data)), "data CRC of record {}", records.len());
        records.push(data.to_vec());
        rest = &after[4..];
    }
    records
}

fn events(path: &Path) -> Vec<Event> {
    records(path).iter().map(|data| Event::decode(&data[..]).unwrap()).collect()
}

fn event_files(run_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(run_dir.join("tensorboard")).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.sort();
    files
}

/// (step, tag, value) of every scalar.
fn scalars(events: &[Event]) -> Vec<(i64, String, f32)> {
    let mut scalars = Vec::new();
    for event in events {
        if let Some(EventContent::Summary(summary)) = &event.content {
            for value in &summary.value {
                if let Some(SummaryValueContent::SimpleValue(simple)) = value.content {
                    scalars.push((event.step, value.tag.clone(), simple));
                }
            }
        }
    }
    scalars
}

fn assert_session_start(event: &Event, step: i64) {
    let Some(EventContent::SessionLog(session_log)) = &event.content else { panic!("{event:?}") };
    assert_eq!((event.step, session_log.status), (step, SESSION_START));
}

#[test]
fn event_file_holds_the_version_session_start_config_and_scalars() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::open(run_dir.path(), &[TrackerKind::Tensorboard], None).unwrap();
    tracker.log_config("optimizer:\n  type: adamw\n").unwrap();
    tracker.log(1, &[("loss", 4.5), ("lr", 0.0), ("grad_norm", 1.25)]).unwrap();
    tracker.log(2, &[("loss", 3.75), ("lr", 1e-4)]).unwrap();
    tracker.log(2, &[("eval_loss", 3.5), ("eval_bpb", f64::NAN)]).unwrap();
    tracker.finish().unwrap();

    let files = event_files(run_dir.path());
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    let parts: Vec<&str> = name.splitn(5, '.').collect();
    assert_eq!(parts[..3], ["events", "out", "tfevents"], "{name}");
    assert!(parts[3].parse::<u64>().unwrap() > 1_600_000_000, "{name}: unix seconds");
    assert!(!parts[4].is_empty(), "{name}: host name");

    let events = events(&files[0]);
    assert_eq!(events[0].content, Some(EventContent::FileVersion("brain.Event:2".into())));
    assert!(events.iter().all(|event| event.wall_time > 1.6e9));

    assert_session_start(&events[1], 0);
    let Some(EventContent::Summary(config)) = &events[2].content else { panic!("{:?}", events[2]) };
    let value = &config.value[0];
    assert_eq!(value.tag, "config");
    assert_eq!(value.metadata.as_ref().unwrap().plugin_data.as_ref().unwrap().plugin_name, "text");
    let Some(SummaryValueContent::Tensor(tensor)) = &value.content else { panic!("{value:?}") };
    assert_eq!(tensor.dtype, DT_STRING);
    assert_eq!(tensor.string_val, [b"```yaml\noptimizer:\n  type: adamw\n\n```".to_vec()]);

    let scalars = scalars(&events);
    assert_eq!(scalars.len(), 7);
    assert_eq!(
        scalars[..6],
        [
            (1, "loss".into(), 4.5),
            (1, "lr".into(), 0.0),
            (1, "grad_norm".into(), 1.25),
            (2, "loss".into(), 3.75),
            (2, "lr".into(), 1e-4),
            (2, "eval_loss".into(), 3.5),
        ]
    );
    assert_eq!((scalars[6].0, scalars[6].1.as_str()), (2, "eval_bpb"));
    assert!(scalars[6].2.is_nan());
}

#[test]
fn a_resumed_run_writes_a_new_file_that_starts_a_session_after_the_checkpoint() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::open(run_dir.path(), &[TrackerKind::Tensorboard], None).unwrap();
    for step in 1..=5 {
        tracker.log(step, &[("loss", step as f64)]).unwrap();
    }
    drop(tracker);
    let mut tracker =
        Tracker::open(run_dir.path(), &[TrackerKind::Json, TrackerKind::Tensorboard], Some(3)).unwrap();
    tracker.log(4, &[("loss", 40.0)]).unwrap();
    drop(tracker);

    let files = event_files(run_dir.path());
    assert_eq!(files.len(), 2);
    let first: Vec<i64> = scalars(&events(&files[0])).iter().map(|(step, _, _)| *step).collect();
    assert_eq!(first, [1, 2, 3, 4, 5]);
    let resumed = events(&files[1]);
    assert_eq!(resumed[0].content, Some(EventContent::FileVersion("brain.Event:2".into())));
    assert_session_start(&resumed[1], 4);
    assert_eq!(scalars(&resumed), [(4, "loss".to_string(), 40.0)]);
}
