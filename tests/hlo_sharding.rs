//! Sharded execution on the CPU plugin's 4 devices: one MLP step on 1 device, with the batch
//! over 4 devices and on a 2x2 mesh (GSPMD and Shardy) gives the same numbers; donation;
//! deterministic emission and sharing of identical nodes.

mod support;

use sirocco::hlo::{cond, grad, scan, Builder, Function, Mesh, Partitioner, ScanOptions, Sharding};
use sirocco::program::Program;
use sirocco::{DType, HostTensor};
use support::*;

const BATCH: i64 = 8;
const FEATURES: i64 = 4;
const HIDDEN: i64 = 6;
const OUTPUTS: i64 = 2;

/// Where the MLP's inputs, intermediate and outputs live.
#[derive(Clone, Default)]
struct Layout {
    mesh: Option<Mesh>,
    batch: Option<Sharding>,
    up: Option<Sharding>,
    down: Option<Sharding>,
    hidden: Option<Sharding>,
    /// Shardings of the outputs (loss, d up, d down, hidden), by index.
    outputs: Vec<(usize, Sharding)>,
}

fn axes(per_dimension: &[Option<&str>]) -> Option<Sharding> {
    Some(Sharding::axes(per_dimension))
}

/// Loss, gradients and hidden activations of `mean((tanh(x up) down - y)^2)`, laid out as
/// `layout` says.
fn mlp(layout: &Layout) -> Function {
    let builder = Builder::new("mlp");
    if let Some(mesh) = &layout.mesh {
        builder.set_mesh(mesh.clone());
    }
    let x = builder.param("x", DType::F64, &[BATCH, FEATURES]);
    let y = builder.param("y", DType::F64, &[BATCH, OUTPUTS]);
    let up = builder.param("up", DType::F64, &[FEATURES, HIDDEN]);
    let down = builder.param("down", DType::F64, &[HIDDEN, OUTPUTS]);
    let mut hidden = x.matmul(&up).tanh();
    if let Some(sharding) = &layout.hidden {
        hidden = hidden.with_sharding(sharding);
    }
    let loss = (&hidden.matmul(&down) - &y).square().reduce_mean(&[0, 1]);
    let gradients = grad(&loss, &[up, down]).unwrap();
    let mut function = builder.build(&[loss, gradients[0].clone(), gradients[1].clone(), hidden]).unwrap();
    let parameters = [&layout.batch, &layout.batch, &layout.up, &layout.down];
    for (index, sharding) in parameters.into_iter().enumerate() {
        if let Some(sharding) = sharding {
            function.shard_parameter(index, sharding.clone()).unwrap();
        }
    }
    for (index, sharding) in &layout.outputs {
        function.shard_output(*index, sharding.clone()).unwrap();
    }
    function
}

fn run_with(function: &Function, partitioner: Partitioner, inputs: &[HostTensor]) -> Vec<Vec<f64>> {
    let program = Program::compile_with(client(), function, partitioner)
        .unwrap_or_else(|error| panic!("{error}\n{}", function.to_stablehlo()));
    let outputs = execute(&program, inputs);
    for (output, ty) in outputs.iter().zip(function.output_types()) {
        assert_eq!(output.dims(), ty.dims.as_slice(), "outputs come back whole");
    }
    outputs.iter().map(HostTensor::to_f64_vec).collect()
}

#[test]
fn mlp_step_gives_the_same_numbers_on_every_mesh() {
    let mut rng = rng();
    let inputs = [
        Array::random(&mut rng, &[BATCH, FEATURES], -1.0, 1.0).tensor(),
        Array::random(&mut rng, &[BATCH, OUTPUTS], -1.0, 1.0).tensor(),
        Array::random(&mut rng, &[FEATURES, HIDDEN], -1.0, 1.0).tensor(),
        Array::random(&mut rng, &[HIDDEN, OUTPUTS], -1.0, 1.0).tensor(),
    ];
    let reference = run_with(&mlp(&Layout::default()), Partitioner::Gspmd, &inputs);

    let rows = axes(&[Some("data"), None]);
    let data =
        Layout { mesh: Some(Mesh::new(&[("data", 4)]).unwrap()), batch: rows.clone(), ..Layout::default() };
    let constrained =
        Layout { hidden: rows.clone(), outputs: vec![(3, rows.clone().unwrap())], ..data.clone() };
    // Weights split over `model`: the up projection by columns, the down projection by rows
    // (`model` alone on dimension 0 needs the transposed tile assignment).
    let model_rows = axes(&[Some("model"), None]);
    let model_columns = axes(&[None, Some("model")]);
    let grid = Layout {
        mesh: Some(Mesh::new(&[("data", 2), ("model", 2)]).unwrap()),
        batch: rows.clone(),
        up: model_columns.clone(),
        down: model_rows.clone(),
        hidden: axes(&[Some("data"), Some("model")]),
        outputs: vec![
            (0, Sharding::Replicated),
            (1, model_columns.unwrap()),
            (2, model_rows.unwrap()),
            (3, Sharding::Replicated),
        ],
    };
    let grid_text = mlp(&grid).to_stablehlo();
    assert!(grid_text.contains("{devices=[2,1,2]<=[2,2]T(1,0) last_tile_dim_replicate}"), "{grid_text}");

    let cases = [
        ("batch over 4 devices", &data, Partitioner::Gspmd),
        ("batch over 4 devices, hidden constrained", &constrained, Partitioner::Gspmd),
        ("2x2 mesh", &grid, Partitioner::Gspmd),
        ("batch over 4 devices, Shardy", &data, Partitioner::Shardy),
        ("batch over 4 devices, hidden constrained, Shardy", &constrained, Partitioner::Shardy),
        ("2x2 mesh, Shardy", &grid, Partitioner::Shardy),
    ];
    let mut worst: f64 = 0.0;
    for (name, layout, partitioner) in cases {
        let outputs = run_with(&mlp(layout), partitioner, &inputs);
        for (index, (actual, expected)) in outputs.iter().zip(&reference).enumerate() {
            worst = worst.max(assert_close(actual, expected, EXACT, &format!("{name}: output {index}")));
        }
    }
    eprintln!("sharded against one device: max error {worst:e}");
}

#[test]
fn donated_parameters_are_consumed() {
    let builder = Builder::new("update");
    builder.set_mesh(Mesh::new(&[("data", 4)]).unwrap());
    let state = builder.param("state", DType::F64, &[8, 2]);
    let delta = builder.param("delta", DType::F64, &[8, 2]);
    let mut function = builder.build(&[&state + &delta, delta.sum()]).unwrap();
    let rows = Sharding::axes(&[Some("data"), None]);
    function.shard_parameter(0, rows.clone()).unwrap();
    function.shard_output(0, rows).unwrap();
    function.donate(0, 0).unwrap();
    assert!(function.to_stablehlo().contains("tf.aliasing_output = 0 : i32"));
    let program = Program::compile(client(), &function).unwrap();
    let mut rng = rng();
    let (start, step) =
        (Array::random(&mut rng, &[8, 2], -1.0, 1.0), Array::random(&mut rng, &[8, 2], -1.0, 1.0));
    let state = program.put(0, &start.tensor()).unwrap();
    let delta = program.put(1, &step.tensor()).unwrap();
    let outputs = program.execute(&[&state, &delta]).unwrap();
    assert!(state.is_deleted(), "the donated state is consumed");
    assert!(!delta.is_deleted(), "a parameter that is not donated stays");
    let next = outputs[0].to_host().unwrap().to_f64_vec();
    assert_close(&next, &start.zip(&step, |a, b| a + b).data, EXACT, "updated state");
    // The result feeds the next step, and is consumed in turn.
    let again = program.execute(&[&outputs[0], &delta]).unwrap();
    assert!(outputs[0].is_deleted());
    let expected = start.zip(&step, |a, b| a + 2.0 * b);
    assert_close(&again[0].to_host().unwrap().to_f64_vec(), &expected.data, EXACT, "second step");
}

/// A function with regions, shardings, constants and a gradient, for emission checks.
fn busy_function() -> Function {
    let builder = Builder::new("busy");
    builder.set_mesh(Mesh::new(&[("data", 2), ("model", 2)]).unwrap());
    let x = builder.param("x", DType::F32, &[4, 4]);
    let flag = builder.param("flag", DType::Pred, &[]);
    let (carry, ys) = scan(&[x.sum()], std::slice::from_ref(&x), ScanOptions::default(), |c, row| {
        (vec![&c[0] * 0.5 + row[0].sum()], vec![row[0].exp()])
    });
    let chosen = cond(&flag, &[carry[0].clone()], |v| vec![v[0].sin()], |v| vec![&v[0] * 2.0]);
    let loss = &chosen[0] + &ys[0].with_sharding(&Sharding::axes(&[Some("data"), None])).sum();
    let gradient = grad(&loss, std::slice::from_ref(&x)).unwrap();
    let mut function = builder.build(&[loss, gradient[0].clone()]).unwrap();
    function.shard_parameter(0, Sharding::axes(&[Some("data"), Some("model")])).unwrap();
    function
}

#[test]
fn emission_is_deterministic() {
    let (first, second) = (busy_function(), busy_function());
    assert_eq!(first.to_stablehlo(), second.to_stablehlo());
    assert_eq!(first.to_stablehlo(), first.to_stablehlo());
    let shardy = sirocco::hlo::EmitOptions { partitioner: Partitioner::Shardy };
    assert_eq!(first.to_stablehlo_with(shardy), second.to_stablehlo_with(shardy));
    Program::compile(client(), &first).unwrap_or_else(|error| panic!("{error}\n{}", first.to_stablehlo()));
}

#[test]
fn identical_nodes_are_shared() {
    let builder = Builder::new("shared");
    let x = builder.param("x", DType::F64, &[3]);
    let y = builder.param("y", DType::F64, &[3]);
    let first = &x * &y;
    let second = &x * &y;
    let scaled = &(&x * 3.0) + &(&y * builder.scalar(3.0f64));
    let table = HostTensor::from_slice(&[3], &[1.0f64, 2.0, 4.0]).unwrap();
    let offsets = &builder.constant(&table) + &builder.constant(&table);
    let function = builder.build(&[&first + &second, scaled, offsets]).unwrap();
    let text = function.to_stablehlo();
    let count = |needle: &str| text.matches(needle).count();
    assert_eq!(count("stablehlo.multiply"), 3, "x*y once, x*3 and y*3:\n{text}");
    assert_eq!(count(&format!("0x{:016X}", 3.0f64.to_bits())), 1, "the constant 3 once:\n{text}");
    assert_eq!(count("stablehlo.constant"), 2, "3 and the table, once each:\n{text}");
    let mut rng = rng();
    let (a, b) = (Array::random(&mut rng, &[3], -1.0, 1.0), Array::random(&mut rng, &[3], -1.0, 1.0));
    let out = run(&function, &[a.tensor(), b.tensor()]);
    assert_close(&out[0].to_f64_vec(), &a.zip(&b, |a, b| 2.0 * a * b).data, EXACT, "x*y + x*y");
    assert_close(&out[1].to_f64_vec(), &a.zip(&b, |a, b| 3.0 * (a + b)).data, EXACT, "3x + 3y");
    assert_eq!(out[2].to_f64_vec(), [2.0, 4.0, 8.0]);
}
