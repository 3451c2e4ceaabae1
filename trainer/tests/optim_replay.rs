//! `sirocco optim replay` as a user runs it: recorded gradients in, the parameters after every
//! step and the learning rates out, checked against optax's own numbers; bad inputs are
//! one-line errors naming the file and the tensor or field.

#[path = "../../xla-optim/tests/support/optax_golden.rs"]
mod optax_golden;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sirocco::HostTensor;
use tempfile::TempDir;
use trainer::tensors;

const STEPS: usize = 5;

/// The seed's Adamax with its defaults (clip at 1, weight decay 0.1 on the default mask, beta1
/// 0.9, beta2 0.95, epsilon 1e-8) and a constant learning rate: the chain of `optax_golden::ADAMAX`.
const ADAMAX: &str = "type: adamax\nlearning_rate: 0.01\nlr_schedule: constant\nwarmup: 0\n";

fn sirocco(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sirocco")).args(args).output().expect("the sirocco binary runs")
}

fn f32_tensor(dims: &[i64], values: &[f64]) -> HostTensor {
    let values: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    HostTensor::from_slice(dims, &values).unwrap()
}

/// The input file of the golden run: `params/<name>` and `grads/<k>/<name>` for k < `steps`.
fn golden_input(steps: usize) -> Vec<(String, HostTensor)> {
    let (w, b) = optax_golden::initial();
    let mut tensors = vec![
        ("params/mlp.weight".to_string(), f32_tensor(&[4, 3], &w)),
        ("params/mlp.bias".to_string(), f32_tensor(&[3], &b)),
    ];
    for k in 0..steps {
        let scale = optax_golden::chain_gradient_scale(k);
        let (gw, gb) = optax_golden::gradients(k);
        let scaled = |values: Vec<f64>| -> Vec<f64> { values.iter().map(|x| x * scale).collect() };
        tensors.push((format!("grads/{k}/mlp.weight"), f32_tensor(&[4, 3], &scaled(gw))));
        tensors.push((format!("grads/{k}/mlp.bias"), f32_tensor(&[3], &scaled(gb))));
    }
    tensors
}

struct Case {
    dir: TempDir,
}

impl Case {
    fn new(optimizer: &str, input: &[(String, HostTensor)]) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("optimizer.yaml"), optimizer).unwrap();
        tensors::write(&dir.path().join("in.safetensors"), input).unwrap();
        Case { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn replay(&self, steps: usize) -> Output {
        let (optimizer, input, out) =
            (self.path("optimizer.yaml"), self.path("in.safetensors"), self.path("out.safetensors"));
        let steps = steps.to_string();
        let arguments = [
            "optim",
            "replay",
            "--optimizer",
            str(&optimizer),
            "--input",
            str(&input),
            "--steps",
            &steps,
            "--out",
            str(&out),
        ];
        sirocco(&arguments)
    }
}

fn str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn replays_adamax_as_optax_steps_it() {
    let case = Case::new(ADAMAX, &golden_input(STEPS));
    let output = case.replay(STEPS);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let out = tensors::read(&case.path("out.safetensors")).unwrap();
    let get = |name: &str| {
        out.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no `{name}` in the output"))
            .1
            .to_f64_vec()
    };
    // f32 parameters and gradients against optax in f64: a few f32 roundings per step.
    let mut worst = 0.0f64;
    let mut close = |actual: &[f64], expected: &[f64], what: &str| {
        for (a, e) in actual.iter().zip(expected) {
            worst = worst.max((a - e).abs());
            assert!((a - e).abs() <= 1e-6, "{what}: {actual:?}\n  optax {expected:?}");
        }
    };
    for (k, (w, b)) in optax_golden::ADAMAX.iter().enumerate() {
        close(&get(&format!("params/{}/mlp.weight", k + 1)), w, &format!("mlp.weight after step {}", k + 1));
        close(&get(&format!("params/{}/mlp.bias", k + 1)), b, &format!("mlp.bias after step {}", k + 1));
    }
    eprintln!("largest difference from optax: {worst:e}");
    let lr = get("lr");
    assert_eq!(lr.len(), STEPS);
    assert!(lr.iter().all(|&x| x == f64::from(0.01f32)), "{lr:?}");
    assert_eq!(out.len(), 2 * STEPS + 1, "params/<k>/<name> for k in 1..=5, and lr");
}

/// Runs a replay that must fail; returns its stderr, checked to be a clean error.
fn fails(case: &Case, steps: usize) -> String {
    let output = case.replay(steps);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "succeeded: {stderr}");
    assert!(stderr.contains("error") && !stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn a_missing_gradient_names_the_tensor_and_the_file() {
    let input: Vec<_> =
        golden_input(STEPS).into_iter().filter(|(name, _)| name != "grads/3/mlp.bias").collect();
    let case = Case::new(ADAMAX, &input);
    let stderr = fails(&case, STEPS);
    assert!(stderr.contains("grads/3/mlp.bias") && stderr.contains("in.safetensors"), "{stderr}");
}

#[test]
fn a_gradient_of_the_wrong_shape_names_both_shapes() {
    let mut input = golden_input(STEPS);
    let wrong = f32_tensor(&[3, 4], &[0.0; 12]);
    input.iter_mut().find(|(name, _)| name == "grads/0/mlp.weight").unwrap().1 = wrong;
    let case = Case::new(ADAMAX, &input);
    let stderr = fails(&case, STEPS);
    assert!(
        stderr.contains("grads/0/mlp.weight") && stderr.contains("[3, 4]") && stderr.contains("[4, 3]"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_optimizer_field_names_the_file_and_the_field() {
    let case = Case::new(&format!("{ADAMAX}beta3: 0.5\n"), &golden_input(STEPS));
    let stderr = fails(&case, STEPS);
    assert!(stderr.contains("optimizer.yaml") && stderr.contains("beta3"), "{stderr}");
}

#[test]
fn zero_steps_is_refused() {
    let case = Case::new(ADAMAX, &golden_input(STEPS));
    let stderr = fails(&case, 0);
    assert!(stderr.contains("--steps"), "{stderr}");
}

#[test]
fn more_steps_than_recorded_is_refused_before_anything_is_sized() {
    let case = Case::new(ADAMAX, &golden_input(STEPS));
    let stderr = fails(&case, STEPS + 1);
    assert!(stderr.contains(&format!("grads/{STEPS}/")) && stderr.contains("in.safetensors"), "{stderr}");
    // Far more than could be allocated: the same error, no abort.
    let stderr = fails(&case, 1 << 62);
    assert!(stderr.contains(&format!("grads/{}/", (1usize << 62) - 1)), "{stderr}");
}

#[test]
fn tensors_that_are_neither_parameters_nor_their_gradients_are_named() {
    for stray in ["grads/0/mlp.nothing", "grads/first/mlp.bias", "other/x"] {
        let mut input = golden_input(STEPS);
        input.push((stray.to_string(), f32_tensor(&[1], &[0.0])));
        let case = Case::new(ADAMAX, &input);
        let stderr = fails(&case, STEPS);
        assert!(stderr.contains(stray) && stderr.contains("in.safetensors"), "{stray}: {stderr}");
    }
}
