//! Progress away from a terminal: log lines through `tracing`, about every 5% of the run.

use std::io::Write;
use std::sync::{Arc, Mutex};

use trainer::progress::{Progress, ProgressDisplay};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_log(run: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    tracing::subscriber::with_default(subscriber, run);
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn log_mode_reports_about_every_twentieth_of_the_run() {
    let log = captured_log(|| {
        let mut progress = Progress::with_display(100, 0, ProgressDisplay::Log);
        for step in 1..=100 {
            progress.update(step, 10.0 / step as f64, 12_345.0);
            if step == 50 {
                progress.message("eval at step 50: eval_loss 0.2");
            }
        }
        progress.finish();
    });
    let reports: Vec<&str> = log.lines().filter(|line| line.contains("tokens/s")).collect();
    // Steps 1, 6, 11, ..., 96 and the last one.
    assert_eq!(reports.len(), 21, "{log}");
    assert!(reports[0].contains("step 1/100 (1%) · loss 10.0000 · 12.3k tokens/s"), "{}", reports[0]);
    assert!(reports[20].contains("step 100/100 (100%)"), "{}", reports[20]);
    assert!(log.contains("eval at step 50: eval_loss 0.2"), "{log}");
    assert!(log.contains("finished at step 100/100"), "{log}");
}

#[test]
fn log_mode_handles_resumed_short_and_odd_runs() {
    captured_log(|| {
        let mut resumed = Progress::with_display(10, 8, ProgressDisplay::Log);
        resumed.update(9, f64::NAN, 0.0);
        resumed.update(10, f64::INFINITY, -1.0);
        resumed.finish();
        let mut empty = Progress::with_display(0, 0, ProgressDisplay::Log);
        empty.finish();
    });
}

#[test]
fn default_display_does_not_panic() {
    let mut progress = Progress::new(3, 0);
    for step in 1..=3 {
        progress.update(step, 1.0, 100.0);
    }
    progress.message("done");
    progress.finish();
}
