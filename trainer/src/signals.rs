//! Stop requests from SIGTERM and SIGINT, so that a preempted run saves a checkpoint and exits
//! cleanly instead of dying mid-step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Result, TrainerError};

/// Exit status after a second SIGINT (128 + SIGINT, as shells report it).
const INTERRUPTED_EXIT_STATUS: i32 = 130;

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
/// calls return the same flag. A SIGINT that arrives while stopping (the flag already set)
/// exits the process at once with status 130, for a user who does not want to wait for the
/// checkpoint.
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
    // Registered before the flag setter, so the first SIGINT finds the flag unset and only
    // sets it; a second one finds it set and exits.
    signal_hook::flag::register_conditional_shutdown(SIGINT, INTERRUPTED_EXIT_STATUS, Arc::clone(flag))?;
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(flag))?;
    }
    Ok(())
}
