//! `sirocco devices` as a user runs it.

use std::process::{Command, Output};

fn sirocco(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sirocco"));
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the sirocco binary runs")
}

#[test]
fn lists_the_cpu_devices() {
    let output = sirocco(&["devices", "--cpu-device-count", "4"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("xla_cpu_pjrt.so") && stdout.contains("0.81"), "{stdout}");
    // Device rows start with the device id.
    let ids: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.parse::<u32>().is_ok())
        .collect();
    assert_eq!(ids, ["0", "1", "2", "3"], "{stdout}");
}

#[test]
fn a_missing_plugin_is_a_clean_error() {
    let output = sirocco(&["devices", "--plugin", "/nonexistent/plugin.so"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: cannot list the devices of PJRT plugin"), "{stderr}");
    assert!(stderr.contains("fetch.py cpu") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_plugin_variable_naming_no_file_is_reported_and_skipped() {
    let output = sirocco(&["devices"], &[("SIROCCO_PLUGIN_CPU", "/nonexistent/cpu.so")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("SIROCCO_PLUGIN_CPU=/nonexistent/cpu.so is not a file"), "{stderr}");
}
