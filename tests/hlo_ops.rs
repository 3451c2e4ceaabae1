//! Every op of the graph builder against a host reference in plain Rust f64, through the CPU
//! plugin. Each test builds one function with many outputs and compiles it once.

mod support;

use half::{bf16, f16};
use rand::Rng;
use sirocco::hlo::{
    checkpoint, cond, fori_loop, optimization_barrier, scan, while_loop, Builder, Comparison, DotDimensions,
    GatherDimensions, RngAlgorithm, ScanOptions, ScatterDimensions, ScatterMode, TensorType, Value,
};
use sirocco::{DType, HostTensor};
use support::*;

/// The error function from its everywhere-positive series (Abramowitz & Stegun 7.1.6):
/// `erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 3 5 ... (2n+1))`. No cancellation,
/// so it is accurate to a few ulps for the |x| <= 3 used here.
fn erf(x: f64) -> f64 {
    let (mut term, mut sum, mut n) = (x, x, 0);
    while term.abs() > 1e-18 * sum.abs() {
        n += 1;
        term *= 2.0 * x * x / f64::from(2 * n + 1);
        sum += term;
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
}

#[test]
fn erf_reference_matches_known_values() {
    // erf(0.5), erf(1), erf(2): A&S table 7.1 / mpmath to 17 digits.
    for (x, expected) in
        [(0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (2.0, 0.995_322_265_018_952_7)]
    {
        assert!((erf(x) - expected).abs() < 1e-15, "erf({x}) = {}", erf(x));
        assert!((erf(-x) + expected).abs() < 1e-15);
    }
}

#[test]
fn parameters_constants_and_iota() {
    let mut rng = rng();
    let mut checks = Checks::new("constants");
    let b = checks.builder().clone();
    let x = Array::random(&mut rng, &[3, 4], -5.0, 5.0);
    let parameter = checks.array(&x);
    checks.expect("parameter", &parameter, x, 0.0);
    checks.expect("f64 scalar", &b.scalar(2.5f64), Array::scalar(2.5), 0.0);
    checks.expect("scalar_of i32", &b.scalar_of(DType::I32, -7.0), Array::scalar(-7.0), 0.0);
    let k = Array::random(&mut rng, &[2, 3], -1e3, 1e3);
    checks.expect("f64 array", &b.constant(&k.tensor()), k.clone(), 0.0);
    // Over the sharing limit: written in full as hex.
    let large = Array::random(&mut rng, &[1000], -1.0, 1.0);
    checks.expect("large f64 array", &b.constant(&large.tensor()), large, 0.0);
    let ints = Array::new(&[2, 2], integers(&mut rng, 4, -1000, 1000));
    checks.expect_exact("i32 array", &b.constant(&ints.tensor_of(DType::I32)), ints.tensor_of(DType::I32));
    let flags = tensor(&[3], &[true, false, true]);
    checks.expect_exact("pred array", &b.constant(&flags), flags);
    let specials = tensor(&[4], &[f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MIN_POSITIVE / 4.0]);
    checks.expect_exact("f32 specials", &b.constant(&specials), specials);
    checks.expect(
        "full",
        &b.full(&TensorType::new(DType::F64, &[2, 3]), 1.25),
        Array::new(&[2, 3], vec![1.25; 6]),
        0.0,
    );
    // Half-precision constants round-trip exactly through convert.
    let bf16_values = Array::random(&mut rng, &[5], -100.0, 100.0).map(|x| bf16::from_f64(x).to_f64());
    let bf16_constant = b.constant(&bf16_values.tensor_of(DType::BF16));
    checks.expect("bf16 constant", &bf16_constant.convert(DType::F64), bf16_values, 0.0);
    let f16_values = Array::random(&mut rng, &[5], -100.0, 100.0).map(|x| f16::from_f64(x).to_f64());
    let f16_constant = b.constant(&f16_values.tensor_of(DType::F16));
    checks.expect("f16 constant", &f16_constant.convert(DType::F64), f16_values, 0.0);
    checks.expect("bf16 scalar", &b.scalar(bf16::from_f32(1.5)).convert(DType::F32), Array::scalar(1.5), 0.0);
    for (dtype, dimension) in [(DType::I32, 0), (DType::I32, 1), (DType::F64, 1), (DType::U32, 2)] {
        let iota = b.iota(&TensorType::new(dtype, &[2, 3, 4]), dimension);
        let expected = Array::from_fn(&[2, 3, 4], |index| index[dimension] as f64);
        checks.expect(&format!("iota {dtype} {dimension}"), &iota, expected, 0.0);
    }
    checks.run();
}

type UnaryCase = (&'static str, fn(&Value) -> Value, fn(f64) -> f64, f64);

#[test]
fn unary_float_ops() {
    let mut rng = rng();
    let mut checks = Checks::new("unary");
    let mut real = Array::random(&mut rng, &[4, 5], -3.0, 3.0);
    real.data[0] = 0.0;
    real.data[1] = 2.0;
    let positive = Array::random(&mut rng, &[4, 5], 0.05, 4.0);
    let above_minus_one = Array::random(&mut rng, &[4, 5], -0.9, 3.0);
    let mut halves = Array::random(&mut rng, &[12], -4.0, 4.0);
    halves.data[..8].copy_from_slice(&[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -3.0]);
    let (real_value, positive_value) = (checks.array(&real), checks.array(&positive));
    let (above_minus_one_value, halves_value) = (checks.array(&above_minus_one), checks.array(&halves));
    let sign = |x: f64| if x == 0.0 { 0.0 } else { x.signum() };
    let on_reals: [UnaryCase; 13] = [
        ("neg", Value::neg, |x| -x, EXACT),
        ("abs", Value::abs, f64::abs, EXACT),
        ("sign", Value::sign, sign, EXACT),
        ("exp", Value::exp, f64::exp, TRANSCENDENTAL),
        ("expm1", Value::expm1, f64::exp_m1, TRANSCENDENTAL),
        ("tanh", Value::tanh, f64::tanh, TRANSCENDENTAL),
        ("logistic", Value::logistic, |x| 1.0 / (1.0 + (-x).exp()), TRANSCENDENTAL),
        ("sin", Value::sin, f64::sin, TRANSCENDENTAL),
        ("cos", Value::cos, f64::cos, TRANSCENDENTAL),
        ("erf", Value::erf, erf, TRANSCENDENTAL),
        ("floor", Value::floor, f64::floor, EXACT),
        ("ceil", Value::ceil, f64::ceil, EXACT),
        ("round", Value::round, f64::round_ties_even, EXACT),
    ];
    for (name, op, reference, tolerance) in on_reals {
        checks.expect(name, &op(&real_value), real.map(reference), tolerance);
    }
    checks.expect("round half to even", &halves_value.round(), halves.map(f64::round_ties_even), EXACT);
    let on_positives: [UnaryCase; 3] = [
        ("log", Value::log, f64::ln, TRANSCENDENTAL),
        ("sqrt", Value::sqrt, f64::sqrt, EXACT),
        ("rsqrt", Value::rsqrt, |x| 1.0 / x.sqrt(), TRANSCENDENTAL),
    ];
    for (name, op, reference, tolerance) in on_positives {
        checks.expect(name, &op(&positive_value), positive.map(reference), tolerance);
    }
    checks.expect("log1p", &above_minus_one_value.log1p(), above_minus_one.map(f64::ln_1p), TRANSCENDENTAL);
    checks.expect("reciprocal", &positive_value.reciprocal(), positive.map(|x| 1.0 / x), EXACT);
    checks.expect("square", &real_value.square(), real.map(|x| x * x), EXACT);
    checks.expect("operator neg", &-&real_value, real.map(|x| -x), EXACT);
    checks.run();
}

#[test]
fn unary_ops_on_integers_and_predicates() {
    let mut rng = rng();
    let mut checks = Checks::new("unary_integers");
    let specials = [1.5, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -0.0, f64::MAX, f64::MIN_POSITIVE];
    let finite = checks.input(tensor(&[7], &specials));
    let expected = Array::new(&[7], specials.iter().map(|x| f64::from(u8::from(x.is_finite()))).collect());
    checks.expect("is_finite", &finite.is_finite(), expected, 0.0);
    let mut ints: Vec<i32> = integers(&mut rng, 6, -100, 100).iter().map(|&x| x as i32).collect();
    ints[0] = 0;
    let int_value = checks.input(tensor(&[6], &ints));
    let map = |f: fn(i32) -> i32| tensor(&[6], &ints.iter().map(|&x| f(x)).collect::<Vec<_>>());
    checks.expect_exact("i32 not", &int_value.not(), map(|x| !x));
    checks.expect_exact("i32 neg", &int_value.neg(), map(|x| -x));
    checks.expect_exact("i32 abs", &int_value.abs(), map(i32::abs));
    checks.expect_exact("i32 sign", &int_value.sign(), map(i32::signum));
    let flags: Vec<bool> = (0..6).map(|_| rng.gen()).collect();
    let flag_value = checks.input(tensor(&[6], &flags));
    checks.expect_exact(
        "pred not",
        &flag_value.not(),
        tensor(&[6], &flags.iter().map(|f| !f).collect::<Vec<_>>()),
    );
    checks.run();
}

type BinaryCase = (&'static str, fn(&Value, &Value) -> Value, fn(f64, f64) -> f64, f64);

#[test]
fn binary_float_ops() {
    let mut rng = rng();
    let mut checks = Checks::new("binary");
    let a = Array::random(&mut rng, &[3, 4], -3.0, 3.0);
    let b = Array::random(&mut rng, &[3, 4], -3.0, 3.0);
    let signs = Array::random(&mut rng, &[3, 4], -1.0, 1.0).map(f64::signum);
    let divisor = Array::random(&mut rng, &[3, 4], 0.5, 3.0).zip(&signs, |x, s| x * s);
    let base = Array::random(&mut rng, &[3, 4], 0.1, 3.0);
    let s = Array::scalar(rng.gen_range(0.5..2.0));
    let (av, bv, dv) = (checks.array(&a), checks.array(&b), checks.array(&divisor));
    let (base_value, sv) = (checks.array(&base), checks.array(&s));
    let cases: [BinaryCase; 8] = [
        ("add", Value::add, |x, y| x + y, EXACT),
        ("sub", Value::sub, |x, y| x - y, EXACT),
        ("mul", Value::mul, |x, y| x * y, EXACT),
        ("max", Value::max, f64::max, EXACT),
        ("min", Value::min, f64::min, EXACT),
        ("atan2", Value::atan2, f64::atan2, TRANSCENDENTAL),
        ("div", Value::div, |x, y| x / y, EXACT),
        ("rem", Value::rem, |x, y| x % y, EXACT),
    ];
    for (name, op, reference, tolerance) in &cases[..6] {
        checks.expect(name, &op(&av, &bv), a.zip(&b, reference), *tolerance);
    }
    for (name, op, reference, tolerance) in &cases[6..] {
        checks.expect(name, &op(&av, &dv), a.zip(&divisor, reference), *tolerance);
    }
    checks.expect("pow", &base_value.pow(&bv), base.zip(&b, f64::powf), TRANSCENDENTAL);
    // Operators, and rank-0 operands (Rust numbers and scalar values) broadcast implicitly.
    let scalar = s.data[0];
    checks.expect("a + b", &(&av + &bv), a.zip(&b, |x, y| x + y), EXACT);
    checks.expect("a - b (owned)", &(av.clone() - bv.clone()), a.zip(&b, |x, y| x - y), EXACT);
    checks.expect("a * b (mixed)", &(av.clone() * &bv), a.zip(&b, |x, y| x * y), EXACT);
    checks.expect("a / d (mixed)", &(&av / dv.clone()), a.zip(&divisor, |x, y| x / y), EXACT);
    checks.expect("a * 2", &(&av * 2.0), a.map(|x| x * 2.0), EXACT);
    checks.expect("2 - a", &(2.0 - &av), a.map(|x| 2.0 - x), EXACT);
    checks.expect("1 / d", &(1.0 / dv.clone()), divisor.map(|x| 1.0 / x), EXACT);
    checks.expect("a + 0.5 (owned)", &(av.clone() + 0.5), a.map(|x| x + 0.5), EXACT);
    checks.expect("a / s", &(&av / &sv), a.map(|x| x / scalar), EXACT);
    checks.expect("s - a", &(&sv - &av), a.map(|x| scalar - x), EXACT);
    checks.expect("max(s, a)", &sv.max(&av), a.map(|x| scalar.max(x)), EXACT);
    checks.run();
}

#[test]
fn binary_integer_and_logical_ops() {
    let mut rng = rng();
    let mut checks = Checks::new("binary_integers");
    let to_i32 = |values: Vec<f64>| values.into_iter().map(|x| x as i32).collect::<Vec<_>>();
    let a = to_i32(integers(&mut rng, 8, -1000, 1000));
    let b = to_i32(integers(&mut rng, 8, -1000, 1000));
    let divisor: Vec<i32> =
        to_i32(integers(&mut rng, 8, 1, 30)).iter().map(|&d| if rng.gen() { d } else { -d }).collect();
    let mut shifts = to_i32(integers(&mut rng, 8, 0, 32));
    shifts[0] = 32;
    shifts[1] = 40;
    let (av, bv) = (checks.input(tensor(&[8], &a)), checks.input(tensor(&[8], &b)));
    let (dv, shift_value) = (checks.input(tensor(&[8], &divisor)), checks.input(tensor(&[8], &shifts)));
    let zip = |x: &[i32], y: &[i32], f: fn(i32, i32) -> i32| {
        tensor(&[8], &x.iter().zip(y).map(|(&x, &y)| f(x, y)).collect::<Vec<_>>())
    };
    checks.expect_exact("i32 add", &(&av + &bv), zip(&a, &b, |x, y| x + y));
    checks.expect_exact("i32 sub", &(&av - &bv), zip(&a, &b, |x, y| x - y));
    checks.expect_exact("i32 mul", &(&av * &bv), zip(&a, &b, |x, y| x * y));
    checks.expect_exact("i32 div truncates", &(&av / &dv), zip(&a, &divisor, |x, y| x / y));
    checks.expect_exact("i32 rem", &av.rem(&dv), zip(&a, &divisor, |x, y| x % y));
    checks.expect_exact("i32 max", &av.max(&bv), zip(&a, &b, i32::max));
    checks.expect_exact("i32 min", &av.min(&bv), zip(&a, &b, i32::min));
    checks.expect_exact("i32 and", &av.and(&bv), zip(&a, &b, |x, y| x & y));
    checks.expect_exact("i32 or", &av.or(&bv), zip(&a, &b, |x, y| x | y));
    checks.expect_exact("i32 xor", &av.xor(&bv), zip(&a, &b, |x, y| x ^ y));
    // StableHLO: shifting by the bit width or more gives 0.
    let shift_left = |x: i32, s: i32| x.checked_shl(s as u32).unwrap_or(0);
    let shift_right = |x: i32, s: i32| (x as u32).checked_shr(s as u32).unwrap_or(0) as i32;
    checks.expect_exact("i32 shift_left", &av.shift_left(&shift_value), zip(&a, &shifts, shift_left));
    checks.expect_exact(
        "i32 shift_right_logical",
        &av.shift_right_logical(&shift_value),
        zip(&a, &shifts, shift_right),
    );
    let unsigned: Vec<u32> = a.iter().map(|&x| x as u32).collect();
    let unsigned_value = checks.input(tensor(&[8], &unsigned));
    let one = checks.builder().scalar(3u32);
    let expected: Vec<u32> = unsigned.iter().map(|x| x >> 3).collect();
    checks.expect_exact(
        "u32 shift_right_logical by a scalar",
        &unsigned_value.shift_right_logical(&one),
        tensor(&[8], &expected),
    );
    let p: Vec<bool> = (0..8).map(|_| rng.gen()).collect();
    let q: Vec<bool> = (0..8).map(|_| rng.gen()).collect();
    let (pv, qv) = (checks.input(tensor(&[8], &p)), checks.input(tensor(&[8], &q)));
    let logical = |f: fn(bool, bool) -> bool| {
        tensor(&[8], &p.iter().zip(&q).map(|(&x, &y)| f(x, y)).collect::<Vec<_>>())
    };
    checks.expect_exact("pred and", &pv.and(&qv), logical(|x, y| x & y));
    checks.expect_exact("pred or", &pv.or(&qv), logical(|x, y| x | y));
    checks.expect_exact("pred xor", &pv.xor(&qv), logical(|x, y| x ^ y));
    checks.run();
}

type Predicate = fn(&f64, &f64) -> bool;

#[test]
fn compare_and_select() {
    let mut rng = rng();
    let mut checks = Checks::new("compare");
    let a = Array::random(&mut rng, &[12], -2.0, 2.0);
    let mut b = Array::random(&mut rng, &[12], -2.0, 2.0);
    b.data[..4].copy_from_slice(&a.data[..4]);
    let ints_a = a.map(|x| (x * 3.0).round());
    let ints_b = b.map(|x| (x * 3.0).round());
    let (av, bv) = (checks.array(&a), checks.array(&b));
    let (ia, ib) = (checks.input(ints_a.tensor_of(DType::I32)), checks.input(ints_b.tensor_of(DType::I32)));
    let directions: [(Comparison, Predicate); 6] = [
        (Comparison::Eq, f64::eq),
        (Comparison::Ne, f64::ne),
        (Comparison::Lt, f64::lt),
        (Comparison::Le, f64::le),
        (Comparison::Gt, f64::gt),
        (Comparison::Ge, f64::ge),
    ];
    let truth =
        |x: &Array, y: &Array, f: fn(&f64, &f64) -> bool| x.zip(y, |x, y| f64::from(u8::from(f(&x, &y))));
    for (direction, f) in directions {
        checks.expect(&format!("f64 {direction:?}"), &av.compare(&bv, direction), truth(&a, &b, f), 0.0);
        checks.expect(
            &format!("i32 {direction:?}"),
            &ia.compare(&ib, direction),
            truth(&ints_a, &ints_b, f),
            0.0,
        );
    }
    checks.expect("lt shorthand", &av.lt(&bv), truth(&a, &b, f64::lt), 0.0);
    checks.expect(
        "ge against a scalar",
        &av.ge(&checks.builder().scalar(0.0f64)),
        a.map(|x| f64::from(u8::from(x >= 0.0))),
        0.0,
    );
    let pick = |p: f64, x: f64, y: f64| if p != 0.0 { x } else { y };
    let predicate = truth(&a, &b, f64::lt);
    let predicate_value = av.lt(&bv);
    checks.expect(
        "select",
        &predicate_value.select(&av, &bv),
        Array::from_fn(&[12], |i| pick(predicate.at(i), a.at(i), b.at(i))),
        0.0,
    );
    let flag = rng.gen::<bool>();
    let flag_value = checks.input(HostTensor::scalar(flag));
    checks.expect(
        "select on a scalar predicate",
        &flag_value.select(&av, &bv),
        if flag { a.clone() } else { b.clone() },
        0.0,
    );
    let fill = checks.array(&Array::scalar(9.0));
    checks.expect(
        "select with a scalar branch",
        &predicate_value.select(&fill, &bv),
        Array::from_fn(&[12], |i| pick(predicate.at(i), 9.0, b.at(i))),
        0.0,
    );
    checks.expect(
        "select between scalars",
        &predicate_value.select(&fill, &fill.neg()),
        predicate.map(|p| pick(p, 9.0, -9.0)),
        0.0,
    );
    checks.run();
}

#[test]
fn conversions() {
    let mut rng = rng();
    let mut checks = Checks::new("convert");
    let x = Array::random(&mut rng, &[10], -300.0, 300.0);
    // Values exact in f32, so that f64 -> f16/bf16 rounds once whichever way XLA goes.
    let x32 = x.map(|v| f64::from(v as f32));
    let (xv, x32v) = (checks.array(&x), checks.array(&x32));
    checks.expect(
        "f64 -> f32 -> f64",
        &xv.convert(DType::F32).convert(DType::F64),
        x.map(|v| f64::from(v as f32)),
        0.0,
    );
    checks.expect(
        "f64 -> bf16 -> f64",
        &x32v.convert(DType::BF16).convert(DType::F64),
        x32.map(|v| bf16::from_f64(v).to_f64()),
        0.0,
    );
    checks.expect(
        "f64 -> f16 -> f64",
        &x32v.convert(DType::F16).convert(DType::F64),
        x32.map(|v| f16::from_f64(v).to_f64()),
        0.0,
    );
    let singles: Vec<f32> = x.data.iter().map(|&v| v as f32).collect();
    let single_value = checks.input(tensor(&[10], &singles));
    let to_bf16: Vec<bf16> = singles.iter().map(|&v| bf16::from_f32(v)).collect();
    checks.expect_exact("f32 -> bf16", &single_value.convert(DType::BF16), tensor(&[10], &to_bf16));
    let to_f16: Vec<f16> = singles.iter().map(|&v| f16::from_f32(v)).collect();
    checks.expect_exact("f32 -> f16", &single_value.convert(DType::F16), tensor(&[10], &to_f16));
    checks.expect_exact(
        "bf16 -> f32",
        &single_value.convert(DType::BF16).convert(DType::F32),
        tensor(&[10], &to_bf16.iter().map(|v| v.to_f32()).collect::<Vec<_>>()),
    );
    checks.expect("f64 -> i32 truncates", &xv.convert(DType::I32), x.map(f64::trunc), 0.0);
    checks.expect("f64 -> i32 -> f64", &xv.convert(DType::I32).convert(DType::F64), x.map(f64::trunc), 0.0);
    checks.expect(
        "f64 -> pred",
        &xv.gt(&xv.scalar_like(0.0)).convert(DType::F64),
        x.map(|v| f64::from(u8::from(v > 0.0))),
        0.0,
    );
    let small = Array::new(&[4], integers(&mut rng, 4, 0, 256));
    let bytes = checks.input(small.tensor_of(DType::U8));
    checks.expect("u8 -> f32", &bytes.convert(DType::F32), small, 0.0);
    let flags = tensor(&[3], &[true, false, true]);
    let flag_value = checks.input(flags);
    checks.expect("pred -> f64", &flag_value.convert(DType::F64), Array::new(&[3], vec![1.0, 0.0, 1.0]), 0.0);
    checks.expect_exact("same dtype is the identity", &xv.convert(DType::F64), x.tensor());
    let bits: Vec<i64> = x.data.iter().map(|v| v.to_bits() as i64).collect();
    checks.expect_exact("bitcast f64 -> i64", &xv.bitcast_convert(DType::I64), tensor(&[10], &bits));
    let single_bits: Vec<u32> = singles.iter().map(|v| v.to_bits()).collect();
    checks.expect_exact(
        "bitcast f32 -> u32",
        &single_value.bitcast_convert(DType::U32),
        tensor(&[10], &single_bits),
    );
    let bits_value = checks.input(tensor(&[10], &single_bits));
    checks.expect_exact(
        "bitcast u32 -> f32",
        &bits_value.bitcast_convert(DType::F32),
        tensor(&[10], &singles),
    );
    checks.run();
}

#[test]
fn broadcast_reshape_transpose() {
    let mut rng = rng();
    let mut checks = Checks::new("layout");
    let v = Array::random(&mut rng, &[3], -1.0, 1.0);
    let row = Array::random(&mut rng, &[1, 4], -1.0, 1.0);
    let x = Array::random(&mut rng, &[2, 3, 4], -1.0, 1.0);
    let (vv, row_value, xv) = (checks.array(&v), checks.array(&row), checks.array(&x));
    checks.expect(
        "broadcast_in_dim",
        &vv.broadcast_in_dim(&[2, 3, 4], &[1]),
        Array::from_fn(&[2, 3, 4], |i| v.at(&[i[1]])),
        0.0,
    );
    checks.expect(
        "broadcast_in_dim expands size 1",
        &row_value.broadcast_in_dim(&[3, 4], &[0, 1]),
        Array::from_fn(&[3, 4], |i| row.at(&[0, i[1]])),
        0.0,
    );
    checks.expect(
        "broadcast_in_dim to a new leading axis",
        &row_value.broadcast_in_dim(&[2, 1, 4], &[1, 2]),
        Array::from_fn(&[2, 1, 4], |i| row.at(&[0, i[2]])),
        0.0,
    );
    checks.expect(
        "broadcast_to",
        &row_value.broadcast_to(&[2, 3, 4]),
        Array::from_fn(&[2, 3, 4], |i| row.at(&[0, i[2]])),
        0.0,
    );
    checks.expect("reshape", &xv.reshape(&[6, 4]), Array::new(&[6, 4], x.data.clone()), 0.0);
    checks.expect("flatten", &xv.flatten(), Array::new(&[24], x.data.clone()), 0.0);
    checks.expect("expand_dims", &xv.expand_dims(1), Array::new(&[2, 1, 3, 4], x.data.clone()), 0.0);
    checks.expect(
        "transpose",
        &xv.transpose(&[2, 0, 1]),
        Array::from_fn(&[4, 2, 3], |i| x.at(&[i[1], i[2], i[0]])),
        0.0,
    );
    checks.expect("transpose identity", &xv.transpose(&[0, 1, 2]), x.clone(), 0.0);
    checks.run();
}

/// `pad` on the host: per dimension, `low` fill, elements separated by `interior` fill, `high` fill.
fn pad_reference(x: &Array, fill: f64, low: &[i64], high: &[i64], interior: &[i64]) -> Array {
    let dims: Vec<i64> =
        (0..x.dims.len()).map(|d| low[d] + x.dims[d] + (x.dims[d] - 1) * interior[d] + high[d]).collect();
    Array::from_fn(&dims, |index| {
        let mut source = Vec::with_capacity(index.len());
        for d in 0..index.len() {
            let offset = index[d] - low[d];
            let step = interior[d] + 1;
            if offset < 0 || offset % step != 0 || offset / step >= x.dims[d] {
                return fill;
            }
            source.push(offset / step);
        }
        x.at(&source)
    })
}

#[test]
fn slices_updates_concatenate_pad_reverse() {
    let mut rng = rng();
    let mut checks = Checks::new("slices");
    let b = checks.builder().clone();
    let x = Array::random(&mut rng, &[5, 6, 7], -1.0, 1.0);
    let m = Array::random(&mut rng, &[4, 5], -1.0, 1.0);
    let update = Array::random(&mut rng, &[2, 3], -1.0, 1.0);
    let (xv, mv, uv) = (checks.array(&x), checks.array(&m), checks.array(&update));
    let strided = xv.slice(&[1, 0, 2], &[5, 6, 7], &[2, 3, 2]);
    checks.expect(
        "strided slice",
        &strided,
        Array::from_fn(&[2, 2, 3], |i| x.at(&[1 + 2 * i[0], 3 * i[1], 2 + 2 * i[2]])),
        0.0,
    );
    checks.expect(
        "slice_axis",
        &xv.slice_axis(1, 2, 5),
        Array::from_fn(&[5, 3, 7], |i| x.at(&[i[0], i[1] + 2, i[2]])),
        0.0,
    );
    // Runtime starts, clamped so that the window stays inside (starts of the window: 2 and 2
    // at most for a [2, 3] window of [4, 5]).
    let starts = [(1, 2), (3, -2), (10, 10), (-5, 1)];
    for (row, column) in starts {
        let index = [checks.input(HostTensor::scalar(row)), checks.input(HostTensor::scalar(column))];
        let (r, c) = (i64::from(row).clamp(0, 2), i64::from(column).clamp(0, 2));
        let window = Array::from_fn(&[2, 3], |i| m.at(&[r + i[0], c + i[1]]));
        checks.expect(
            &format!("dynamic_slice at ({row}, {column})"),
            &mv.dynamic_slice(&index, &[2, 3]),
            window,
            0.0,
        );
        let mut written = m.clone();
        for i in indices(&[2, 3]) {
            written.set(&[r + i[0], c + i[1]], update.at(&i));
        }
        checks.expect(
            &format!("dynamic_update_slice at ({row}, {column})"),
            &mv.dynamic_update_slice(&uv, &index),
            written,
            0.0,
        );
    }
    let row_index = checks.input(HostTensor::scalar(2i32));
    checks.expect(
        "index_axis0",
        &mv.index_axis0(&row_index),
        Array::from_fn(&[5], |i| m.at(&[2, i[0]])),
        0.0,
    );
    let new_row = Array::random(&mut rng, &[5], -1.0, 1.0);
    let new_row_value = checks.array(&new_row);
    let with_row = Array::from_fn(&[4, 5], |i| if i[0] == 2 { new_row.at(&[i[1]]) } else { m.at(i) });
    checks.expect("update_axis0", &mv.update_axis0(&new_row_value, &row_index), with_row, 0.0);
    let (p, q) = (Array::random(&mut rng, &[4, 1], -1.0, 1.0), Array::random(&mut rng, &[4, 2], -1.0, 1.0));
    let (pv, qv) = (checks.array(&p), checks.array(&q));
    let joined = Array::from_fn(&[4, 8], |i| match i[1] {
        0..5 => m.at(i),
        5 => p.at(&[i[0], 0]),
        c => q.at(&[i[0], c - 6]),
    });
    checks.expect("concatenate", &Value::concatenate(&[mv.clone(), pv, qv], 1), joined, 0.0);
    let fill = checks.array(&Array::scalar(-9.0));
    let (low, high, interior) = ([1, 0], [0, 2], [1, 2]);
    checks.expect(
        "pad",
        &mv.pad(&fill, &low, &high, &interior),
        pad_reference(&m, -9.0, &low, &high, &interior),
        0.0,
    );
    checks.expect(
        "pad with a constant",
        &mv.pad(&b.scalar(0.0f64), &[2, 1], &[1, 0], &[0, 0]),
        pad_reference(&m, 0.0, &[2, 1], &[1, 0], &[0, 0]),
        0.0,
    );
    checks.expect(
        "reverse",
        &xv.reverse(&[0, 2]),
        Array::from_fn(&[5, 6, 7], |i| x.at(&[4 - i[0], i[1], 6 - i[2]])),
        0.0,
    );
    checks.run();
}

/// `dot_general` on the host: output dims are batch, lhs free, rhs free (StableHLO order).
fn dot_general_reference(lhs: &Array, rhs: &Array, d: &DotDimensions) -> Array {
    let free = |rank: usize, batch: &[usize], contracting: &[usize]| -> Vec<usize> {
        (0..rank).filter(|dim| !batch.contains(dim) && !contracting.contains(dim)).collect()
    };
    let lhs_free = free(lhs.dims.len(), &d.lhs_batch, &d.lhs_contracting);
    let rhs_free = free(rhs.dims.len(), &d.rhs_batch, &d.rhs_contracting);
    let mut dims: Vec<i64> = d.lhs_batch.iter().map(|&b| lhs.dims[b]).collect();
    dims.extend(lhs_free.iter().map(|&f| lhs.dims[f]));
    dims.extend(rhs_free.iter().map(|&f| rhs.dims[f]));
    let contracted: Vec<i64> = d.lhs_contracting.iter().map(|&c| lhs.dims[c]).collect();
    Array::from_fn(&dims, |out| {
        let (batch, rest) = out.split_at(d.lhs_batch.len());
        let (lhs_part, rhs_part) = rest.split_at(lhs_free.len());
        let mut total = 0.0;
        for k in indices(&contracted) {
            let mut l = vec![0; lhs.dims.len()];
            let mut r = vec![0; rhs.dims.len()];
            for (i, (&lb, &rb)) in d.lhs_batch.iter().zip(&d.rhs_batch).enumerate() {
                l[lb] = batch[i];
                r[rb] = batch[i];
            }
            for (i, &f) in lhs_free.iter().enumerate() {
                l[f] = lhs_part[i];
            }
            for (i, &f) in rhs_free.iter().enumerate() {
                r[f] = rhs_part[i];
            }
            for (i, (&lc, &rc)) in d.lhs_contracting.iter().zip(&d.rhs_contracting).enumerate() {
                l[lc] = k[i];
                r[rc] = k[i];
            }
            total += lhs.at(&l) * rhs.at(&r);
        }
        total
    })
}

#[test]
fn dot_general_forms() {
    let mut rng = rng();
    let mut checks = Checks::new("dot");
    let cases: [(&str, &[i64], &[i64], DotDimensions); 6] = [
        ("matmul", &[3, 4], &[4, 5], DotDimensions::matmul(2)),
        ("batched", &[2, 3, 4], &[2, 4, 5], dot(&[0], &[0], &[2], &[1])),
        ("two contracting dims", &[2, 3, 4], &[4, 3, 5], dot(&[], &[], &[1, 2], &[1, 0])),
        ("contracting dims in reverse order", &[3, 4, 2], &[2, 4, 5], dot(&[], &[], &[2, 1], &[0, 1])),
        ("batch dims not leading", &[3, 2, 4], &[4, 5, 2], dot(&[1], &[2], &[2], &[0])),
        ("outer product", &[3], &[2], dot(&[], &[], &[], &[])),
    ];
    for (name, lhs_dims, rhs_dims, dimensions) in cases {
        let lhs = Array::random(&mut rng, lhs_dims, -1.0, 1.0);
        let rhs = Array::random(&mut rng, rhs_dims, -1.0, 1.0);
        let (lv, rv) = (checks.array(&lhs), checks.array(&rhs));
        checks.expect(
            name,
            &lv.dot_general(&rv, &dimensions),
            dot_general_reference(&lhs, &rhs, &dimensions),
            EXACT,
        );
    }
    let lhs = Array::random(&mut rng, &[2, 3, 4], -1.0, 1.0);
    let rhs = Array::random(&mut rng, &[4, 5], -1.0, 1.0);
    let (lv, rv) = (checks.array(&lhs), checks.array(&rhs));
    checks.expect(
        "matmul of a rank-3 lhs",
        &lv.matmul(&rv),
        dot_general_reference(&lhs, &rhs, &dot(&[], &[], &[2], &[0])),
        EXACT,
    );
    checks.run();
}

/// Reduces `x` over `dimensions` with `combine`, starting from `init`.
fn reduce_reference(x: &Array, dimensions: &[usize], init: f64, combine: fn(f64, f64) -> f64) -> Array {
    let kept: Vec<usize> = (0..x.dims.len()).filter(|d| !dimensions.contains(d)).collect();
    let dims: Vec<i64> = kept.iter().map(|&d| x.dims[d]).collect();
    let mut out = Array::new(&dims, vec![init; dims.iter().product::<i64>() as usize]);
    for index in indices(&x.dims) {
        let target: Vec<i64> = kept.iter().map(|&d| index[d]).collect();
        out.set(&target, combine(out.at(&target), x.at(&index)));
    }
    out
}

type ReduceCase = (&'static str, fn(&Value, &[usize]) -> Value, f64, fn(f64, f64) -> f64);

#[test]
fn reductions() {
    let mut rng = rng();
    let mut checks = Checks::new("reduce");
    let x = Array::random(&mut rng, &[3, 4, 5], -2.0, 2.0);
    let xv = checks.array(&x);
    let kinds: [ReduceCase; 4] = [
        ("sum", Value::reduce_sum, 0.0, |a, b| a + b),
        ("max", Value::reduce_max, f64::NEG_INFINITY, f64::max),
        ("min", Value::reduce_min, f64::INFINITY, f64::min),
        ("prod", Value::reduce_prod, 1.0, |a, b| a * b),
    ];
    for (name, op, init, combine) in kinds {
        for dimensions in [&[0][..], &[1, 2], &[2, 0], &[0, 1, 2], &[]] {
            let reference = reduce_reference(&x, dimensions, init, combine);
            checks.expect(
                &format!("reduce_{name} over {dimensions:?}"),
                &op(&xv, dimensions),
                reference,
                EXACT,
            );
        }
    }
    let mean = reduce_reference(&x, &[0, 2], 0.0, |a, b| a + b).map(|s| s / 15.0);
    checks.expect("reduce_mean over [0, 2]", &xv.reduce_mean(&[0, 2]), mean, EXACT);
    checks.expect("sum", &xv.sum(), Array::scalar(x.data.iter().sum()), EXACT);
    let ints = Array::new(&[2, 3], integers(&mut rng, 6, -50, 50));
    let int_value = checks.input(ints.tensor_of(DType::I32));
    checks.expect(
        "i32 reduce_max",
        &int_value.reduce_max(&[1]),
        reduce_reference(&ints, &[1], f64::NEG_INFINITY, f64::max),
        0.0,
    );
    checks.expect(
        "i32 reduce_sum",
        &int_value.reduce_sum(&[0]),
        reduce_reference(&ints, &[0], 0.0, |a, b| a + b),
        0.0,
    );
    // A general reduction over two operands: sum and sum of squares in one pass.
    let b = checks.builder().clone();
    let zero = b.scalar(0.0f64);
    let both = Value::reduce(&[xv.clone(), xv.square()], &[zero.clone(), zero], &[1], |args| {
        vec![&args[0] + &args[2], &args[1] + &args[3]]
    });
    checks.expect("reduce region: sum", &both[0], reduce_reference(&x, &[1], 0.0, |a, b| a + b), EXACT);
    checks.expect(
        "reduce region: sum of squares",
        &both[1],
        reduce_reference(&x, &[1], 0.0, |a, b| a + b * b),
        EXACT,
    );
    checks.run();
}

#[test]
fn argmax_and_argmin_pick_the_first_of_ties() {
    let mut rng = rng();
    let mut checks = Checks::new("argmax");
    let mut x = Array::random(&mut rng, &[4, 6], -1.0, 1.0);
    // Row 0: the maximum twice (columns 1 and 4); row 1: the minimum twice (columns 0 and 5).
    x.set(&[0, 1], 5.0);
    x.set(&[0, 4], 5.0);
    x.set(&[1, 0], -5.0);
    x.set(&[1, 5], -5.0);
    // Column 2: the maximum twice along dimension 0 (rows 1 and 3).
    x.set(&[1, 2], 7.0);
    x.set(&[3, 2], 7.0);
    let xv = checks.array(&x);
    let first = |values: Vec<f64>, better: fn(f64, f64) -> bool| {
        let mut best = 0;
        for (i, &v) in values.iter().enumerate() {
            if better(v, values[best]) {
                best = i;
            }
        }
        best as f64
    };
    let cases =
        [(1, true, DType::I32), (1, false, DType::I64), (0, true, DType::I32), (0, false, DType::I32)];
    for (dimension, largest, index_dtype) in cases {
        let (value, better): (Value, fn(f64, f64) -> bool) = if largest {
            (xv.argmax(dimension, index_dtype), |a, b| a > b)
        } else {
            (xv.argmin(dimension, index_dtype), |a, b| a < b)
        };
        let kept = 1 - dimension;
        let expected = Array::from_fn(&[x.dims[kept]], |i| {
            let line = (0..x.dims[dimension]).map(|j| {
                let mut index = [0, 0];
                (index[kept], index[dimension]) = (i[0], j);
                x.at(&index)
            });
            first(line.collect(), better)
        });
        let name = if largest { "argmax" } else { "argmin" };
        checks.expect(&format!("{name} over dimension {dimension}"), &value, expected, 0.0);
    }
    checks.run();
}

/// StableHLO `gather` on the host (starts clamped into the operand).
fn gather_reference(
    operand: &Array,
    indices_array: &Array,
    d: &GatherDimensions,
    slice_sizes: &[i64],
) -> Array {
    let batch: Vec<i64> = (0..indices_array.dims.len())
        .filter(|&k| k != d.index_vector_dim)
        .map(|k| indices_array.dims[k])
        .collect();
    let offset_operand_dims: Vec<usize> =
        (0..operand.dims.len()).filter(|dim| !d.collapsed_slice_dims.contains(dim)).collect();
    let rank = batch.len() + offset_operand_dims.len();
    let (mut next_batch, mut next_offset) = (batch.iter(), offset_operand_dims.iter());
    let dims: Vec<i64> = (0..rank)
        .map(|k| {
            if d.offset_dims.contains(&k) {
                slice_sizes[*next_offset.next().unwrap()]
            } else {
                *next_batch.next().unwrap()
            }
        })
        .collect();
    Array::from_fn(&dims, |out| {
        let batch_index: Vec<i64> =
            (0..rank).filter(|k| !d.offset_dims.contains(k)).map(|k| out[k]).collect();
        let offsets: Vec<i64> = d.offset_dims.iter().map(|&k| out[k]).collect();
        let mut position = vec![0; operand.dims.len()];
        for (component, &dim) in d.start_index_map.iter().enumerate() {
            let mut index = batch_index.clone();
            if d.index_vector_dim < indices_array.dims.len() {
                index.insert(d.index_vector_dim, component as i64);
            }
            position[dim] = (indices_array.at(&index) as i64).clamp(0, operand.dims[dim] - slice_sizes[dim]);
        }
        for (&dim, &offset) in offset_operand_dims.iter().zip(&offsets) {
            position[dim] += offset;
        }
        operand.at(&position)
    })
}

/// StableHLO `scatter` on the host; updates whose window leaves the operand are skipped.
fn scatter_reference(
    operand: &Array,
    indices_array: &Array,
    updates: &Array,
    d: &ScatterDimensions,
    combine: fn(f64, f64) -> f64,
) -> Array {
    let mut out = operand.clone();
    let window_operand_dims: Vec<usize> =
        (0..operand.dims.len()).filter(|dim| !d.inserted_window_dims.contains(dim)).collect();
    for u in indices(&updates.dims) {
        let scatter_index: Vec<i64> =
            (0..u.len()).filter(|k| !d.update_window_dims.contains(k)).map(|k| u[k]).collect();
        let mut position = vec![0; operand.dims.len()];
        for (component, &dim) in d.scatter_dims_to_operand_dims.iter().enumerate() {
            let mut index = scatter_index.clone();
            if d.index_vector_dim < indices_array.dims.len() {
                index.insert(d.index_vector_dim, component as i64);
            }
            position[dim] = indices_array.at(&index) as i64;
        }
        for (&dim, &window) in window_operand_dims.iter().zip(&d.update_window_dims) {
            position[dim] += u[window];
        }
        if position.iter().zip(&operand.dims).all(|(&p, &size)| 0 <= p && p < size) {
            out.set(&position, combine(out.at(&position), updates.at(&u)));
        }
    }
    out
}

#[test]
fn gather_and_scatter() {
    let mut rng = rng();
    let mut checks = Checks::new("gather");
    let operand = Array::random(&mut rng, &[5, 4, 6], -1.0, 1.0);
    let operand_value = checks.array(&operand);
    // Index vectors along dimension 2 address operand dimensions 0 and 2; some are out of range
    // and get clamped.
    let mut starts = Array::new(&[2, 3, 2], integers(&mut rng, 12, 0, 5));
    starts.set(&[0, 0, 0], 9.0);
    starts.set(&[1, 2, 1], -3.0);
    let starts_value = checks.input(starts.tensor_of(DType::I32));
    let numbers = GatherDimensions {
        offset_dims: vec![1, 3],
        collapsed_slice_dims: vec![0],
        start_index_map: vec![0, 2],
        index_vector_dim: 2,
    };
    let slice_sizes = [1, 3, 2];
    checks.expect(
        "gather",
        &operand_value.gather(&starts_value, &numbers, &slice_sizes),
        gather_reference(&operand, &starts, &numbers, &slice_sizes),
        0.0,
    );
    let table = Array::random(&mut rng, &[6, 3], -1.0, 1.0);
    let table_value = checks.array(&table);
    let mut ids = Array::new(&[2, 4], integers(&mut rng, 8, 0, 6));
    ids.set(&[0, 1], ids.at(&[1, 2]));
    ids.set(&[1, 3], 8.0);
    let ids_value = checks.input(ids.tensor_of(DType::I32));
    let looked_up = Array::from_fn(&[2, 4, 3], |i| table.at(&[(ids.at(&i[..2]) as i64).min(5), i[2]]));
    checks.expect("take", &table_value.take(&ids_value), looked_up, 0.0);
    let scalar_id = checks.input(HostTensor::scalar(4i32));
    checks.expect(
        "take of a scalar index",
        &table_value.take(&scalar_id),
        Array::from_fn(&[3], |i| table.at(&[4, i[0]])),
        0.0,
    );

    // Scatter windows of 3 along operand dimension 1 at (dim 0, dim 2) index pairs.
    let scatter_numbers = ScatterDimensions {
        update_window_dims: vec![1],
        inserted_window_dims: vec![0, 2],
        scatter_dims_to_operand_dims: vec![0, 2],
        index_vector_dim: 1,
    };
    let mut pairs = Array::new(&[4, 2], vec![1.0, 2.0, 4.0, 0.0, 1.0, 2.0, 3.0, 5.0]);
    pairs.set(&[3, 0], f64::from(rng.gen_range(0..5)));
    let pairs_value = checks.input(pairs.tensor_of(DType::I32));
    let updates = Array::random(&mut rng, &[4, 3], -1.0, 1.0);
    let updates_value = checks.array(&updates);
    let added = scatter_reference(&operand, &pairs, &updates, &scatter_numbers, |a, b| a + b);
    let scattered = operand_value.scatter(&pairs_value, &updates_value, &scatter_numbers, ScatterMode::Add);
    checks.expect("scatter add (repeated index)", &scattered, added, EXACT);
    let unique = Array::new(&[3, 2], vec![0.0, 1.0, 2.0, 5.0, 4.0, 3.0]);
    let unique_value = checks.input(unique.tensor_of(DType::I32));
    let replacements = Array::random(&mut rng, &[3, 3], -1.0, 1.0);
    let replacements_value = checks.array(&replacements);
    let replaced = scatter_reference(&operand, &unique, &replacements, &scatter_numbers, |_, b| b);
    let replaced_value =
        operand_value.scatter(&unique_value, &replacements_value, &scatter_numbers, ScatterMode::Replace);
    checks.expect("scatter replace", &replaced_value, replaced, 0.0);
    let row_updates = Array::random(&mut rng, &[2, 4, 3], -1.0, 1.0);
    let row_updates_value = checks.array(&row_updates);
    let mut in_range_ids = ids.clone();
    in_range_ids.set(&[1, 3], ids.at(&[0, 0]));
    let in_range_value = checks.input(in_range_ids.tensor_of(DType::I32));
    let mut rows = table.clone();
    for i in indices(&[2, 4, 3]) {
        let target = [in_range_ids.at(&i[..2]) as i64, i[2]];
        rows.set(&target, rows.at(&target) + row_updates.at(&i));
    }
    checks.expect(
        "scatter_add_rows",
        &table_value.scatter_add_rows(&in_range_value, &row_updates_value),
        rows,
        EXACT,
    );
    checks.run();
}

#[test]
fn loops() {
    let mut rng = rng();
    let mut checks = Checks::new("loops");
    let b = checks.builder().clone();
    let x = Array::random(&mut rng, &[3], 0.5, 1.5);
    let scale = Array::scalar(rng.gen_range(1.1..1.5));
    let (xv, scale_value) = (checks.array(&x), checks.array(&scale));
    // Doubles-and-scales x while its sum stays under a limit: a data-dependent trip count, with
    // a captured value (scale).
    let limit = 50.0;
    let result = while_loop(
        &[b.scalar(0i32), xv.clone()],
        |carry| carry[1].sum().lt(&b.scalar(limit)),
        |carry| vec![&carry[0] + 1.0, &carry[1] * &scale_value * 2.0],
    );
    let (mut trips, mut value) = (0, x.clone());
    while value.data.iter().sum::<f64>() < limit {
        trips += 1;
        value = value.map(|v| v * scale.data[0] * 2.0);
    }
    checks.expect("while_loop trip count", &result[0], Array::scalar(f64::from(trips)), 0.0);
    checks.expect("while_loop carry", &result[1], value, EXACT);
    // acc <- acc * scale + i, for i in 0..4.
    let accumulated = fori_loop(4, std::slice::from_ref(&xv), |i, carry| {
        vec![&carry[0] * &scale_value + &i.convert(DType::F64)]
    });
    let mut expected = x.clone();
    for i in 0..4 {
        expected = expected.map(|v| v * scale.data[0] + f64::from(i));
    }
    checks.expect("fori_loop", &accumulated[0], expected, EXACT);

    // A running sum with decay over 5 steps, stacking the carry and its total as ys.
    let xs = Array::random(&mut rng, &[5, 3], -1.0, 1.0);
    let xs_value = checks.array(&xs);
    for reverse in [false, true] {
        let (carry, ys) = scan(
            std::slice::from_ref(&xv),
            std::slice::from_ref(&xs_value),
            ScanOptions { reverse, ..ScanOptions::default() },
            |c, x| {
                let next = &c[0] * 0.5 + &x[0];
                (vec![next.clone()], vec![next.clone(), next.sum()])
            },
        );
        let mut state = x.clone();
        let mut stacked = Array::new(&[5, 3], vec![0.0; 15]);
        let mut totals = Array::new(&[5], vec![0.0; 5]);
        let order: Vec<i64> = if reverse { (0..5).rev().collect() } else { (0..5).collect() };
        for step in order {
            state = Array::from_fn(&[3], |i| state.at(i) * 0.5 + xs.at(&[step, i[0]]));
            for j in 0..3 {
                stacked.set(&[step, j], state.at(&[j]));
            }
            totals.set(&[step], state.data.iter().sum());
        }
        checks.expect(&format!("scan carry (reverse {reverse})"), &carry[0], state, EXACT);
        checks.expect(&format!("scan ys (reverse {reverse})"), &ys[0], stacked, EXACT);
        checks.expect(&format!("scan stacked scalars (reverse {reverse})"), &ys[1], totals, EXACT);
    }
    // No xs: the length comes from the options.
    let (counted, powers) =
        scan(&[b.scalar(1.0f64)], &[], ScanOptions { length: Some(4), reverse: false }, |c, _| {
            (vec![&c[0] * 3.0], vec![c[0].clone()])
        });
    checks.expect("scan without xs", &counted[0], Array::scalar(81.0), 0.0);
    checks.expect("scan without xs: ys", &powers[0], Array::new(&[4], vec![1.0, 3.0, 9.0, 27.0]), 0.0);
    let remat = checkpoint(std::slice::from_ref(&xv), |v| vec![(&v[0].sin() * &scale_value).exp()]);
    checks.expect("checkpoint", &remat[0], x.map(|v| (v.sin() * scale.data[0]).exp()), TRANSCENDENTAL);
    checks.run();
}

#[test]
fn cond_takes_each_branch() {
    let mut rng = rng();
    let b = Builder::new("cond");
    let predicate = b.param("p", DType::Pred, &[]);
    let x = b.param("x", DType::F64, &[4]);
    let y = b.param("y", DType::F64, &[]);
    let captured = b.param("c", DType::F64, &[4]);
    let results = cond(
        &predicate,
        &[x.clone(), y.clone()],
        |v| vec![v[0].exp() * &v[1], v[1].clone()],
        |v| vec![&v[0].sin() + &captured, &v[1] * 2.0],
    );
    let program = compile(&b.build(&results).unwrap());
    let xs = Array::random(&mut rng, &[4], -1.0, 1.0);
    let ys = Array::scalar(rng.gen_range(-2.0..2.0));
    let cs = Array::random(&mut rng, &[4], -1.0, 1.0);
    for taken in [true, false] {
        let out = execute(&program, &[HostTensor::scalar(taken), xs.tensor(), ys.tensor(), cs.tensor()]);
        let (first, second) = if taken {
            (xs.map(|v| v.exp() * ys.data[0]), ys.clone())
        } else {
            (xs.zip(&cs, |v, c| v.sin() + c), ys.map(|v| v * 2.0))
        };
        assert_close(&out[0].to_f64_vec(), &first.data, TRANSCENDENTAL, &format!("cond {taken}: first"));
        assert_close(&out[1].to_f64_vec(), &second.data, 0.0, &format!("cond {taken}: second"));
    }
}

#[test]
fn random_bits_and_samplers() {
    let b = Builder::new("rng");
    let key = b.param("key", DType::U64, &[2]);
    let (state, bits) = key.rng_bit_generator(&TensorType::new(DType::U32, &[4, 250]), RngAlgorithm::Default);
    let (_, wide) = key.rng_bit_generator(&TensorType::new(DType::U64, &[3]), RngAlgorithm::ThreeFry);
    let count = 100_000;
    let (state, uniform) = state.random_uniform(&TensorType::new(DType::F64, &[count]));
    let (_, normal) = state.random_normal(&TensorType::new(DType::F64, &[count]));
    let program = compile(&b.build(&[state, bits, wide, uniform, normal]).unwrap());
    let mut rng = rng();
    let key_a = tensor(&[2], &[rng.gen::<u64>(), rng.gen::<u64>()]);
    let key_b = tensor(&[2], &[rng.gen::<u64>(), rng.gen::<u64>()]);
    let first = execute(&program, std::slice::from_ref(&key_a));
    let again = execute(&program, std::slice::from_ref(&key_a));
    let other = execute(&program, &[key_b]);
    assert_eq!((first[1].dtype(), first[1].dims()), (DType::U32, &[4, 250][..]));
    assert_eq!((first[2].dtype(), first[2].dims()), (DType::U64, &[3][..]));
    assert_eq!(first[0].dtype(), DType::U64);
    assert_ne!(first[0], key_a, "the state advances");
    assert_eq!(first, again, "the same key gives the same bits");
    assert_ne!(first[1], other[1], "another key gives other bits");
    assert_ne!(first[2], other[2], "another key gives other bits");
    let n = count as f64;
    let samples = first[3].to_f64_vec();
    assert!(samples.iter().all(|&u| (0.0..1.0).contains(&u)), "uniform samples in [0, 1)");
    let mean = samples.iter().sum::<f64>() / n;
    // Uniform: standard deviation 1/sqrt(12); the mean of n samples within 5 sigma.
    assert!((mean - 0.5).abs() < 5.0 / (12.0 * n).sqrt(), "uniform mean {mean}");
    let samples = first[4].to_f64_vec();
    let mean = samples.iter().sum::<f64>() / n;
    let std = (samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 5.0 / n.sqrt(), "normal mean {mean}");
    // The sample standard deviation of a normal has standard error 1/sqrt(2n).
    assert!((std - 1.0).abs() < 5.0 / (2.0 * n).sqrt(), "normal std {std}");
    eprintln!("uniform mean {}, normal mean {mean} std {std}", first[3].to_f64_vec().iter().sum::<f64>() / n);
}

#[test]
fn barrier_and_stop_gradient_keep_values() {
    let mut rng = rng();
    let mut checks = Checks::new("barrier");
    let x = Array::random(&mut rng, &[2, 3], -1.0, 1.0);
    let ints = Array::new(&[4], integers(&mut rng, 4, -9, 9));
    let (xv, iv) = (checks.array(&x), checks.input(ints.tensor_of(DType::I32)));
    let kept = optimization_barrier(&[xv.clone(), iv]);
    checks.expect("optimization_barrier f64", &kept[0], x.clone(), 0.0);
    checks.expect("optimization_barrier i32", &kept[1], ints, 0.0);
    checks.expect("stop_gradient", &(xv.stop_gradient() * 2.0), x.map(|v| v * 2.0), 0.0);
    checks.run();
}
