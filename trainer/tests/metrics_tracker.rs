//! metrics.jsonl as the train loop writes it: content, non-finite values, resume truncation,
//! the config and the loss plot left by `finish`.

use std::path::Path;

use trainer::config::TrackerKind;
use trainer::metrics::Tracker;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn train_record(step: u64) -> Vec<(&'static str, f64)> {
    vec![
        ("loss", 10.0 / (step as f64 + 1.0)),
        ("lr", 1e-3),
        ("grad_norm", 0.5),
        ("tokens_per_second", 1000.0),
        ("mfu", 0.25),
        ("step_time_s", 0.125),
        ("data_wait_s", 0.0),
    ]
}

#[test]
fn records_are_one_json_object_a_line_in_logged_order() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::open(run_dir.path(), &[TrackerKind::Json], None).unwrap();
    tracker.log(1, &train_record(1)).unwrap();
    tracker.log(2, &[("loss", 3.25), ("lr", 2e-3), ("skipped", 1.0)]).unwrap();
    tracker.log(2, &[("eval_loss", 3.5), ("eval_bpb", 1.25)]).unwrap();
    assert_eq!(
        lines(&run_dir.path().join("metrics.jsonl")),
        [
            r#"{"step":1,"loss":5.0,"lr":0.001,"grad_norm":0.5,"tokens_per_second":1000.0,"mfu":0.25,"step_time_s":0.125,"data_wait_s":0.0}"#,
            r#"{"step":2,"loss":3.25,"lr":0.002,"skipped":1.0}"#,
            r#"{"step":2,"eval_loss":3.5,"eval_bpb":1.25}"#,
        ]
    );
    assert!(!run_dir.path().join("tensorboard").exists(), "no event file unless asked for");
}

#[test]
fn non_finite_values_are_null() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::open(run_dir.path(), &[], None).unwrap();
    tracker.log(5, &[("loss", f64::NAN), ("grad_norm", f64::INFINITY), ("lr", f64::NEG_INFINITY)]).unwrap();
    let record: serde_json::Value =
        serde_json::from_str(&lines(&run_dir.path().join("metrics.jsonl"))[0]).unwrap();
    assert_eq!(record, serde_json::json!({"step": 5, "loss": null, "grad_norm": null, "lr": null}));
}

#[test]
fn a_name_logged_twice_in_one_record_is_an_error() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::open(run_dir.path(), &[], None).unwrap();
    let error = tracker.log(1, &[("loss", 1.0), ("loss", 2.0)]).unwrap_err().to_string();
    assert!(error.contains("metrics.jsonl") && error.contains("\"loss\" logged twice"), "{error}");
}

#[test]
fn resume_drops_the_records_after_the_checkpoint_and_appends() {
    let run_dir = tempfile::tempdir().unwrap();
    let metrics = run_dir.path().join("metrics.jsonl");
    let mut tracker = Tracker::open(run_dir.path(), &[], None).unwrap();
    for step in 1..=10 {
        tracker.log(step, &[("loss", step as f64)]).unwrap();
        if step % 4 == 0 {
            tracker.log(step, &[("eval_loss", step as f64 + 0.5)]).unwrap();
        }
    }
    drop(tracker);
    // The run died halfway through writing a line.
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str(r#"{"step":11,"lo"#);
    std::fs::write(&metrics, text).unwrap();

    // Resumed from the checkpoint of step 6: steps 7.. are redone.
    let mut tracker = Tracker::open(run_dir.path(), &[], Some(6)).unwrap();
    for step in 7..=8 {
        tracker.log(step, &[("loss", -(step as f64))]).unwrap();
    }
    drop(tracker);
    assert_eq!(
        lines(&metrics),
        [
            r#"{"step":1,"loss":1.0}"#,
            r#"{"step":2,"loss":2.0}"#,
            r#"{"step":3,"loss":3.0}"#,
            r#"{"step":4,"loss":4.0}"#,
            r#"{"step":4,"eval_loss":4.5}"#,
            r#"{"step":5,"loss":5.0}"#,
            r#"{"step":6,"loss":6.0}"#,
            r#"{"step":7,"loss":-7.0}"#,
            r#"{"step":8,"loss":-8.0}"#,
        ]
    );
}

#[test]
fn resume_without_a_metrics_file_starts_one() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::open(&run_dir.path().join("new"), &[], Some(100)).unwrap();
    tracker.log(101, &[("loss", 1.0)]).unwrap();
    assert_eq!(lines(&run_dir.path().join("new/metrics.jsonl")), [r#"{"step":101,"loss":1.0}"#]);
}

#[test]
fn a_fresh_run_replaces_the_metrics_of_an_earlier_one() {
    let run_dir = tempfile::tempdir().unwrap();
    Tracker::open(run_dir.path(), &[], None).unwrap().log(1, &[("loss", 9.0)]).unwrap();
    Tracker::open(run_dir.path(), &[], None).unwrap().log(1, &[("loss", 1.0)]).unwrap();
    assert_eq!(lines(&run_dir.path().join("metrics.jsonl")), [r#"{"step":1,"loss":1.0}"#]);
}

#[test]
fn config_and_loss_plot_land_in_the_run_dir() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::open(run_dir.path(), &[TrackerKind::Json], None).unwrap();
    tracker.log_config("trainer:\n  num_train_steps: 20\n").unwrap();
    for step in 1..=20 {
        tracker.log(step, &train_record(step)).unwrap();
    }
    tracker.finish().unwrap();
    assert_eq!(
        std::fs::read_to_string(run_dir.path().join("config.yaml")).unwrap(),
        "trainer:\n  num_train_steps: 20\n"
    );
    let png = std::fs::read(run_dir.path().join("loss.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
}

#[test]
fn finishing_a_run_that_logged_no_loss_draws_no_plot() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::open(run_dir.path(), &[], None).unwrap();
    tracker.finish().unwrap();
    assert!(!run_dir.path().join("loss.png").exists());
}
