//! `sirocco optimizers` as a user runs it: the shared fields, then every registered type with
//! its fields, defaults and docs.

use std::collections::BTreeMap;
use std::process::Command;

/// The listing as `{section: {field: default}}`; the shared fields are under `""`.
fn listing() -> BTreeMap<String, BTreeMap<String, String>> {
    let output = Command::new(env!("CARGO_BIN_EXE_sirocco")).arg("optimizers").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = String::new();
    for line in stdout.lines() {
        if let Some(field) = line.strip_prefix("  ") {
            let mut words = field.split_whitespace();
            let (name, default) = (words.next().unwrap(), words.next().unwrap_or_else(|| panic!("{line}")));
            sections.entry(current.clone()).or_default().insert(name.to_string(), default.to_string());
        } else if let Some((name, doc)) = line.split_once(": ") {
            assert!(!doc.trim().is_empty(), "{line}");
            current = name.to_string();
        }
    }
    sections
}

#[test]
fn lists_every_type_with_its_fields_and_defaults() {
    let sections = listing();
    let types: Vec<&str> = sections.keys().map(String::as_str).filter(|name| !name.is_empty()).collect();
    assert_eq!(types, ["adafactor", "adam", "adamax", "lion", "rmsprop", "sgd"]);
    // Levanter's shared defaults.
    let shared = &sections[""];
    for (field, default) in
        [("learning_rate", "0.0006"), ("weight_decay", "0.1"), ("warmup", "0.01"), ("lr_schedule", "cosine")]
    {
        assert_eq!(shared[field], default, "{field}");
    }
    // The seed's Adamax and optax.adafactor's defaults.
    let adamax = &sections["adamax"];
    assert_eq!(
        (adamax["beta1"].as_str(), adamax["beta2"].as_str(), adamax["epsilon"].as_str()),
        ("0.9", "0.95", "1e-8")
    );
    assert_eq!(adamax["max_grad_norm"], "1.0");
    let adafactor = &sections["adafactor"];
    assert_eq!(adafactor["decay_rate"], "0.8");
    assert_eq!(adafactor["epsilon"], "1e-30");
    assert_eq!(adafactor["min_dim_size_to_factor"], "128");
    assert_eq!(adafactor["multiply_by_parameter_scale"], "true");
    assert_eq!(adafactor["beta1"], "null");
}

#[test]
fn bench_optimizer_refuses_sizes_it_cannot_hold() {
    let optimizer = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/optimizers/adamax.yaml");
    for (params, tensors, steps, says) in [
        ("10000000000000", "1", "1", "GB of memory available"),
        ("1000000", "1000000", "1", "--tensors must be at most 4096"),
        ("100", "1", "18446744073709551615", "--steps at most 1000000"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sirocco"))
            .args(["bench", "optimizer", "--optimizer", optimizer, "--params", params])
            .args(["--tensors", tensors, "--steps", steps])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says) && !stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn bench_train_refuses_zero_steps() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/quickstart.yaml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sirocco"))
        .args(["bench", "train", "--config", config, "--steps", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--steps must be in 1..=100000") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn multi_output_fusion_is_left_off_for_an_update_that_cannot_be_one_pass() {
    let directory = tempfile::tempdir().unwrap();
    let run = |optimizer: &str| -> String {
        let path = directory.path().join("optimizer.yaml");
        std::fs::write(&path, optimizer).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sirocco"))
            .args(["bench", "optimizer", "--optimizer", path.to_str().unwrap()])
            .args(["--params", "4096", "--tensors", "2", "--steps", "1"])
            .env_remove("SIROCCO_CPU_MULTI_OUTPUT_FUSION")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let off = "multi-output fusion left off";
    // Adafactor scales its update by its own RMS: not one pass, so the option would only cost.
    assert!(run("type: adafactor\n").contains(off));
    assert!(!run("type: adamax\n").contains(off));
}
