//! The compiled train step: loss falls on a tiny model, microbatching matches the full batch,
//! and a 4-device data-parallel (FSDP) run matches the single-device run.

use sirocco::pjrt::{Client, ClientOptions, Plugin};
use sirocco::program::{Program, ShardedArray};
use sirocco::HostTensor;
use trainer::config::{ModelConfig, ModelType, Precision};
use trainer::model;
use trainer::step::{init_function, state_init_function, train_step_function, RunMesh, StepShape};

fn tiny(model_type: ModelType) -> ModelConfig {
    ModelConfig {
        model_type,
        seq_len: 16,
        hidden_dim: 32,
        intermediate_dim: 64,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: if model_type == ModelType::Llama { 2 } else { 4 },
        ..ModelConfig::default()
    }
}

fn client(devices: usize) -> Client {
    let plugin = Plugin::load("cpu").unwrap();
    Client::new(&plugin, &ClientOptions { cpu_device_count: Some(devices), ..Default::default() }).unwrap()
}

/// Runs `steps` train steps on a fixed stream of batches; returns the losses.
fn losses(
    config: &ModelConfig,
    devices: usize,
    data: i64,
    per_device_parallelism: i64,
    steps: usize,
) -> Vec<f32> {
    let vocab = 50;
    let batch = 8;
    let precision = Precision::parse("p=f32,c=f32").unwrap();
    let model = model::build(config, vocab);
    let mesh = RunMesh::resolve(data, 1, devices).unwrap();
    let optimizer =
        xla_optim::OptimizerConfig::from_yaml_str("type: adamax\nlr: 1e-2\nwarmup: 0.0\n", "optimizer")
            .unwrap()
            .build(steps as u64, "optimizer")
            .unwrap();
    let client = client(devices);
    let init = Program::compile(&client, &init_function(model.as_ref(), precision, &mesh).unwrap()).unwrap();
    let (state_fn, _) = state_init_function(model.as_ref(), &optimizer, precision, &mesh).unwrap();
    let state_init = Program::compile(&client, &state_fn).unwrap();
    let shape = StepShape::new(batch, config.seq_len, per_device_parallelism, &mesh, 0.0).unwrap();
    let step = train_step_function(model.as_ref(), &optimizer, precision, &mesh, &shape).unwrap();
    let program = Program::compile(&client, &step.function).unwrap();
    let key = init.put(0, &HostTensor::from_slice(&[2], &[7u64, 0]).unwrap()).unwrap();
    let mut params = init.execute(&[&key]).unwrap();
    let param_refs: Vec<&ShardedArray> = params.iter().collect();
    let mut state = state_init.execute(&param_refs).unwrap();
    let mut out = Vec::new();
    for s in 0..steps {
        let tokens: Vec<i32> =
            (0..batch * (config.seq_len + 1)).map(|i| ((i * 7 + s as i64 * 3) % vocab) as i32).collect();
        let tokens = program
            .put(
                params.len() + state.len(),
                &HostTensor::from_slice(&[batch, config.seq_len + 1], &tokens).unwrap(),
            )
            .unwrap();
        let mut arguments: Vec<&ShardedArray> = params.iter().chain(&state).collect();
        arguments.push(&tokens);
        let mut results = program.execute(&arguments).unwrap();
        let metrics = results.split_off(params.len() + state.len());
        state = results.split_off(params.len());
        params = results;
        out.push(metrics[0].to_host().unwrap().to_vec::<f32>().unwrap()[0]);
    }
    out
}

fn assert_close(a: &[f32], b: &[f32], tolerance: f32) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tolerance * y.abs().max(1.0), "{a:?} vs {b:?}");
    }
}

#[test]
fn llama_loss_falls() {
    let losses = losses(&tiny(ModelType::Llama), 1, 1, -1, 12);
    eprintln!("{losses:?}");
    assert!(losses[0] > 3.5 && losses[0] < 4.2, "initial loss ~ ln(50): {losses:?}");
    assert!(losses[11] < losses[0] - 0.5, "{losses:?}");
}

#[test]
fn gpt2_loss_falls() {
    let losses = losses(&tiny(ModelType::Gpt2), 1, 1, -1, 12);
    assert!(losses[11] < losses[0] - 0.5, "{losses:?}");
}

#[test]
fn microbatches_match_the_full_batch() {
    let full = losses(&tiny(ModelType::Llama), 1, 1, -1, 4);
    let micro = losses(&tiny(ModelType::Llama), 1, 1, 2, 4);
    assert_close(&micro, &full, 1e-5);
}

#[test]
fn four_devices_match_one() {
    let one = losses(&tiny(ModelType::Llama), 1, 1, -1, 10);
    let four = losses(&tiny(ModelType::Llama), 4, 4, -1, 10);
    eprintln!("{one:?}\n{four:?}");
    assert_close(&four, &one, 1e-5);
}
