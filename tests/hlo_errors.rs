//! Mistakes while building a graph: each is reported (never a panic) as the first error, with
//! the op, a message naming the operand types, and the line of the offending call.

use sirocco::hlo::{
    grad, scan, while_loop, Builder, DotDimensions, Function, GatherDimensions, HloError, Mesh, ScanOptions,
    Sharding, Value,
};
use sirocco::DType;

/// Asserts that `result` failed in `op`, at `line` of this file, with a message naming each of
/// `mentions` (operand types, mostly).
#[track_caller]
fn assert_error<T>(result: sirocco::hlo::Result<T>, op: &str, mentions: &[&str], line: u32) -> HloError {
    let Err(error) = result else { panic!("expected a `{op}` error") };
    assert_eq!(error.op, op, "{error}");
    for mention in mentions {
        assert!(error.message.contains(mention), "the message should name {mention}: {error}");
    }
    assert_eq!(error.location.file(), file!(), "{error}");
    assert_eq!(error.location.line(), line, "{error}");
    assert!(error.to_string().contains(&format!("hlo_errors.rs:{line}")), "{error}");
    error
}

/// A builder with an `f32[2, 3]` parameter `x`.
fn matrix() -> (Builder, Value) {
    let builder = Builder::new("mistakes");
    let x = builder.param("x", DType::F32, &[2, 3]);
    (builder, x)
}

#[test]
fn mismatched_shapes_in_add() {
    let (builder, x) = matrix();
    let y = builder.param("y", DType::F32, &[3, 2]);
    let (sum, line) = (&x + &y, line!());
    assert_error(builder.build(&[sum]), "add", &["f32[2, 3]", "f32[3, 2]"], line);
}

#[test]
fn mismatched_dtypes() {
    let (builder, x) = matrix();
    let y = builder.param("y", DType::F64, &[2, 3]);
    let (product, line) = (x.mul(&y), line!());
    assert_error(builder.build(&[product]), "mul", &["f32[2, 3]", "f64[2, 3]"], line);
}

#[test]
fn invalid_broadcast() {
    let (builder, x) = matrix();
    let (wide, line) = (x.broadcast_in_dim(&[4, 3], &[0, 1]), line!());
    assert_error(builder.build(&[wide]), "broadcast_in_dim", &["f32[2, 3]", "[4, 3]"], line);
}

#[test]
fn reshape_with_wrong_element_count() {
    let (builder, x) = matrix();
    let (reshaped, line) = (x.reshape(&[4, 2]), line!());
    assert_error(builder.build(&[reshaped]), "reshape", &["f32[2, 3]", "[4, 2]"], line);
}

#[test]
fn bad_transpose_permutation() {
    let (builder, x) = matrix();
    let (transposed, line) = (x.transpose(&[0, 0]), line!());
    assert_error(builder.build(&[transposed]), "transpose", &["f32[2, 3]", "[0, 0]"], line);
}

#[test]
fn out_of_range_slice() {
    let (builder, x) = matrix();
    let (slice, line) = (x.slice(&[0, 1], &[3, 3], &[1, 1]), line!());
    assert_error(builder.build(&[slice]), "slice", &["f32[2, 3]", "[3, 3]"], line);
}

#[test]
fn dot_general_with_mismatched_contracting_sizes() {
    let (builder, x) = matrix();
    let y = builder.param("y", DType::F32, &[4, 5]);
    let (product, line) = (x.matmul(&y), line!());
    assert_error(builder.build(&[product]), "dot_general", &["f32[2, 3]", "f32[4, 5]"], line);
    let dimensions =
        DotDimensions { lhs_contracting: vec![0], rhs_contracting: vec![1], ..Default::default() };
    let (builder, x) = matrix();
    let y = builder.param("y", DType::F32, &[4, 5]);
    let (product, line) = (x.dot_general(&y, &dimensions), line!());
    assert_error(builder.build(&[product]), "dot_general", &["f32[2, 3]", "f32[4, 5]"], line);
}

#[test]
fn reduce_over_a_missing_dimension() {
    let (builder, x) = matrix();
    let (sum, line) = (x.reduce_sum(&[2]), line!());
    assert_error(builder.build(&[sum]), "reduce_sum", &["f32[2, 3]", "[2]"], line);
}

#[test]
fn select_with_a_non_pred_predicate() {
    let (builder, x) = matrix();
    let (picked, line) = (x.select(&x, &x), line!());
    assert_error(builder.build(&[picked]), "select", &["f32[2, 3]", "pred"], line);
}

#[test]
fn scan_whose_body_changes_the_carry_type() {
    let builder = Builder::new("scan");
    let carry = builder.param("carry", DType::F32, &[3]);
    let xs = builder.param("xs", DType::F32, &[4, 3]);
    let line = line!() + 1;
    let (last, _) = scan(&[carry], &[xs], ScanOptions::default(), |c, x| {
        (vec![(&c[0] + &x[0]).convert(DType::F64)], Vec::new())
    });
    assert_error(builder.build(&last), "scan", &["f32[3]", "f64[3]"], line);
}

#[test]
fn while_loop_whose_condition_is_not_a_pred_scalar() {
    let builder = Builder::new("while");
    let counter = builder.param("counter", DType::F32, &[]);
    let line = line!() + 1;
    let result = while_loop(std::slice::from_ref(&counter), |c| c[0].clone(), |c| vec![&c[0] + 1.0]);
    assert_error(builder.build(&result), "while_loop", &["f32[]", "pred"], line);
}

#[test]
fn while_loop_is_not_differentiable() {
    let builder = Builder::new("while");
    let x = builder.param("x", DType::F32, &[]);
    let below_nine = |c: &[Value]| c[0].lt(&c[0].scalar_like(9.0));
    let line = line!() + 1;
    let result = while_loop(std::slice::from_ref(&x), below_nine, |c| vec![&c[0] * 2.0]);
    let error = assert_error(grad(&result[0], &[x]), "while_loop", &[], line);
    assert!(error.message.contains("no gradient rule"), "{error}");
}

#[test]
fn a_value_used_in_another_builder() {
    let first = Builder::new("first");
    let x = first.param("x", DType::F32, &[2, 3]);
    let second = Builder::new("second");
    let y = second.param("y", DType::F32, &[2, 3]);
    // Both functions report it, whichever gets the op.
    let (sum, line) = (&y + &x, line!());
    assert_error(
        second.build(std::slice::from_ref(&y)),
        "capture",
        &["f32[2, 3]", "`first`", "`second`"],
        line,
    );
    assert_error(first.build(std::slice::from_ref(&x)), "capture", &["f32[2, 3]"], line);
    let _ = sum;
    let third = Builder::new("third");
    let line = line!() + 1;
    let error = third.build(std::slice::from_ref(&x)).err();
    assert_error(error.map_or(Ok(()), Err), "build", &[], line);
}

#[test]
fn a_value_kept_from_a_finished_region() {
    let builder = Builder::new("escape");
    let carry = builder.param("carry", DType::F32, &[3]);
    let xs = builder.param("xs", DType::F32, &[4, 3]);
    let mut kept = None;
    let (last, _) = scan(&[carry], &[xs], ScanOptions::default(), |c, x| {
        let next = &c[0] + &x[0];
        kept = Some(next.clone());
        (vec![next], Vec::new())
    });
    let kept = kept.expect("the body ran");
    let (sum, line) = (&kept + &last[0], line!());
    let error = assert_error(builder.build(&[last[0].clone()]), "add", &["scan_body"], line);
    assert!(error.message.contains("return the value from the region"), "{error}");
    let _ = sum;
}

#[test]
fn gather_with_bad_dimensions() {
    let builder = Builder::new("gather");
    let table = builder.param("table", DType::F32, &[5, 4]);
    let ids = builder.param("ids", DType::I32, &[3, 1]);
    let numbers = GatherDimensions {
        offset_dims: vec![1],
        // Dimension 1 has slice size 4: it cannot be collapsed.
        collapsed_slice_dims: vec![1],
        start_index_map: vec![0],
        index_vector_dim: 1,
    };
    let (rows, line) = (table.gather(&ids, &numbers, &[1, 4]), line!());
    assert_error(builder.build(&[rows]), "gather", &["f32[5, 4]", "i32[3, 1]"], line);
}

/// A function of an `f32[6, 2]` parameter on a 4-device mesh.
fn on_mesh() -> Function {
    let builder = Builder::new("sharded");
    builder.set_mesh(Mesh::new(&[("data", 4)]).unwrap());
    let x = builder.param("x", DType::F32, &[6, 2]);
    builder.build(&[x.sum()]).unwrap()
}

#[test]
fn sharding_not_divisible_by_the_mesh_axis() {
    let mut function = on_mesh();
    let rows = Sharding::axes(&[Some("data"), None]);
    let (result, line) = (function.shard_parameter(0, rows.clone()), line!());
    assert_error(result, "shard_parameter", &["f32[6, 2]", "4 shards"], line);
    let (result, line) = (function.shard_parameter(3, rows.clone()), line!());
    assert_error(result, "shard_parameter", &["parameter 3", "1 parameters"], line);
    let (result, line) = (function.shard_output(2, Sharding::Replicated), line!());
    assert_error(result, "shard_output", &["output 2"], line);
    let builder = Builder::new("constraint");
    builder.set_mesh(Mesh::new(&[("data", 4)]).unwrap());
    let x = builder.param("x", DType::F32, &[6, 2]);
    let (constrained, line) = (x.with_sharding(&rows), line!());
    assert_error(builder.build(&[constrained]), "sharding_constraint", &["f32[6, 2]"], line);
}

#[test]
fn donation_of_mismatched_types() {
    let mut function = on_mesh();
    let (result, line) = (function.donate(0, 0), line!());
    assert_error(result, "donate", &["f32[6, 2]", "f32[]"], line);
    let (result, line) = (function.donate(1, 0), line!());
    assert_error(result, "donate", &["parameter 1"], line);
}

#[test]
fn grad_of_a_non_scalar() {
    let (_, x) = matrix();
    let (result, line) = (grad(&x.exp(), std::slice::from_ref(&x)), line!());
    assert_error(result, "grad", &["f32[2, 3]"], line);
    let (builder, x) = matrix();
    let ids = builder.param("ids", DType::I32, &[]);
    let (result, line) = (grad(&ids, &[x]), line!());
    assert_error(result, "grad", &["i32[]"], line);
}

#[test]
fn ops_after_an_error_do_not_panic_and_the_first_error_wins() {
    let (builder, x) = matrix();
    let y = builder.param("y", DType::F32, &[3, 2]);
    let ids = builder.param("ids", DType::I32, &[2]);
    let (bad, line) = (&x + &y, line!());
    // Every family of op on top of the mistake, several of them mistaken too.
    let z = bad.matmul(&y).transpose(&[1, 0, 2]).reshape(&[7]).tanh();
    let z = &z.reduce_max(&[3]) * &x.slice(&[0, 0], &[9, 9], &[1, 1]);
    let z = z.broadcast_in_dim(&[5, 5], &[1]).dynamic_slice(std::slice::from_ref(&ids), &[2]);
    let rows = x.take(&ids).gather(&ids, &GatherDimensions::default(), &[1]);
    let (carry, ys) =
        scan(std::slice::from_ref(&z), std::slice::from_ref(&rows), ScanOptions::default(), |c, r| {
            (vec![&c[0] + &r[0]], vec![c[0].exp()])
        });
    let looped = while_loop(&[carry[0].clone()], |c| c[0].clone(), |c| vec![c[0].sum()]);
    let chosen =
        sirocco::hlo::cond(&looped[0], &[ys[0].clone()], |v| vec![v[0].clone()], |v| vec![v[0].sin()]);
    let kept = sirocco::hlo::checkpoint(&chosen, |v| vec![Value::concatenate(v, 4)]);
    let summed = Value::reduce(&kept, std::slice::from_ref(&x), &[0], |args| vec![&args[0] + &args[1]]);
    let total = summed[0].sum();
    assert_error(grad(&total, &[x.clone(), y.clone()]), "add", &["f32[2, 3]", "f32[3, 2]"], line);
    assert_error(builder.build(&[total, bad]), "add", &["f32[2, 3]", "f32[3, 2]"], line);
}

#[test]
fn results_larger_than_xla_can_address() {
    // XLA throws on such a shape, which aborts the process: it is refused while building.
    let (builder, x) = matrix();
    let (_huge, line) = (builder.param("huge", DType::F32, &[1 << 32, 1 << 31]), line!());
    let _ = &x + &x;
    assert_error(builder.build(&[x]), "parameter", &["2^63 bytes"], line);
    let (builder, x) = matrix();
    let (_wide, line) = (x.reshape(&[6, 1]).broadcast_to(&[6, 1 << 62]), line!());
    assert_error(builder.build(&[x]), "broadcast_in_dim", &["2^63 bytes"], line);
}
