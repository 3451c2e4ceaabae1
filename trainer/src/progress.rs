//! Training progress for a person watching: a bar with loss, throughput and ETA on a terminal,
//! and log lines (`tracing::info!`) every ~5% of the run or every 30 s otherwise, so that
//! `nohup` and cluster logs get a readable trace instead of bar redraws.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the log display reports, at most: a twentieth of the run...
const LOG_FRACTION: u64 = 20;
/// ... or this long, whichever comes first.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressDisplay {
    /// An `indicatif` bar on stderr (drawn only when stderr is a terminal).
    Bar,
    /// `tracing::info!` lines.
    Log,
}

/// Progress of a training run from `start_step` to `total_steps`.
pub struct Progress {
    total_steps: u64,
    /// The last step reported done (reported on screen or not).
    last_step: u64,
    started: Instant,
    display: Display,
}

enum Display {
    Bar(ProgressBar),
    Log(LogCadence),
}

/// When the log display last reported, and the first update, which ETAs are measured from (the
/// steps before it include compilation).
struct LogCadence {
    every_steps: u64,
    first_update: Option<(Instant, u64)>,
    last_report: Option<(Instant, u64)>,
}

impl Progress {
    /// A bar when stderr is a terminal, log lines otherwise.
    pub fn new(total_steps: u64, start_step: u64) -> Progress {
        let display =
            if std::io::stderr().is_terminal() { ProgressDisplay::Bar } else { ProgressDisplay::Log };
        Progress::with_display(total_steps, start_step, display)
    }

    /// Progress shown as `display` asks, whatever stderr is.
    pub fn with_display(total_steps: u64, start_step: u64, display: ProgressDisplay) -> Progress {
        let display = match display {
            ProgressDisplay::Bar => {
                let style = ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar:.cyan/blue}] {pos}/{len} {msg} ETA {eta}",
                )
                .expect("the bar template is valid")
                .progress_chars("=> ");
                Display::Bar(ProgressBar::new(total_steps).with_style(style).with_position(start_step))
            }
            ProgressDisplay::Log => Display::Log(LogCadence {
                every_steps: (total_steps.saturating_sub(start_step) / LOG_FRACTION).max(1),
                first_update: None,
                last_report: None,
            }),
        };
        Progress { total_steps, last_step: start_step, started: Instant::now(), display }
    }

    /// Step `step` is done, with this loss and throughput.
    pub fn update(&mut self, step: u64, loss: f64, tokens_per_second: f64) {
        self.last_step = self.last_step.max(step);
        let now = Instant::now();
        let total_steps = self.total_steps;
        match &mut self.display {
            Display::Bar(bar) => {
                bar.set_position(step);
                bar.set_message(format!("loss {loss:.4} · {} tokens/s", format_rate(tokens_per_second)));
            }
            Display::Log(cadence) => {
                let (first_time, first_step) = *cadence.first_update.get_or_insert((now, step));
                if !cadence.is_due(now, step, total_steps) {
                    return;
                }
                cadence.last_report = Some((now, step));
                let percent = 100.0 * step as f64 / total_steps.max(1) as f64;
                let rate =
                    (step - first_step.min(step)) as f64 / now.duration_since(first_time).as_secs_f64();
                let eta = if rate.is_finite() && rate > 0.0 {
                    format_duration(Duration::from_secs_f64(total_steps.saturating_sub(step) as f64 / rate))
                } else {
                    "unknown".into()
                };
                tracing::info!(
                    "step {step}/{total_steps} ({percent:.0}%) · loss {loss:.4} · {} tokens/s · ETA {eta}",
                    format_rate(tokens_per_second)
                );
            }
        }
    }

    /// A line of text (an eval result, a checkpoint saved) that doesn't break the bar.
    pub fn message(&self, text: &str) {
        match &self.display {
            Display::Bar(bar) => bar.println(text),
            Display::Log(_) => tracing::info!("{text}"),
        }
    }

    /// Step `step` is done but its update was thrown away: `text` is logged as a warning (above
    /// the bar on a terminal) and the step counts as done.
    pub fn skipped(&mut self, step: u64, text: &str) {
        self.last_step = self.last_step.max(step);
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(step);
                bar.suspend(|| tracing::warn!("{text}"));
            }
            Display::Log(_) => tracing::warn!("{text}"),
        }
    }

    /// The run stopped before its last step (a stop signal, a non-finite step).
    pub fn stopped(&mut self) {
        let text = format!(
            "stopped at step {}/{} after {}",
            self.last_step,
            self.total_steps,
            format_duration(self.started.elapsed())
        );
        match &self.display {
            Display::Bar(bar) => bar.abandon_with_message(text),
            Display::Log(_) => tracing::info!("{text}"),
        }
    }

    /// The run is over: the bar stays on screen at its last position; the log says how long the
    /// steps took.
    pub fn finish(&mut self) {
        match &self.display {
            Display::Bar(bar) => bar.finish(),
            Display::Log(_) => {
                tracing::info!(
                    "finished at step {}/{} after {}",
                    self.last_step,
                    self.total_steps,
                    format_duration(self.started.elapsed())
                );
            }
        }
    }
}

impl LogCadence {
    /// Whether `step`, done at `now`, is reported: the first one, the last one, and then every
    /// `every_steps` steps or `LOG_INTERVAL`, whichever comes first.
    fn is_due(&self, now: Instant, step: u64, total_steps: u64) -> bool {
        let Some((last_time, last_step)) = self.last_report else { return true };
        step >= total_steps
            || step >= last_step.saturating_add(self.every_steps)
            || now.duration_since(last_time) >= LOG_INTERVAL
    }
}

/// `950`, `12.3k`, `4.56M`: throughput at a glance.
fn format_rate(per_second: f64) -> String {
    match per_second.abs() {
        rate if rate >= 1e9 => format!("{:.2}G", per_second / 1e9),
        rate if rate >= 1e6 => format!("{:.2}M", per_second / 1e6),
        rate if rate >= 1e3 => format!("{:.1}k", per_second / 1e3),
        _ => format!("{per_second:.0}"),
    }
}

/// `45s`, `3m20s`, `2h05m`.
fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_reports_every_twentieth_of_the_run_or_thirty_seconds() {
        let start = Instant::now();
        let mut cadence = LogCadence { every_steps: 50, first_update: None, last_report: None };
        assert!(cadence.is_due(start, 1, 1000), "the first update is reported");
        cadence.last_report = Some((start, 1));
        assert!(!cadence.is_due(start + Duration::from_secs(1), 50, 1000));
        assert!(cadence.is_due(start + Duration::from_secs(1), 51, 1000));
        assert!(cadence.is_due(start + Duration::from_secs(30), 2, 1000));
        assert!(cadence.is_due(start, 1000, 1000), "the last step is reported");
    }

    #[test]
    fn rates_and_durations_read_at_a_glance() {
        assert_eq!(format_rate(950.0), "950");
        assert_eq!(format_rate(12_345.0), "12.3k");
        assert_eq!(format_rate(4_560_000.0), "4.56M");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(200)), "3m20s");
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h05m");
    }
}
