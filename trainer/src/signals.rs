//! Stop requests from SIGTERM and SIGINT, so that a preempted run saves a checkpoint and exits
//! cleanly instead of dying mid-step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

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
/// flag is not polled (reading a config from a FIFO, say).
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
    for (signal, status, message) in signals {
        let flag = Arc::clone(flag);
        let action = move || {
            if flag.swap(true, Ordering::SeqCst) {
                write_to_stderr(message);
                signal_hook::low_level::exit(status);
            }
        };
        // SAFETY: the action is async-signal-safe: an atomic swap, write(2) and _exit(2); it
        // neither allocates nor takes a lock.
        unsafe { signal_hook::low_level::register(signal, action) }?;
    }
    Ok(())
}

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
