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

#[test]
fn xla_flags_naming_a_file_are_left_to_xla() {
    // XLA reads an XLA_FLAGS value that does not start with `-` as a file of flags: sirocco adds
    // nothing to it (XLA would abort on the changed path) and says so.
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("xla_flags.txt");
    std::fs::write(&flags, "--xla_cpu_enable_fast_math=false\n").unwrap();
    let output = sirocco(&["devices", "--cpu-device-count", "2"], &[("XLA_FLAGS", flags.to_str().unwrap())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("XLA_FLAGS names a file of flags"), "{stderr}");
    // `sirocco hlo` adds its dump flags to XLA_FLAGS: with a file there, an error, not an abort.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/quickstart.yaml");
    let out = dir.path().join("hlo");
    let output = sirocco(
        &["hlo", "--config", config, "--out", out.to_str().unwrap()],
        &[("XLA_FLAGS", flags.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("XLA_FLAGS names a file of flags") && stderr.contains("sirocco hlo"), "{stderr}");
}

#[test]
fn an_invalid_multi_output_fusion_setting_is_named() {
    let output = sirocco(&["devices"], &[("SIROCCO_CPU_MULTI_OUTPUT_FUSION", "maybe")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SIROCCO_CPU_MULTI_OUTPUT_FUSION must be 0, 1, false or true"), "{stderr}");
}
