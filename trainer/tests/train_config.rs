//! Job configs across files, and what a config change costs: with runtime hyperparameters (the
//! default) a new learning rate or schedule reuses the compiled step from the compile cache;
//! with `trainer.hyperparameters: graph` it is a new program.

use std::path::PathBuf;

use sirocco::program::Program;
use trainer::train::Session;

const JOB: &str = "\
data: {train_urls: [corpus.txt]}
model: {seq_len: 16, hidden_dim: 32, intermediate_dim: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2}
trainer:
  num_train_steps: 100
  train_batch_size: 4
  runtime: {cpu_device_count: 1}
optimizer: {type: adamax, lr: 1e-3, warmup: 0.1}
";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Compiles the session's train step; returns (cache hits, misses) afterwards.
fn compile_step(config: &[PathBuf], overrides: &[&str], cache: &std::path::Path) -> (u64, u64) {
    let mut overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    overrides.push(format!("trainer.runtime.compile_cache={}", cache.display()));
    let session = Session::open(config, &overrides).unwrap();
    Program::compile(&session.client, &session.train_step().unwrap().function).unwrap();
    let stats = session.client.compile_cache().unwrap().stats();
    (stats.hits, stats.misses)
}

#[test]
fn later_config_files_override_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let job = write(&dir, "job.yaml", JOB);
    let model = write(&dir, "model.yaml", "model: {num_layers: 3, hidden_dim: 64}\n");
    let session = Session::open(&[job.clone(), model.clone()], &[]).unwrap();
    assert_eq!(session.job.model.num_layers, 3);
    assert_eq!(session.job.model.hidden_dim, 64);
    assert_eq!(session.job.model.seq_len, 16, "kept from the first file");
    assert_eq!(session.job.source, format!("{} + {}", job.display(), model.display()));
    // A relative checkpoint path lives in the run directory.
    assert_eq!(session.job.checkpointer().base_path, PathBuf::from("runs/default/checkpoints"));
    assert_eq!(session.job.trainer.checkpointer.base_path, PathBuf::from("checkpoints"), "kept as written");
    // An empty later file changes nothing.
    let empty = write(&dir, "empty.yaml", "# nothing here\n");
    let session = Session::open(&[job.clone(), model.clone(), empty], &[]).unwrap();
    assert_eq!(session.job.model.num_layers, 3);
    let bad = write(&dir, "bad.yaml", "model: {num_layer: 3}\n");
    let error = Session::open(&[job, bad], &[]).err().unwrap().to_string();
    assert!(error.contains("model.num_layer: unknown field"), "{error}");
}

#[test]
fn a_new_learning_rate_reuses_the_compiled_step() {
    let dir = tempfile::tempdir().unwrap();
    let job = write(&dir, "job.yaml", JOB);
    let cache = dir.path().join("cache");
    let config = [job];
    assert_eq!(compile_step(&config, &[], &cache), (0, 1));
    assert_eq!(compile_step(&config, &["optimizer.lr=5e-3", "optimizer.warmup=0.2"], &cache), (1, 0));
    let graph = ["trainer.hyperparameters=graph", "optimizer.lr=5e-3"];
    assert_eq!(compile_step(&config, &graph, &cache), (0, 1));
    let graph_other = ["trainer.hyperparameters=graph", "optimizer.lr=7e-3"];
    assert_eq!(compile_step(&config, &graph_other, &cache), (0, 1), "a schedule in the graph is compiled in");
}

#[test]
fn an_optimizer_that_reads_the_loss_builds_and_compiles() {
    // Session::open builds the update once on its own (to choose XLA:CPU's multi-output fusion
    // before the plugin opens); `skip_bad_steps` reads the step's loss there too.
    let dir = tempfile::tempdir().unwrap();
    let config =
        write(&dir, "job.yaml", &JOB.replace("{type: adamax,", "{type: adam, skip_bad_steps: true,"));
    let cache = dir.path().join("cache");
    let (hits, misses) = compile_step(&[config], &[], &cache);
    assert_eq!((hits, misses), (0, 1));
}
