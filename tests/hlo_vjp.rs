//! The VJP of every differentiable op, and of composites built from them, against central
//! finite differences in f64 on random inputs (CPU plugin).

mod support;

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::Rng;
use sirocco::hlo::{
    checkpoint, cond, fori_loop, grad, scan, value_and_grad, vjp, Builder, GatherDimensions, ScanOptions,
    ScatterDimensions, ScatterMode, TensorType, Value,
};
use sirocco::{DType, HostTensor};
use support::*;

/// Finite-difference step: the inputs are O(1), so f64 leaves ~1e-10 of rounding in a
/// central difference and ~1e-12 of truncation.
const STEP: f64 = 1e-6;
/// Single elements perturbed per input, on top of one random direction over all of them.
const ELEMENTS_PER_INPUT: usize = 2;

/// Checks the gradient of `sum(f(inputs) * weights)` (random weights) with respect to every
/// f64 input against central finite differences. The function and its gradient compile
/// once; each difference re-runs that program with a perturbed input: per input, once along a
/// random direction (which checks every element at once) and at a few single elements.
/// Returns the largest error.
fn check_vjp(rng: &mut StdRng, name: &str, inputs: &[HostTensor], f: impl FnOnce(&[Value]) -> Value) -> f64 {
    let builder = Builder::new(name);
    let parameters: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| builder.param(format!("x{i}"), input.dtype(), input.dims()))
        .collect();
    let output = f(&parameters);
    let weights = Array::random(rng, output.dims(), -1.0, 1.0);
    let loss = (&output * &builder.param("weights", DType::F64, output.dims())).sum();
    let differentiable: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].dtype() == DType::F64).collect();
    let wrt: Vec<Value> = differentiable.iter().map(|&i| parameters[i].clone()).collect();
    let gradients = grad(&loss, &wrt).unwrap_or_else(|error| panic!("{name}: {error}"));
    let mut outputs = vec![loss];
    outputs.extend(gradients);
    let program = compile(&builder.build(&outputs).unwrap_or_else(|error| panic!("{name}: {error}")));
    let mut arguments = inputs.to_vec();
    arguments.push(weights.tensor());
    let base = execute(&program, &arguments);
    let mut worst: f64 = 0.0;
    for (k, &input) in differentiable.iter().enumerate() {
        let x = Array::from_tensor(&inputs[input]);
        let gradient = Array::from_tensor(&base[1 + k]);
        let count = x.data.len();
        let mut directions = vec![Array::random(rng, &x.dims, -1.0, 1.0)];
        for element in sample(rng, count, ELEMENTS_PER_INPUT.min(count)) {
            let mut unit = Array::new(&x.dims, vec![0.0; count]);
            unit.data[element] = 1.0;
            directions.push(unit);
        }
        for direction in directions {
            let mut loss_at = |sign: f64| {
                arguments[input] = x.zip(&direction, |x, d| x + sign * STEP * d).tensor();
                execute(&program, &arguments)[0].to_f64_vec()[0]
            };
            let difference = (loss_at(1.0) - loss_at(-1.0)) / (2.0 * STEP);
            arguments[input] = inputs[input].clone();
            let analytic: f64 = gradient.data.iter().zip(&direction.data).map(|(g, d)| g * d).sum();
            let what = format!("{name}: input {input} along {:?}", &direction.data[..count.min(4)]);
            worst = worst.max(assert_close(&[analytic], &[difference], FINITE_DIFFERENCE, &what));
        }
    }
    eprintln!("vjp {name}: max error {worst:e}");
    worst
}

fn random(rng: &mut StdRng, dims: &[i64], low: f64, high: f64) -> HostTensor {
    Array::random(rng, dims, low, high).tensor()
}

fn int_tensor(dims: &[i64], values: &[i32]) -> HostTensor {
    tensor(dims, values)
}

type UnaryCase = (&'static str, fn(&Value) -> Value, f64, f64);

#[test]
fn unary_float_ops() {
    let mut rng = rng();
    let cases: [UnaryCase; 17] = [
        ("neg", Value::neg, -3.0, 3.0),
        ("abs", Value::abs, -3.0, 3.0),
        ("sign", Value::sign, -3.0, 3.0),
        ("exp", Value::exp, -2.0, 2.0),
        ("log", Value::log, 0.1, 4.0),
        ("log1p", Value::log1p, -0.9, 3.0),
        ("expm1", Value::expm1, -2.0, 2.0),
        ("sqrt", Value::sqrt, 0.1, 4.0),
        ("rsqrt", Value::rsqrt, 0.2, 4.0),
        ("tanh", Value::tanh, -3.0, 3.0),
        ("logistic", Value::logistic, -4.0, 4.0),
        ("sin", Value::sin, -3.0, 3.0),
        ("cos", Value::cos, -3.0, 3.0),
        ("erf", Value::erf, -2.0, 2.0),
        ("floor", Value::floor, -3.0, 3.0),
        ("ceil", Value::ceil, -3.0, 3.0),
        ("round", Value::round, -3.0, 3.0),
    ];
    for (name, op, low, high) in cases {
        let x = random(&mut rng, &[3, 4], low, high);
        check_vjp(&mut rng, name, &[x], |v| op(&v[0]));
    }
    let x = random(&mut rng, &[3, 4], 0.2, 3.0);
    check_vjp(&mut rng, "reciprocal and square", &[x], |v| &v[0].reciprocal() + &v[0].square());
}

type BinaryCase = (&'static str, fn(&Value, &Value) -> Value, (f64, f64), (f64, f64));

#[test]
fn binary_float_ops() {
    let mut rng = rng();
    let real = (-3.0, 3.0);
    let cases: [BinaryCase; 9] = [
        ("add", Value::add, real, real),
        ("sub", Value::sub, real, real),
        ("mul", Value::mul, real, real),
        ("div", Value::div, real, (0.5, 3.0)),
        ("pow", Value::pow, (0.2, 3.0), (-2.0, 2.0)),
        ("max", Value::max, real, real),
        ("min", Value::min, real, real),
        ("rem", Value::rem, real, (0.7, 2.0)),
        ("atan2", Value::atan2, real, real),
    ];
    for (name, op, (a_low, a_high), (b_low, b_high)) in cases {
        let a = random(&mut rng, &[3, 4], a_low, a_high);
        let b = random(&mut rng, &[3, 4], b_low, b_high);
        check_vjp(&mut rng, name, &[a, b], |v| op(&v[0], &v[1]));
    }
    // Rank-0 operands broadcast: their gradient sums over the other operand's elements.
    let a = random(&mut rng, &[3, 4], -2.0, 2.0);
    let s = random(&mut rng, &[], 0.5, 2.0);
    check_vjp(&mut rng, "scalar broadcast", &[a, s], |v| {
        &(&(&v[0] * &v[1]) - &(&v[1] / &v[0].exp())) + &(v[1].pow(&v[0]) * 0.5)
    });
    let a = random(&mut rng, &[3, 4], -2.0, 2.0);
    check_vjp(&mut rng, "with Rust numbers", &[a], |v| (2.0 - &v[0]) * 3.0 / (&v[0].square() + 1.0));
}

/// Builds `op(x, y)` and `reduce(x)` for tied inputs and returns their gradients, which
/// split ties evenly (as JAX does).
#[test]
fn ties_split_the_gradient_evenly() {
    let builder = Builder::new("ties");
    let x = builder.param("x", DType::F64, &[4]);
    let y = builder.param("y", DType::F64, &[4]);
    let max_grads = grad(&x.max(&y).sum(), &[x.clone(), y.clone()]).unwrap();
    let min_grads = grad(&(x.min(&y) * 3.0).sum(), &[x.clone(), y.clone()]).unwrap();
    let reduce_grads = grad(&x.reduce_max(&[0]), std::slice::from_ref(&x)).unwrap();
    let mut outputs = max_grads;
    outputs.extend(min_grads);
    outputs.extend(reduce_grads);
    let function = builder.build(&outputs).unwrap();
    // Elements 0 and 2 tie between x and y; the maximum of x (2.0) appears twice.
    let xs = [1.0, 2.0, -1.0, 2.0];
    let ys = [1.0, 0.5, -1.0, 3.0];
    let out = run(&function, &[tensor(&[4], &xs), tensor(&[4], &ys)]);
    let values: Vec<Vec<f64>> = out.iter().map(HostTensor::to_f64_vec).collect();
    assert_eq!(values[0], [0.5, 1.0, 0.5, 0.0], "d max / dx");
    assert_eq!(values[1], [0.5, 0.0, 0.5, 1.0], "d max / dy");
    assert_eq!(values[2], [1.5, 0.0, 1.5, 3.0], "d min / dx");
    assert_eq!(values[3], [1.5, 3.0, 1.5, 0.0], "d min / dy");
    assert_eq!(values[4], [0.0, 0.5, 0.0, 0.5], "d reduce_max / dx");
}

#[test]
fn select_and_convert() {
    let mut rng = rng();
    let flags: Vec<bool> = (0..12).map(|_| rng.gen()).collect();
    let (a, b) = (random(&mut rng, &[3, 4], -2.0, 2.0), random(&mut rng, &[3, 4], -2.0, 2.0));
    let s = random(&mut rng, &[], -2.0, 2.0);
    let predicate = tensor(&[3, 4], &flags);
    check_vjp(&mut rng, "select", &[predicate.clone(), a.clone(), b], |v| {
        v[0].select(&v[1].sin(), &v[2].exp())
    });
    check_vjp(&mut rng, "select scalar branch", &[predicate, a, s], |v| v[0].select(&v[1], &v[2]));

    // Through f32 the cotangent is rounded to f32: the rule, not a finite difference.
    let builder = Builder::new("convert");
    let x = builder.param("x", DType::F64, &[5]);
    let weights = builder.param("w", DType::F64, &[5]);
    let loss = (&x.convert(DType::F32).convert(DType::F64) * &weights).sum();
    let gradient = grad(&loss, std::slice::from_ref(&x)).unwrap();
    let w = Array::random(&mut rng, &[5], -1.0, 1.0);
    let out = run(&builder.build(&gradient).unwrap(), &[random(&mut rng, &[5], -1.0, 1.0), w.tensor()]);
    assert_eq!(out[0].to_f64_vec(), w.map(|v| f64::from(v as f32)).data);
}

#[test]
fn layout_ops() {
    let mut rng = rng();
    let v = random(&mut rng, &[3], -1.0, 1.0);
    let row = random(&mut rng, &[1, 4], -1.0, 1.0);
    let x = random(&mut rng, &[2, 3, 4], -1.0, 1.0);
    check_vjp(&mut rng, "broadcast_in_dim", &[v.clone(), row.clone()], |p| {
        &p[0].broadcast_in_dim(&[2, 3, 4], &[1]) * &p[1].broadcast_in_dim(&[2, 3, 4], &[0, 2])
    });
    check_vjp(&mut rng, "broadcast_to", &[row], |p| p[0].broadcast_to(&[2, 3, 4]).sin());
    check_vjp(&mut rng, "reshape", std::slice::from_ref(&x), |p| p[0].reshape(&[4, 6]).sin());
    check_vjp(&mut rng, "transpose", std::slice::from_ref(&x), |p| p[0].transpose(&[2, 0, 1]).sin());
    check_vjp(&mut rng, "reverse", std::slice::from_ref(&x), |p| p[0].reverse(&[0, 2]).sin());
    let y = random(&mut rng, &[2, 1, 4], -1.0, 1.0);
    let z = random(&mut rng, &[2, 2, 4], -1.0, 1.0);
    check_vjp(&mut rng, "concatenate", &[x.clone(), y, z], |p| {
        Value::concatenate(&[p[0].clone(), p[1].clone(), p[2].clone()], 1).sin()
    });
    let fill = random(&mut rng, &[], -1.0, 1.0);
    check_vjp(&mut rng, "pad", &[x, fill], |p| p[0].pad(&p[1], &[1, 0, 2], &[0, 2, 1], &[1, 0, 2]).sin());
}

#[test]
fn slices() {
    let mut rng = rng();
    let x = random(&mut rng, &[5, 6, 7], -1.0, 1.0);
    check_vjp(&mut rng, "strided slice", std::slice::from_ref(&x), |p| {
        p[0].slice(&[1, 0, 2], &[5, 5, 7], &[2, 3, 2]).sin()
    });
    check_vjp(&mut rng, "slice_axis", &[x], |p| p[0].slice_axis(1, 2, 5).sin());
    let m = random(&mut rng, &[4, 5], -1.0, 1.0);
    let update = random(&mut rng, &[2, 3], -1.0, 1.0);
    // In range, and clamped back inside.
    for (row, column) in [(1, 2), (7, -3)] {
        let starts = [HostTensor::scalar(row), HostTensor::scalar(column)];
        let inputs = [m.clone(), update.clone(), starts[0].clone(), starts[1].clone()];
        check_vjp(&mut rng, "dynamic_slice", &inputs, |p| {
            p[0].dynamic_slice(&p[2..4], &[2, 3]).sin() * &p[1]
        });
        check_vjp(&mut rng, "dynamic_update_slice", &inputs, |p| {
            p[0].dynamic_update_slice(&p[1].sin(), &p[2..4]).sin()
        });
    }
    let new_row = random(&mut rng, &[5], -1.0, 1.0);
    let index = HostTensor::scalar(2i32);
    check_vjp(&mut rng, "index_axis0 / update_axis0", &[m, new_row, index], |p| {
        let updated = p[0].update_axis0(&p[1].exp(), &p[2]);
        &updated.sin() + &p[0].index_axis0(&p[2]).cos().broadcast_to(&[4, 5])
    });
}

#[test]
fn dot_general_forms() {
    let mut rng = rng();
    let cases = [
        ("matmul", vec![3, 4], vec![4, 5], dot(&[], &[], &[1], &[0])),
        ("batched", vec![2, 3, 4], vec![2, 4, 5], dot(&[0], &[0], &[2], &[1])),
        ("two contracting dims", vec![2, 3, 4], vec![4, 3, 5], dot(&[], &[], &[1, 2], &[1, 0])),
        (
            "batch not leading, contracting out of order",
            vec![3, 2, 4, 5],
            vec![5, 6, 2, 4],
            dot(&[1], &[2], &[3, 2], &[0, 3]),
        ),
    ];
    for (name, lhs_dims, rhs_dims, dimensions) in cases {
        let lhs = random(&mut rng, &lhs_dims, -1.0, 1.0);
        let rhs = random(&mut rng, &rhs_dims, -1.0, 1.0);
        check_vjp(&mut rng, name, &[lhs, rhs], |p| p[0].dot_general(&p[1], &dimensions).tanh());
    }
    let lhs = random(&mut rng, &[2, 3, 4], -1.0, 1.0);
    let rhs = random(&mut rng, &[4, 5], -1.0, 1.0);
    check_vjp(&mut rng, "matmul of a rank-3 lhs", &[lhs, rhs], |p| p[0].matmul(&p[1]));
}

#[test]
fn reductions() {
    let mut rng = rng();
    let x = random(&mut rng, &[3, 4, 5], -2.0, 2.0);
    check_vjp(&mut rng, "reduce_sum", std::slice::from_ref(&x), |p| p[0].sin().reduce_sum(&[0, 2]));
    check_vjp(&mut rng, "reduce_max", std::slice::from_ref(&x), |p| p[0].reduce_max(&[1]));
    check_vjp(&mut rng, "reduce_min", std::slice::from_ref(&x), |p| p[0].reduce_min(&[2, 0]));
    check_vjp(&mut rng, "reduce_mean", std::slice::from_ref(&x), |p| p[0].exp().reduce_mean(&[1, 2]));
    check_vjp(&mut rng, "sum", &[x], |p| p[0].sin().sum());
    let y = random(&mut rng, &[3, 4], 0.5, 1.5);
    check_vjp(&mut rng, "reduce_prod", &[y], |p| p[0].reduce_prod(&[1]));
}

#[test]
fn gather_and_scatter() {
    let mut rng = rng();
    let operand = random(&mut rng, &[5, 4, 6], -1.0, 1.0);
    let starts = Array::new(&[2, 3, 2], integers(&mut rng, 12, 0, 5));
    let numbers = GatherDimensions {
        offset_dims: vec![1, 3],
        collapsed_slice_dims: vec![0],
        start_index_map: vec![0, 2],
        index_vector_dim: 2,
    };
    check_vjp(&mut rng, "gather", &[operand.clone(), starts.tensor_of(DType::I32)], |p| {
        p[0].gather(&p[1], &numbers, &[1, 3, 2]).sin()
    });
    let table = random(&mut rng, &[6, 3], -1.0, 1.0);
    // Repeated ids accumulate into one row.
    let ids = int_tensor(&[2, 4], &[0, 5, 2, 5, 1, 0, 5, 3]);
    check_vjp(&mut rng, "take", &[table.clone(), ids.clone()], |p| p[0].take(&p[1]).sin());
    let row_updates = random(&mut rng, &[2, 4, 3], -1.0, 1.0);
    check_vjp(&mut rng, "scatter_add_rows", &[table, ids, row_updates], |p| {
        p[0].scatter_add_rows(&p[1], &p[2].sin()).sin()
    });
    let scatter_numbers = ScatterDimensions {
        update_window_dims: vec![1],
        inserted_window_dims: vec![0, 2],
        scatter_dims_to_operand_dims: vec![0, 2],
        index_vector_dim: 1,
    };
    let pairs = int_tensor(&[4, 2], &[1, 2, 4, 0, 1, 2, 3, 5]);
    let updates = random(&mut rng, &[4, 3], -1.0, 1.0);
    check_vjp(&mut rng, "scatter add", &[operand, pairs, updates], |p| {
        p[0].scatter(&p[1], &p[2].exp(), &scatter_numbers, ScatterMode::Add).sin()
    });
}

#[test]
fn scan_over_stacked_layers() {
    let mut rng = rng();
    let h0 = random(&mut rng, &[4], -1.0, 1.0);
    let weights = random(&mut rng, &[3, 4, 4], -0.8, 0.8);
    let bias = random(&mut rng, &[4], -0.5, 0.5);
    for reverse in [false, true] {
        let name = if reverse { "reverse scan" } else { "scan" };
        // Gradients with respect to the initial carry, the per-layer xs and a captured bias.
        check_vjp(&mut rng, name, &[h0.clone(), weights.clone(), bias.clone()], |p| {
            let bias = &p[2];
            let (carry, ys) =
                scan(&p[..1], &p[1..2], ScanOptions { reverse, ..ScanOptions::default() }, |c, x| {
                    let h = (&x[0].matmul(&c[0]) + bias).tanh();
                    (vec![h.clone()], vec![h.square().sum()])
                });
            Value::concatenate(&[carry[0].clone(), ys[0].clone()], 0)
        });
    }
}

#[test]
fn fori_loop_cond_and_checkpoint() {
    let mut rng = rng();
    let x = random(&mut rng, &[3], -1.0, 1.0);
    let w = random(&mut rng, &[3], -1.0, 1.0);
    check_vjp(&mut rng, "fori_loop", &[x.clone(), w.clone()], |p| {
        fori_loop(4, &p[..1], |i, c| vec![&(&c[0].sin() * &p[1]) + &i.convert(DType::F64)]).remove(0)
    });
    for taken in [true, false] {
        let name = if taken { "cond (true branch)" } else { "cond (false branch)" };
        let inputs = [HostTensor::scalar(taken), x.clone(), w.clone()];
        check_vjp(&mut rng, name, &inputs, |p| {
            let captured = &p[2];
            let outputs = cond(
                &p[0],
                &p[1..2],
                |v| vec![&v[0].exp() * captured],
                |v| vec![&v[0].sin() - &captured.cos()],
            );
            outputs[0].clone()
        });
    }
    let m = random(&mut rng, &[3, 3], -1.0, 1.0);
    check_vjp(&mut rng, "checkpoint", &[x, m, w], |p| {
        let captured = &p[2];
        checkpoint(&p[..2], |v| vec![(&v[1].matmul(&v[0]).tanh() * captured).exp()]).remove(0)
    });
}

/// Mean softmax cross-entropy of `logits` [batch, classes] against integer `labels` [batch]:
/// log-sum-exp with the maximum subtracted, one-hot labels from iota == label.
fn cross_entropy(logits: &Value, labels: &Value) -> Value {
    let dims = logits.dims().to_vec();
    let max = logits.reduce_max(&[1]).stop_gradient();
    let shifted = logits - &max.broadcast_in_dim(&dims, &[0]);
    let log_sum_exp = &shifted.exp().reduce_sum(&[1]).log() + &max;
    let classes = logits.builder().iota(&TensorType::new(labels.dtype(), &dims), 1);
    let one_hot = classes.eq(&labels.broadcast_in_dim(&dims, &[0])).convert(logits.dtype());
    let picked = (&one_hot * logits).reduce_sum(&[1]);
    (&log_sum_exp - &picked).reduce_mean(&[0])
}

/// RMSNorm over the last dimension of `x` [rows, features] with a gain, eps 1e-5.
fn rms_norm(x: &Value, gain: &Value) -> Value {
    let dims = x.dims().to_vec();
    let inverse_rms = (&x.square().reduce_mean(&[1]) + 1e-5).rsqrt();
    &(x * &inverse_rms.broadcast_in_dim(&dims, &[0])) * &gain.broadcast_in_dim(&dims, &[1])
}

/// Causal self-attention of `x` [time, model] with `heads` heads: scores scaled by
/// 1/sqrt(head_dim), future positions set to the dtype's minimum before the softmax.
fn causal_attention(x: &Value, wq: &Value, wk: &Value, wv: &Value, wo: &Value, heads: i64) -> Value {
    let (time, model) = (x.dims()[0], x.dims()[1]);
    let head_dim = model / heads;
    let split = |w: &Value| x.matmul(w).reshape(&[time, heads, head_dim]).transpose(&[1, 0, 2]);
    let (q, k, v) = (split(wq), split(wk), split(wv));
    let scores = q.dot_general(&k, &dot(&[0], &[0], &[2], &[2])) * (1.0 / (head_dim as f64).sqrt());
    let ty = TensorType::new(DType::I32, &[heads, time, time]);
    let builder = x.builder();
    let causal = builder.iota(&ty, 1).ge(&builder.iota(&ty, 2));
    let masked = causal.select(&scores, &scores.scalar_like(f64::MIN));
    let max = masked.reduce_max(&[2]).stop_gradient().broadcast_in_dim(&[heads, time, time], &[0, 1]);
    let exp = (&masked - &max).exp();
    let probabilities = &exp / &exp.reduce_sum(&[2]).broadcast_in_dim(&[heads, time, time], &[0, 1]);
    let mixed = probabilities.dot_general(&v, &dot(&[0], &[0], &[2], &[1]));
    mixed.transpose(&[1, 0, 2]).reshape(&[time, model]).matmul(wo)
}

#[test]
fn composites() {
    let mut rng = rng();
    let logits = random(&mut rng, &[4, 5], -3.0, 3.0);
    let labels = int_tensor(&[4], &[0, 4, 2, 4]);
    check_vjp(&mut rng, "softmax cross-entropy", &[logits, labels], |p| cross_entropy(&p[0], &p[1]));
    let x = random(&mut rng, &[3, 6], -2.0, 2.0);
    let gain = random(&mut rng, &[6], 0.5, 1.5);
    check_vjp(&mut rng, "rms_norm", &[x, gain], |p| rms_norm(&p[0], &p[1]));
    let x = random(&mut rng, &[5, 4], -1.0, 1.0);
    let projections: Vec<HostTensor> = (0..4).map(|_| random(&mut rng, &[4, 4], -0.7, 0.7)).collect();
    let mut inputs = vec![x];
    inputs.extend(projections);
    check_vjp(&mut rng, "causal self-attention", &inputs, |p| {
        causal_attention(&p[0], &p[1], &p[2], &p[3], &p[4], 2)
    });
    // A residual MLP block scanned over 3 layers of stacked weights.
    let h = random(&mut rng, &[2, 4], -1.0, 1.0);
    let up = random(&mut rng, &[3, 4, 6], -0.6, 0.6);
    let down = random(&mut rng, &[3, 6, 4], -0.6, 0.6);
    check_vjp(&mut rng, "scan over MLP layers", &[h, up, down], |p| {
        let (carry, _) = scan(&p[..1], &p[1..3], ScanOptions::default(), |c, w| {
            (vec![&c[0] + &c[0].matmul(&w[0]).tanh().matmul(&w[1])], Vec::new())
        });
        carry[0].clone()
    });
}

#[test]
fn integer_inputs_and_stop_gradient() {
    let mut rng = rng();
    let builder = Builder::new("blocked");
    let x = builder.param("x", DType::F64, &[3]);
    let table = builder.param("table", DType::F64, &[4, 3]);
    let ids = builder.param("ids", DType::I32, &[2]);
    let looked_up = table.take(&ids).sum();
    let ids_gradient =
        grad(&(&looked_up + &ids.convert(DType::F64).sum()), std::slice::from_ref(&ids)).unwrap();
    assert_eq!(ids_gradient[0].ty(), ids.ty(), "an integer input gets an integer zero gradient");
    let half_blocked = grad(&(&x.stop_gradient() * &x).sum(), std::slice::from_ref(&x)).unwrap();
    let blocked = grad(&x.stop_gradient().exp().sum(), std::slice::from_ref(&x)).unwrap();
    let (value, gradients) = value_and_grad(|p| (&p[0] * &p[0]).sum(), std::slice::from_ref(&x)).unwrap();
    let cotangent = builder.param("cotangent", DType::F64, &[3]);
    let pulled_back = vjp(&[x.exp()], std::slice::from_ref(&cotangent), std::slice::from_ref(&x)).unwrap();
    let outputs = [
        ids_gradient[0].clone(),
        half_blocked[0].clone(),
        blocked[0].clone(),
        value,
        gradients[0].clone(),
        pulled_back[0].clone(),
    ];
    let function = builder.build(&outputs).unwrap();
    let xs = Array::random(&mut rng, &[3], -1.0, 1.0);
    let cts = Array::random(&mut rng, &[3], -1.0, 1.0);
    let out = run(
        &function,
        &[xs.tensor(), random(&mut rng, &[4, 3], -1.0, 1.0), int_tensor(&[2], &[3, 1]), cts.tensor()],
    );
    assert_eq!(out[0], int_tensor(&[2], &[0, 0]));
    assert_eq!(out[1].to_f64_vec(), xs.data, "only the unstopped factor is differentiated");
    assert_eq!(out[2].to_f64_vec(), [0.0; 3]);
    assert_close(&out[3].to_f64_vec(), &[xs.data.iter().map(|v| v * v).sum()], EXACT, "value_and_grad value");
    assert_close(&out[4].to_f64_vec(), &xs.map(|v| 2.0 * v).data, EXACT, "value_and_grad gradient");
    assert_close(&out[5].to_f64_vec(), &xs.zip(&cts, |v, c| c * v.exp()).data, TRANSCENDENTAL, "vjp");
}

#[test]
fn nested_control_flow() {
    let mut rng = rng();
    let h0 = random(&mut rng, &[3], -1.0, 1.0);
    let weights = random(&mut rng, &[2, 3, 3], -0.8, 0.8);
    let shift = random(&mut rng, &[3], -0.5, 0.5);
    let inputs = [h0, weights, shift];
    check_vjp(&mut rng, "checkpoint inside scan", &inputs, |p| {
        let (carry, _) = scan(&p[..1], &p[1..2], ScanOptions::default(), |c, w| {
            let layer =
                checkpoint(&[c[0].clone(), w[0].clone()], |v| vec![(&v[1].matmul(&v[0]) + &p[2]).tanh()]);
            (layer, Vec::new())
        });
        carry[0].clone()
    });
    check_vjp(&mut rng, "scan inside scan, with an integer carry", &inputs, |p| {
        let step = p[0].builder().scalar(0i32);
        let (carry, _) = scan(&[p[0].clone(), step], &p[1..2], ScanOptions::default(), |c, w| {
            let rows = w[0].clone();
            let (inner, _) = scan(&c[..1], &[rows], ScanOptions::default(), |h, row| {
                (vec![&h[0] * &(&row[0] + &p[2]).sin()], Vec::new())
            });
            (vec![&inner[0] + &c[1].convert(DType::F64), &c[1] + 1.0], Vec::new())
        });
        carry[0].clone()
    });
    check_vjp(&mut rng, "cond inside scan", &inputs, |p| {
        let (carry, ys) = scan(&p[..1], &p[1..2], ScanOptions::default(), |c, w| {
            let positive = c[0].sum().gt(&c[0].scalar_like(0.0));
            let next = cond(
                &positive,
                &[c[0].clone(), w[0].clone()],
                |v| vec![v[1].matmul(&v[0]).tanh()],
                |v| vec![(&v[1].matmul(&v[0]) + &p[2]).sin()],
            );
            (next.clone(), next)
        });
        &carry[0] + &ys[0].reduce_sum(&[0])
    });
    // A gradient of a gradient: the VJP rules build ordinary differentiable ops.
    let x = random(&mut rng, &[3, 3], -1.0, 1.0);
    let m = random(&mut rng, &[3, 3], -1.0, 1.0);
    check_vjp(&mut rng, "second order", &[x, m], |p| {
        let inner = (&p[1].matmul(&p[0]).tanh().square() * &p[0].exp()).reduce_max(&[1]).sum();
        grad(&inner, &p[..2]).unwrap().remove(0)
    });
}
