//! Helpers of the builder tests: a CPU client, compile-and-run, random inputs, host arrays for
//! f64 references, and a harness that checks many outputs of one compiled function.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use sirocco::hlo::{Builder, DotDimensions, Function, Value};
use sirocco::pjrt::{Client, ClientOptions, Plugin};
use sirocco::program::Program;
use sirocco::{DType, Element, HostTensor};

/// Tolerance of ops that XLA computes exactly (or correctly rounded).
pub const EXACT: f64 = 1e-12;
/// Tolerance of transcendental functions against Rust's libm.
pub const TRANSCENDENTAL: f64 = 1e-9;
/// Tolerance of gradients against central finite differences.
pub const FINITE_DIFFERENCE: f64 = 1e-6;

/// One CPU client with 4 devices per test binary.
pub fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let plugin = Plugin::load("cpu").unwrap_or_else(|error| panic!("{error}"));
        Client::new(&plugin, &ClientOptions { cpu_device_count: Some(4), ..ClientOptions::default() })
            .unwrap_or_else(|error| panic!("{error}"))
    })
}

/// Compiles `function`; panics with the emitted text when XLA refuses it.
pub fn compile(function: &Function) -> Program {
    Program::compile(client(), function)
        .unwrap_or_else(|error| panic!("{error}\n{}", function.to_stablehlo()))
}

/// Runs a compiled program on host `inputs`.
pub fn execute(program: &Program, inputs: &[HostTensor]) -> Vec<HostTensor> {
    program.run(inputs).unwrap_or_else(|error| panic!("{error}"))
}

/// Compiles `function` and runs it once on `inputs`.
pub fn run(function: &Function, inputs: &[HostTensor]) -> Vec<HostTensor> {
    execute(&compile(function), inputs)
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

/// Uniform integers in [low, high).
pub fn integers(rng: &mut impl Rng, count: usize, low: i64, high: i64) -> Vec<f64> {
    (0..count).map(|_| rng.gen_range(low..high) as f64).collect()
}

/// A tensor of `dims` holding `values` converted to `T`.
pub fn tensor<T: Element>(dims: &[i64], values: &[T]) -> HostTensor {
    HostTensor::from_slice(dims, values).unwrap()
}

/// Every index of an array of `dims`, in row-major order.
pub fn indices(dims: &[i64]) -> Vec<Vec<i64>> {
    let count: i64 = dims.iter().product();
    (0..count)
        .map(|mut flat| {
            let mut index = vec![0; dims.len()];
            for d in (0..dims.len()).rev() {
                index[d] = flat % dims[d];
                flat /= dims[d];
            }
            index
        })
        .collect()
}

/// A dense row-major f64 array: the host side of every reference computation.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub dims: Vec<i64>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn new(dims: &[i64], data: Vec<f64>) -> Array {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{dims:?}");
        Array { dims: dims.to_vec(), data }
    }

    pub fn scalar(value: f64) -> Array {
        Array::new(&[], vec![value])
    }

    /// Uniform in [low, high), never exactly zero.
    pub fn random(rng: &mut impl Rng, dims: &[i64], low: f64, high: f64) -> Array {
        let count = dims.iter().product::<i64>() as usize;
        Array::new(dims, uniform(rng, count, low, high))
    }

    /// The array whose element at each index is `f(index)`.
    pub fn from_fn(dims: &[i64], f: impl FnMut(&[i64]) -> f64) -> Array {
        let mut f = f;
        Array::new(dims, indices(dims).iter().map(|index| f(index)).collect())
    }

    pub fn from_tensor(tensor: &HostTensor) -> Array {
        Array::new(tensor.dims(), tensor.to_f64_vec())
    }

    fn offset(&self, index: &[i64]) -> usize {
        assert_eq!(index.len(), self.dims.len(), "index {index:?} of an array of {:?}", self.dims);
        index.iter().zip(&self.dims).fold(0, |offset, (&i, &d)| {
            assert!(0 <= i && i < d, "index {index:?} out of {:?}", self.dims);
            offset * d as usize + i as usize
        })
    }

    pub fn at(&self, index: &[i64]) -> f64 {
        self.data[self.offset(index)]
    }

    pub fn set(&mut self, index: &[i64], value: f64) {
        let offset = self.offset(index);
        self.data[offset] = value;
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Array {
        Array::new(&self.dims, self.data.iter().map(|&x| f(x)).collect())
    }

    pub fn zip(&self, other: &Array, f: impl Fn(f64, f64) -> f64) -> Array {
        assert_eq!(self.dims, other.dims);
        Array::new(&self.dims, self.data.iter().zip(&other.data).map(|(&a, &b)| f(a, b)).collect())
    }

    /// The elements as a tensor of `dtype` (integers truncate, pred is `!= 0`).
    pub fn tensor_of(&self, dtype: DType) -> HostTensor {
        let dims = &self.dims;
        let data = &self.data;
        match dtype {
            DType::Pred => tensor(dims, &data.iter().map(|&x| x != 0.0).collect::<Vec<_>>()),
            DType::U8 => tensor(dims, &data.iter().map(|&x| x as u8).collect::<Vec<_>>()),
            DType::U32 => tensor(dims, &data.iter().map(|&x| x as u32).collect::<Vec<_>>()),
            DType::U64 => tensor(dims, &data.iter().map(|&x| x as u64).collect::<Vec<_>>()),
            DType::I32 => tensor(dims, &data.iter().map(|&x| x as i32).collect::<Vec<_>>()),
            DType::I64 => tensor(dims, &data.iter().map(|&x| x as i64).collect::<Vec<_>>()),
            DType::F16 => tensor(dims, &data.iter().map(|&x| half::f16::from_f64(x)).collect::<Vec<_>>()),
            DType::BF16 => tensor(dims, &data.iter().map(|&x| half::bf16::from_f64(x)).collect::<Vec<_>>()),
            DType::F32 => tensor(dims, &data.iter().map(|&x| x as f32).collect::<Vec<_>>()),
            DType::F64 => tensor(dims, data),
        }
    }

    pub fn tensor(&self) -> HostTensor {
        self.tensor_of(DType::F64)
    }
}

/// Dot dimension numbers from the four lists (batch, then contracting, lhs before rhs).
pub fn dot(
    lhs_batch: &[usize],
    rhs_batch: &[usize],
    lhs_contracting: &[usize],
    rhs_contracting: &[usize],
) -> DotDimensions {
    DotDimensions {
        lhs_batch: lhs_batch.to_vec(),
        rhs_batch: rhs_batch.to_vec(),
        lhs_contracting: lhs_contracting.to_vec(),
        rhs_contracting: rhs_contracting.to_vec(),
    }
}

/// The largest error of `actual` against `expected`, relative with an absolute floor of 1
/// (equal infinities and two NaNs count as exact).
pub fn max_error(actual: &[f64], expected: &[f64]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(
            |(&a, &e)| {
                if a == e || (a.is_nan() && e.is_nan()) {
                    0.0
                } else {
                    (a - e).abs() / e.abs().max(1.0)
                }
            },
        )
        .fold(0.0, |max, error| if error.is_nan() { f64::INFINITY } else { max.max(error) })
}

/// Asserts `actual` is within `tolerance` of `expected` (see [`max_error`]); returns the error.
pub fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64, what: &str) -> f64 {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let error = max_error(actual, expected);
    assert!(
        error <= tolerance,
        "{what}: error {error:e} over {tolerance:e}\n  got      {actual:?}\n  expected {expected:?}"
    );
    error
}

enum Reference {
    /// Compared as f64 within a tolerance.
    Values(Array, f64),
    /// Compared byte for byte, with the dtype.
    Exact(HostTensor),
}

/// Many outputs of one function, each with its host reference: built once, compiled once and
/// run once, then every output is checked.
pub struct Checks {
    builder: Builder,
    inputs: Vec<HostTensor>,
    outputs: Vec<Value>,
    references: Vec<(String, Reference)>,
}

impl Checks {
    pub fn new(name: &str) -> Checks {
        Checks {
            builder: Builder::new(name),
            inputs: Vec::new(),
            outputs: Vec::new(),
            references: Vec::new(),
        }
    }

    pub fn builder(&self) -> &Builder {
        &self.builder
    }

    /// A parameter fed with `tensor`.
    pub fn input(&mut self, tensor: HostTensor) -> Value {
        let value = self.builder.param(format!("in{}", self.inputs.len()), tensor.dtype(), tensor.dims());
        self.inputs.push(tensor);
        value
    }

    /// An f64 parameter fed with `array`.
    pub fn array(&mut self, array: &Array) -> Value {
        self.input(array.tensor())
    }

    /// Expects `value` to have the dimensions of `reference` and its elements within
    /// `tolerance` of it.
    pub fn expect(&mut self, what: &str, value: &Value, reference: Array, tolerance: f64) {
        self.outputs.push(value.clone());
        self.references.push((what.to_string(), Reference::Values(reference, tolerance)));
    }

    /// Expects `value` to equal `reference` bit for bit (dtype included).
    pub fn expect_exact(&mut self, what: &str, value: &Value, reference: HostTensor) {
        self.outputs.push(value.clone());
        self.references.push((what.to_string(), Reference::Exact(reference)));
    }

    /// Compiles, runs and checks every output; returns the largest error seen.
    pub fn run(self) -> f64 {
        let input_count = self.inputs.len();
        let function = self.builder.build(&self.outputs).unwrap_or_else(|error| panic!("{error}"));
        let results = run(&function, &self.inputs);
        let mut worst: f64 = 0.0;
        for ((what, reference), result) in self.references.iter().zip(&results) {
            match reference {
                Reference::Values(expected, tolerance) => {
                    assert_eq!(result.dims(), expected.dims.as_slice(), "{what}: dimensions");
                    worst = worst.max(assert_close(&result.to_f64_vec(), &expected.data, *tolerance, what));
                }
                Reference::Exact(expected) => assert_eq!(result, expected, "{what}"),
            }
        }
        eprintln!(
            "{}: {} checks over {input_count} inputs, max error {worst:e}",
            function.name(),
            results.len()
        );
        worst
    }
}
