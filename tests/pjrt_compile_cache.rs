//! The on-disk compile cache, on the CPU plugin.

mod common;

use std::time::{Duration, Instant};

use common::{add_program, cpu_client};
use sirocco::pjrt::{CacheStats, Client, CompileCache, CompileOptions, Executable, ExecuteOptions};

/// A program large enough that compiling it clearly costs more than loading it.
fn program() -> String {
    let mut body = String::new();
    let mut previous = "%x".to_owned();
    for index in 0..40 {
        body.push_str(&format!(
            "    %t{index} = stablehlo.tanh {previous} : tensor<16x16xf32>\n    %m{index} = stablehlo.dot_general %t{index}, %x, contracting_dims = [1] x [0] : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>\n"
        ));
        previous = format!("%m{index}");
    }
    format!(
        "module @cached {{
  func.func public @main(%x: tensor<16x16xf32>) -> tensor<16x16xf32> {{
{body}    return {previous} : tensor<16x16xf32>
  }}
}}"
    )
}

fn compile_timed(client: &Client, program: &str) -> (Executable, Duration) {
    let start = Instant::now();
    let executable =
        client.compile(program, &CompileOptions::default()).unwrap_or_else(|error| panic!("{error}"));
    (executable, start.elapsed())
}

fn stats(client: &Client) -> CacheStats {
    client.compile_cache().expect("the client has a cache").stats()
}

/// Runs the `add_program` executable on ones and returns the result.
fn add_ones(client: &Client, executable: &Executable) -> Vec<f32> {
    let device = &executable.addressable_devices()[0];
    let ones = client.buffer_from_slice(&[2, 3], &[1.0f32; 6], device).unwrap();
    let outputs = executable.execute(&[vec![&ones, &ones]], &ExecuteOptions::default()).unwrap();
    outputs[0][0].to_host().unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn a_second_compile_through_a_fresh_cache_is_a_faster_hit() {
    let dir = tempfile::tempdir().unwrap();
    let client = cpu_client();
    let program = program();

    let first = client.clone().with_compile_cache(CompileCache::new(dir.path()).unwrap());
    let (_, miss) = compile_timed(&first, &program);
    assert_eq!(stats(&first), CacheStats { hits: 0, misses: 1 });
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "one entry written");

    let second = client.clone().with_compile_cache(CompileCache::new(dir.path()).unwrap());
    let (executable, hit) = compile_timed(&second, &program);
    assert_eq!(stats(&second), CacheStats { hits: 1, misses: 0 });
    assert!(hit < miss, "loading from the cache took {hit:?}, compiling {miss:?}");
    eprintln!("compile cache: miss {miss:?}, hit {hit:?}");

    let device = &executable.addressable_devices()[0];
    let input = client.buffer_from_slice(&[16, 16], &[0.0f32; 256], device).unwrap();
    let outputs = executable.execute(&[vec![&input]], &ExecuteOptions::default()).unwrap();
    assert_eq!(outputs[0][0].dims(), &[16, 16]);

    // Other options are another entry.
    let options = CompileOptions { num_replicas: 2, ..CompileOptions::default() };
    second.compile(&program, &options).unwrap();
    assert_eq!(stats(&second), CacheStats { hits: 1, misses: 1 });

    // The same client without the cache compiles for real and leaves the cache alone.
    let uncached = second.without_compile_cache();
    assert!(uncached.compile_cache().is_none());
    uncached.compile(&program, &CompileOptions::default()).unwrap();
    assert_eq!(stats(&second), CacheStats { hits: 1, misses: 1 });
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "nothing written");
}

#[test]
fn a_corrupt_entry_is_ignored_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let client = cpu_client();
    let program = add_program("corrupted");
    let cached = |client: &Client| client.clone().with_compile_cache(CompileCache::new(dir.path()).unwrap());

    let writer = cached(&client);
    writer.compile(&program, &CompileOptions::default()).unwrap();
    let entry = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    let intact = std::fs::read(&entry).unwrap();

    for damage in ["flipped payload", "truncated"] {
        let mut bytes = intact.clone();
        match damage {
            "flipped payload" => {
                let middle = bytes.len() / 2;
                bytes[middle..middle + 16].iter_mut().for_each(|byte| *byte ^= 0xA5);
            }
            _ => bytes.truncate(bytes.len() / 3),
        }
        std::fs::write(&entry, &bytes).unwrap();

        let reader = cached(&client);
        let executable = reader.compile(&program, &CompileOptions::default()).unwrap();
        assert_eq!(stats(&reader), CacheStats { hits: 0, misses: 1 }, "{damage}");
        assert_eq!(add_ones(&client, &executable), vec![2.0; 6], "{damage}");
        assert_eq!(std::fs::read(&entry).unwrap().len(), intact.len(), "{damage}: entry rewritten");

        let rebuilt = cached(&client);
        rebuilt.compile(&program, &CompileOptions::default()).unwrap();
        assert_eq!(stats(&rebuilt), CacheStats { hits: 1, misses: 0 }, "{damage}: rebuilt entry hits");
    }
}

#[test]
fn the_default_directory_follows_the_environment() {
    // Only checks the shape: tests do not change the process environment.
    let dir = CompileCache::default_dir();
    assert!(
        std::env::var_os("SIROCCO_COMPILE_CACHE").is_some() || dir.ends_with("sirocco/compile"),
        "{}",
        dir.display()
    );
}
