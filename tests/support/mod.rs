//! Helpers of the builder tests: a CPU client, compile-and-run, random inputs and f64
//! reference checks.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use sirocco::hlo::Function;
use sirocco::pjrt::{Client, ClientOptions, Plugin};
use sirocco::program::Program;
use sirocco::HostTensor;

/// One CPU client with 4 devices per test binary.
pub fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let plugin = Plugin::load("cpu").unwrap_or_else(|error| panic!("{error}"));
        Client::new(&plugin, &ClientOptions { cpu_device_count: Some(4), ..ClientOptions::default() })
            .unwrap_or_else(|error| panic!("{error}"))
    })
}

/// Compiles `function` and runs it on `inputs`.
pub fn run(function: &Function, inputs: &[HostTensor]) -> Vec<HostTensor> {
    let program = Program::compile(client(), function)
        .unwrap_or_else(|error| panic!("{error}\n{}", function.to_stablehlo()));
    program.run(inputs).unwrap_or_else(|error| panic!("{error}"))
}

/// A generator seeded from the clock (printed, so a failure can be replayed with SEED=...).
pub fn rng() -> rand::rngs::StdRng {
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Uniform values in [low, high), never exactly zero.
pub fn uniform(rng: &mut impl Rng, count: usize, low: f64, high: f64) -> Vec<f64> {
    (0..count)
        .map(|_| loop {
            let value = rng.gen_range(low..high);
            if value != 0.0 {
                break value;
            }
        })
        .collect()
}

pub fn f64_tensor(dims: &[i64], values: &[f64]) -> HostTensor {
    HostTensor::from_slice(dims, values).unwrap()
}

/// Asserts `actual` is within `tolerance` (relative, with an absolute floor) of `expected`.
pub fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        let scale = e.abs().max(1.0);
        assert!(
            (a - e).abs() <= tolerance * scale || (a.is_nan() && e.is_nan()),
            "{what}: element {index}: got {a}, expected {e} (tolerance {tolerance})"
        );
    }
}
