//! Stop requests from SIGTERM and SIGINT, so that a preempted run saves a checkpoint and exits
//! cleanly instead of dying mid-step.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Result, TrainerError};

/// Exit status after a second SIGINT (128 + SIGINT, as shells report it).
const INTERRUPTED_EXIT_STATUS: i32 = 130;
/// Exit status after a second SIGTERM (128 + SIGTERM).
const TERMINATED_EXIT_STATUS: i32 = 143;

/// Set once SIGTERM or SIGINT arrived; the train loop polls it between steps.
#[derive(Clone, Debug)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
}

impl StopSignal {
    /// True once a stop was requested.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// The process's stop signal. The first call installs the SIGTERM and SIGINT handlers; later
/// calls return the same flag. A SIGTERM or SIGINT that arrives while stopping (the flag already
/// set) exits the process at once, saying so on the standard error, with status 143 or 130: for
/// a user who does not want to wait for the checkpoint, and for a start-up blocked where the
/// flag is not polled (reading a config from a FIFO, say). A SIGTERM within 2 s of the first
/// signal is taken as the same one delivered twice and ignored.
pub fn stop_requested() -> Result<StopSignal> {
    static INSTALLED: OnceLock<std::result::Result<StopSignal, String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let flag = Arc::new(AtomicBool::new(false));
            install(&flag).map_err(|error| format!("cannot install the SIGTERM/SIGINT handlers: {error}"))?;
            Ok(StopSignal { flag })
        })
        .clone()
        .map_err(TrainerError::Other)
}

fn install(flag: &Arc<AtomicBool>) -> std::io::Result<()> {
    let signals = [
        (
            SIGINT,
            INTERRUPTED_EXIT_STATUS,
            "sirocco: a second SIGINT: exiting at once, without a checkpoint\n",
        ),
        (
            SIGTERM,
            TERMINATED_EXIT_STATUS,
            "sirocco: a second SIGTERM: exiting at once, without a checkpoint\n",
        ),
    ];
    let start = *START.get_or_init(Instant::now);
    for (signal, status, message) in signals {
        let flag = Arc::clone(flag);
        let action = move || {
            let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if !flag.swap(true, Ordering::SeqCst) {
                FIRST_SIGNAL_AT.store(now, Ordering::SeqCst);
                return;
            }
            // A launcher may deliver one SIGTERM twice (`timeout` signals the child, then its
            // process group): one within the grace period of the first is not a second request.
            let since_first = now.saturating_sub(FIRST_SIGNAL_AT.load(Ordering::SeqCst));
            if signal == SIGTERM && since_first < REPEATED_SIGTERM_GRACE.as_nanos() as u64 {
                return;
            }
            write_to_stderr(message);
            signal_hook::low_level::exit(status);
        };
        // SAFETY: the action is async-signal-safe: atomics, clock_gettime(2) (through
        // `Instant::elapsed`), write(2) and _exit(2); it neither allocates nor takes a lock.
        unsafe { signal_hook::low_level::register(signal, action) }?;
    }
    Ok(())
}

/// When the handlers were installed: signal times are measured from it.
static START: OnceLock<Instant> = OnceLock::new();
/// Nanoseconds after `START` at which the first stop signal arrived.
static FIRST_SIGNAL_AT: AtomicU64 = AtomicU64::new(0);
/// A SIGTERM this soon after the first stop signal is taken as the same one delivered twice.
const REPEATED_SIGTERM_GRACE: Duration = Duration::from_secs(2);

/// Writes `message` to the standard error with a bare write(2), which a signal handler may call:
/// `eprintln!` takes the standard error's lock, which the interrupted code may hold.
fn write_to_stderr(message: &str) {
    use std::io::Write as _;
    use std::os::fd::FromRawFd as _;
    // SAFETY: descriptor 2 is the standard error; `ManuallyDrop` keeps this `File` from closing
    // it, so it stays the process's, as before.
    let stderr = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
    let _ = (&*stderr).write_all(message.as_bytes());
}
