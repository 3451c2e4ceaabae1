//! SIGTERM and SIGINT ask the train loop to save a checkpoint and stop (preemption).

use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use trainer::signals::stop_requested;

/// Waits until the flag is set: a handler may run on another thread than the one raising.
fn becomes_set(signal: &trainer::signals::StopSignal) -> bool {
    (0..200).any(|_| {
        signal.is_set() || {
            std::thread::sleep(Duration::from_millis(5));
            signal.is_set()
        }
    })
}

#[test]
fn sigterm_sets_the_stop_flag() {
    let signal = stop_requested().unwrap();
    assert!(!signal.is_set());
    signal_hook::low_level::raise(SIGTERM).unwrap();
    assert!(becomes_set(&signal));
    assert!(stop_requested().unwrap().is_set(), "later calls share the flag");
}

const SIGINT_CHILD_VARIABLE: &str = "SIROCCO_SIGINT_CHILD";

/// Run by `a_second_sigint_exits_at_once` in a child process.
#[test]
#[ignore = "a child process of a_second_sigint_exits_at_once"]
fn sigint_child() {
    if std::env::var_os(SIGINT_CHILD_VARIABLE).is_none() {
        return;
    }
    let signal = stop_requested().unwrap();
    signal_hook::low_level::raise(SIGINT).unwrap();
    assert!(becomes_set(&signal));
    println!("stopping after the first SIGINT");
    signal_hook::low_level::raise(SIGINT).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    println!("still running after the second SIGINT");
}

#[test]
fn a_second_sigint_exits_at_once() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigint_child", "--ignored", "--nocapture"])
        .env(SIGINT_CHILD_VARIABLE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("stopping after the first SIGINT"), "{stdout}");
    assert!(!stdout.contains("still running"), "{stdout}");
    assert_eq!(output.status.code(), Some(130), "{stdout}");
}
