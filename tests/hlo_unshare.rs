//! `unshare_elementwise`: every output gets its own copy of the elementwise computation it
//! needs, with bit-identical results (NaN, infinities and signed zeros included).

mod support;

use sirocco::hlo::{is_single_pass, unshare_elementwise, Builder, Function, Value};
use sirocco::{DType, HostTensor};
use support::*;

const N: i64 = 8;

/// Outputs that share intermediates: `b` reads `a`, both read `t`; `norm` is a reduction and
/// `x` a parameter, which are not elementwise results.
fn build(unshare: bool) -> Function {
    let b = Builder::new(if unshare { "unshared" } else { "shared" });
    let x = b.param("x", DType::F32, &[N]);
    let y = b.param("y", DType::F32, &[N]);
    let z = b.param("z", DType::BF16, &[N]);
    let t = &(&x * 2.0) + &y;
    let a = &t.tanh() * &z.convert(DType::F32);
    let bigger = t.gt(&a);
    let c = &bigger.select(&t, &a) + &(&t * &a);
    let norm = (&x * &x).sum();
    let outputs: Vec<Value> = vec![a, c, norm, x];
    let outputs = if unshare { unshare_elementwise(&outputs) } else { outputs };
    b.build(&outputs).unwrap()
}

#[test]
fn copies_compute_the_same_bits() {
    let x = tensor(&[N], &[1.5f32, -0.0, f32::NAN, f32::INFINITY, -3.25, 1e-40, 7.0, -1e30]);
    let y = tensor(&[N], &[0.25f32, 0.0, 1.0, -f32::INFINITY, f32::NAN, -2.0, 1e30, 0.5]);
    let z = HostTensor::from_slice(
        &[N],
        &[0.5f32, -1.0, 2.0, 0.0, -0.0, 3.0, 1e3, -7.0].map(half::bf16::from_f32),
    )
    .unwrap();
    let inputs = [x, y, z];
    let shared = run(&build(false), &inputs);
    let unshared = run(&build(true), &inputs);
    assert_eq!(shared.len(), unshared.len());
    for (index, (s, u)) in shared.iter().zip(&unshared).enumerate() {
        assert_eq!(s.dims(), u.dims(), "output {index}");
        assert_eq!(s.bytes(), u.bytes(), "output {index} differs in its bits");
    }
}

#[test]
fn each_output_has_its_own_copy() {
    let shared = build(false).to_stablehlo();
    let unshared = build(true).to_stablehlo();
    let count = |text: &str, op: &str| text.matches(&format!("\"stablehlo.{op}\"")).count();
    assert_eq!(count(&shared, "optimization_barrier"), 0);
    // One `1.0` per elementwise output (a and c), behind one barrier.
    assert_eq!(count(&unshared, "optimization_barrier"), 1);
    // `tanh(t)` is computed for `a` and again inside `c`'s copy; the reduction is not copied.
    assert_eq!(count(&shared, "tanh"), 1);
    assert_eq!(count(&unshared, "tanh"), 2);
    assert_eq!(count(&shared, "reduce"), count(&unshared, "reduce"));
    // Each copy multiplies x, y and z by its `1.0`, and `x * 2` and `tanh(t) * z` are computed
    // in both copies.
    assert_eq!(count(&unshared, "multiply") - count(&shared, "multiply"), 2 * 3 + 2);
}

#[test]
fn fewer_than_two_elementwise_outputs_are_left_alone() {
    let b = Builder::new("single");
    let x = b.param("x", DType::F32, &[N]);
    let y = (&x * 3.0).exp();
    let outputs = unshare_elementwise(&[y, x.sum()]);
    let text = b.build(&outputs).unwrap().to_stablehlo();
    assert!(!text.contains("optimization_barrier"), "{text}");
}

/// Adafactor's shape on `b`: the new parameter `p - u / rms(u)` is scaled by the RMS of `u`,
/// computed from the new state `v`. Returns the gradient, the parameter, `u`, the new state and
/// the new parameter.
fn entangled_pair(b: &Builder) -> [Value; 5] {
    let g = b.param("g", DType::F32, &[N]);
    let v = b.param("v", DType::F32, &[N]);
    let p = b.param("p", DType::F32, &[N]);
    let new_v = &(&v * 0.9) + &(&(&g * &g) * 0.1);
    let u = &g / &new_v.sqrt();
    let rms = (&u * &u).reduce_mean(&[0]).sqrt();
    let new_p = &p - &(&u / &rms.broadcast_to(&[N]));
    [g, p, u, new_v, new_p]
}

#[test]
fn an_output_scaled_by_a_reduction_of_another_stays_shared() {
    let b = Builder::new("entangled");
    let [_, p, u, new_v, new_p] = entangled_pair(&b);
    let count = b.param("count", DType::F32, &[]);
    let outputs = [new_p, new_v.clone(), &count + 1.0];
    assert!(!is_single_pass(&outputs));
    let outputs = unshare_elementwise(&outputs);
    let text = b.build(&outputs).unwrap().to_stablehlo();
    assert!(!text.contains("optimization_barrier"), "{text}");
    // Without the reduction, the same two outputs can be one pass.
    assert!(is_single_pass(&[&p - &u, new_v]));
}

#[test]
fn entangled_outputs_stay_shared_while_the_others_are_copied() {
    let b = Builder::new("partly");
    let [g, _, _, new_v, new_p] = entangled_pair(&b);
    let (w1, w2) = (b.param("w1", DType::F32, &[N]), b.param("w2", DType::F32, &[N]));
    // Two more outputs reading `g` but sharing no computation with the entangled pair.
    let shared = (&g * 3.0).tanh();
    let (new_w1, new_w2) = (&w1 - &shared, &w2 + &shared);
    let outputs = [new_p, new_v, new_w1, new_w2];
    assert!(!is_single_pass(&outputs));
    let text = b.build(&unshare_elementwise(&outputs)).unwrap().to_stablehlo();
    let count = |op: &str| text.matches(&format!("\"stablehlo.{op}\"")).count();
    // One barrier for the two copies; `tanh` once per copy; the entangled `sqrt`s not copied.
    assert_eq!((count("optimization_barrier"), count("tanh"), count("sqrt")), (1, 2, 2), "{text}");
}
