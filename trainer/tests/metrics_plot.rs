//! `plot_losses` on synthetic metrics files.

use std::fmt::Write as _;
use std::path::Path;

use trainer::metrics::plot_losses;

/// A 500-step run: decaying loss, warmup-then-cosine learning rate, eval every 100 steps when
/// `with_eval`, and a skipped step with a null loss.
fn synthetic_metrics(path: &Path, with_eval: bool) {
    let mut text = String::new();
    for step in 1..=500u64 {
        let t = step as f64;
        let loss =
            if step == 250 { "null".to_string() } else { format!("{}", 2.0 + 8.0 * (-t / 80.0).exp()) };
        let lr = if step <= 50 {
            3e-4 * t / 50.0
        } else {
            1.5e-4 * (1.0 + (std::f64::consts::PI * (t - 50.0) / 450.0).cos())
        };
        writeln!(
            text,
            r#"{{"step":{step},"loss":{loss},"lr":{lr},"grad_norm":1.0,"tokens_per_second":5000.0}}"#
        )
        .unwrap();
        if with_eval && step % 100 == 0 {
            writeln!(
                text,
                r#"{{"step":{step},"eval_loss":{},"eval_bpb":1.1}}"#,
                2.2 + 8.0 * (-t / 80.0).exp()
            )
            .unwrap();
        }
    }
    std::fs::write(path, text).unwrap();
}

/// Checks the PNG signature and IHDR size, and that the picture holds more than a blank canvas.
fn assert_is_plot(png: &Path) {
    let bytes = std::fs::read(png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 700));
    assert!(bytes.len() > 10_000, "{} bytes: too small for axes, labels and curves", bytes.len());
}

/// Plots a synthetic run in a temporary directory and checks the picture.
fn plot_synthetic_run(with_eval: bool) {
    let dir = tempfile::tempdir().unwrap();
    synthetic_metrics(&dir.path().join("metrics.jsonl"), with_eval);
    plot_losses(&dir.path().join("metrics.jsonl"), &dir.path().join("loss.png")).unwrap();
    assert_is_plot(&dir.path().join("loss.png"));
}

#[test]
fn plots_loss_and_learning_rate_without_eval() {
    plot_synthetic_run(false);
}

#[test]
fn plots_eval_points_too() {
    plot_synthetic_run(true);
}

#[test]
fn plots_a_single_point() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metrics.jsonl"), "{\"step\":1,\"loss\":3.0}\n").unwrap();
    plot_losses(&dir.path().join("metrics.jsonl"), &dir.path().join("loss.png")).unwrap();
    assert!(std::fs::read(dir.path().join("loss.png")).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn nothing_to_plot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metrics.jsonl"), "{\"step\":1,\"lr\":0.1}\n").unwrap();
    let error = plot_losses(&dir.path().join("metrics.jsonl"), &dir.path().join("loss.png")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("metrics.jsonl") && message.contains("no `loss`"), "{message}");
    assert!(!dir.path().join("loss.png").exists());
}
