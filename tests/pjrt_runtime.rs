//! End-to-end tests of the PJRT runtime on the CPU plugin: transfers, execution, sharding,
//! donation, errors that must not abort, and async completion.

mod common;

use std::future::IntoFuture;

use common::{add_program, cpu_client};
use half::{bf16, f16};
use sirocco::pjrt::{
    Buffer, Client, CompileOptions, ErrorCode, Executable, ExecuteOptions, PjrtError, Plugin,
};
use sirocco::{DType, HostTensor};

/// Six distinct values of `dtype` (shape `[2, 3]`), or one for a scalar.
fn sample(dtype: DType, dims: &[i64]) -> HostTensor {
    let count: u32 = if dims.is_empty() { 1 } else { 6 };
    let values = (0..count).map(|index| f64::from(index) * 1.5 - 2.0);
    let tensor = match dtype {
        DType::Pred => {
            HostTensor::from_slice(dims, &(0..count).map(|index| index % 2 == 0).collect::<Vec<_>>())
        }
        DType::U8 => {
            HostTensor::from_slice(dims, &(0..count).map(|index| 250 - index as u8).collect::<Vec<_>>())
        }
        DType::U32 => {
            HostTensor::from_slice(dims, &(0..count).map(|index| u32::MAX - index).collect::<Vec<_>>())
        }
        DType::U64 => HostTensor::from_slice(
            dims,
            &(0..count).map(|index| u64::MAX - u64::from(index)).collect::<Vec<_>>(),
        ),
        DType::I32 => {
            HostTensor::from_slice(dims, &(0..count).map(|index| -7 * index as i32).collect::<Vec<_>>())
        }
        DType::I64 => HostTensor::from_slice(
            dims,
            &(0..count).map(|index| i64::MIN + i64::from(index)).collect::<Vec<_>>(),
        ),
        DType::F16 => HostTensor::from_slice(dims, &values.map(f16::from_f64).collect::<Vec<_>>()),
        DType::BF16 => HostTensor::from_slice(dims, &values.map(bf16::from_f64).collect::<Vec<_>>()),
        DType::F32 => HostTensor::from_slice(dims, &values.map(|value| value as f32).collect::<Vec<_>>()),
        DType::F64 => HostTensor::from_slice(dims, &values.collect::<Vec<_>>()),
    };
    tensor.unwrap()
}

fn run(executable: &Executable, arguments: &[Vec<&Buffer>]) -> Vec<Vec<Buffer>> {
    executable.execute(arguments, &ExecuteOptions::default()).unwrap_or_else(|error| panic!("{error}"))
}

fn to_f32(buffer: &Buffer) -> Vec<f32> {
    buffer.to_host().unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn every_dtype_round_trips_through_devices() {
    let client = cpu_client();
    let devices = client.addressable_devices();
    assert_eq!(devices.len(), 4);
    for dtype in DType::ALL {
        for dims in [&[2i64, 3][..], &[]] {
            let tensor = sample(dtype, dims);
            let buffer = client.buffer_from_host(&tensor, &devices[2]).unwrap();
            assert_eq!((buffer.dtype(), buffer.dims(), buffer.device()), (dtype, dims, &devices[2]));
            assert!(buffer.on_device_size_bytes().unwrap() >= tensor.bytes().len());
            assert_eq!(buffer.to_host().unwrap(), tensor, "{dtype}{dims:?} on device 2");

            let copy = buffer.copy_to_device(&devices[3]).unwrap();
            assert_eq!(copy.device(), &devices[3]);
            assert_eq!(copy.to_host().unwrap(), tensor, "{dtype}{dims:?} copied to device 3");
        }
    }
    let flags = client.buffer_from_slice(&[3], &[true, false, true], &devices[0]).unwrap();
    assert_eq!(flags.to_host().unwrap().to_vec::<bool>().unwrap(), vec![true, false, true]);
}

#[test]
fn client_and_devices_describe_themselves() {
    let client = cpu_client();
    assert_eq!(client.platform_name(), "cpu");
    assert_eq!(client.process_index(), 0);
    assert_eq!(client.plugin().api_version(), (0, 81));
    assert_eq!(client.plugin().stablehlo_current_version().as_deref(), Some("1.13.3"));
    let devices = client.devices();
    assert_eq!(devices.iter().map(|device| device.id()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    for device in &devices {
        assert!(device.is_addressable());
        assert_eq!(device.kind(), "cpu");
        assert!(!device.debug_string().is_empty());
        // The CPU plugin does not implement memory statistics.
        assert_eq!(device.memory_stats().unwrap(), None);
    }
    let bogus = sirocco::pjrt::Client::new(
        client.plugin(),
        &sirocco::pjrt::ClientOptions { cpu_device_count: Some(0), ..Default::default() },
    );
    assert!(matches!(bogus, Err(PjrtError::InvalidOptions(_))));
    // Tens of thousands of virtual devices would take minutes and gigabytes of threads.
    let many = sirocco::pjrt::Client::new(
        client.plugin(),
        &sirocco::pjrt::ClientOptions { cpu_device_count: Some(100_000), ..Default::default() },
    );
    assert!(
        matches!(many, Err(PjrtError::InvalidOptions(ref message)) if message.contains("at most 1024")),
        "{many:?}"
    );
}

#[test]
fn a_program_returns_several_outputs() {
    let client = cpu_client();
    let program = "module @several {
  func.func public @main(%a: tensor<3xf32>, %b: tensor<3xi32>) -> (tensor<3xf32>, tensor<f32>, tensor<3xi32>) {
    %double = stablehlo.add %a, %a : tensor<3xf32>
    %zero = stablehlo.constant dense<0.0> : tensor<f32>
    %sum = stablehlo.reduce(%a init: %zero) applies stablehlo.add across dimensions = [0] : (tensor<3xf32>, tensor<f32>) -> tensor<f32>
    %square = stablehlo.multiply %b, %b : tensor<3xi32>
    return %double, %sum, %square : tensor<3xf32>, tensor<f32>, tensor<3xi32>
  }
}";
    let executable = client.compile(program, &CompileOptions::default()).unwrap();
    assert_eq!((executable.name(), executable.num_outputs()), ("several", 3));
    let device = &executable.addressable_devices()[0];
    let a = client.buffer_from_slice(&[3], &[1.0f32, 2.0, 3.5], device).unwrap();
    let b = client.buffer_from_slice(&[3], &[-2i32, 3, 4], device).unwrap();
    let outputs = run(&executable, &[vec![&a, &b]]);
    assert_eq!(outputs.len(), 1);
    let [double, sum, square] = &outputs[0][..] else { panic!("expected 3 outputs, got {:?}", outputs[0]) };
    assert_eq!(to_f32(double), vec![2.0, 4.0, 7.0]);
    assert_eq!((sum.dims(), to_f32(sum)), (&[][..], vec![6.5]));
    assert_eq!(square.to_host().unwrap().to_vec::<i32>().unwrap(), vec![4, 9, 16]);

    assert!(executable.fingerprint().is_some());
    assert!(!executable.serialize().unwrap().is_empty());
    assert!(!executable.optimized_program().unwrap().is_empty());
}

#[test]
fn a_sharded_sum_is_right_on_every_device() {
    let client = cpu_client();
    let program = r#"module @sharded_sum attributes {mhlo.num_partitions = 4 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%x: tensor<8xf32> {mhlo.sharding = "{devices=[4]<=[4]}"}) -> (tensor<f32> {mhlo.sharding = "{replicated}"}) {
    %zero = stablehlo.constant dense<0.0> : tensor<f32>
    %sum = stablehlo.reduce(%x init: %zero) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
    return %sum : tensor<f32>
  }
}"#;
    let options =
        CompileOptions { num_partitions: 4, use_spmd_partitioning: true, ..CompileOptions::default() };
    let executable = client.compile(program, &options).unwrap();
    assert_eq!((executable.num_replicas(), executable.num_partitions()), (1, 4));
    let devices = executable.addressable_devices();
    assert_eq!(devices, client.addressable_devices());

    // Each device holds its shard of x = [1, 2, ..., 8].
    let shards: Vec<Buffer> = devices
        .iter()
        .enumerate()
        .map(|(index, device)| {
            let first = 2.0 * index as f32 + 1.0;
            client.buffer_from_slice(&[2], &[first, first + 1.0], device).unwrap()
        })
        .collect();
    let arguments: Vec<Vec<&Buffer>> = shards.iter().map(|shard| vec![shard]).collect();
    let outputs = run(&executable, &arguments);
    assert_eq!(outputs.len(), 4);
    for (device, output) in devices.iter().zip(&outputs) {
        assert_eq!(output[0].device(), device);
        assert_eq!(to_f32(&output[0]), vec![36.0], "on {device:?}");
    }
}

#[test]
fn a_donated_input_is_deleted_and_cannot_be_used_again() {
    let client = cpu_client();
    let program = "module @donate {
  func.func public @main(%state: tensor<4xf32> {tf.aliasing_output = 0 : i32}, %step: tensor<4xf32>) -> tensor<4xf32> {
    %next = stablehlo.add %state, %step : tensor<4xf32>
    return %next : tensor<4xf32>
  }
}";
    let executable = client.compile(program, &CompileOptions::default()).unwrap();
    let device = &executable.addressable_devices()[0];
    let state = client.buffer_from_slice(&[4], &[1.0f32; 4], device).unwrap();
    let step = client.buffer_from_slice(&[4], &[2.0f32; 4], device).unwrap();

    let next = run(&executable, &[vec![&state, &step]]);
    assert_eq!(to_f32(&next[0][0]), vec![3.0; 4]);
    assert!(state.is_deleted().unwrap(), "the donated state is deleted");
    assert!(!step.is_deleted().unwrap(), "the other input is kept");

    let again = executable.execute(&[vec![&state, &step]], &ExecuteOptions::default()).unwrap_err();
    assert!(matches!(&again, PjrtError::InvalidOptions(message) if message.contains("deleted")), "{again}");
    assert!(state.to_host().is_err());

    // Opting out of donation keeps the input.
    let kept = client.buffer_from_slice(&[4], &[5.0f32; 4], device).unwrap();
    let options = ExecuteOptions { non_donatable_input_indices: vec![0], ..ExecuteOptions::default() };
    let outputs = executable.execute(&[vec![&kept, &step]], &options).unwrap();
    assert_eq!(to_f32(&outputs[0][0]), vec![7.0; 4]);
    assert_eq!(to_f32(&kept), vec![5.0; 4]);

    // The same donated buffer twice in one call is the plugin's error, not an abort.
    let twice = executable.execute(&[vec![&kept, &kept]], &ExecuteOptions::default()).unwrap_err();
    assert_eq!(twice.code(), Some(ErrorCode::InvalidArgument), "{twice}");
}

#[test]
fn an_invalid_program_returns_the_compiler_diagnostic() {
    let client = cpu_client();
    let program = "module @wrong {
  func.func public @main(%x: tensor<2xf32>) -> tensor<3xf32> {
    return %x : tensor<2xf32>
  }
}";
    let error = client.compile(program, &CompileOptions::default()).unwrap_err();
    match &error {
        PjrtError::Call { call, message, .. } => {
            assert_eq!(*call, "PJRT_Client_Compile");
            assert!(message.contains("doesn't match function result type"), "{message}");
        }
        other => panic!("expected the compiler's error, got {other}"),
    }
    let garbage = client.compile("this is not MLIR", &CompileOptions::default()).unwrap_err();
    assert!(matches!(garbage, PjrtError::Call { call: "PJRT_Client_Compile", .. }), "{garbage}");

    // The process and the client go on.
    let executable = client.compile(&add_program("after_errors"), &CompileOptions::default()).unwrap();
    assert_eq!(executable.num_outputs(), 1);
}

#[test]
fn missing_plugins_say_where_they_were_searched() {
    let error = Plugin::load("no-such-plugin").unwrap_err();
    assert!(matches!(&error, PjrtError::PluginNotFound { .. }), "{error}");
    assert!(error.to_string().contains("SIROCCO_PLUGIN_NO_SUCH_PLUGIN"), "{error}");

    let error = Plugin::load("/nonexistent/dir/pjrt_plugin.so").unwrap_err();
    match &error {
        PjrtError::PluginNotFound { searched, fetch_command, .. } => {
            assert_eq!(searched, &[std::path::PathBuf::from("/nonexistent/dir/pjrt_plugin.so")]);
            assert_eq!(fetch_command, "python3 third_party/fetch.py cpu");
        }
        other => panic!("expected PluginNotFound, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("/nonexistent/dir/pjrt_plugin.so") && message.contains("fetch.py cpu"),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    let not_a_library = dir.path().join("broken.so");
    std::fs::write(&not_a_library, b"not an ELF file").unwrap();
    let error = Plugin::load(not_a_library.to_str().unwrap()).unwrap_err();
    assert!(matches!(&error, PjrtError::PluginLoad { path, .. } if path.ends_with("broken.so")), "{error}");

    let first = Plugin::load("cpu").unwrap();
    let by_path = Plugin::load(first.path().to_str().unwrap()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &by_path), "one plugin per library");
    assert_eq!(by_path.name(), "cpu");
}

#[test]
fn invalid_options_are_rejected_before_xla() {
    let client = cpu_client();
    let program = add_program("options");
    let expect_invalid = |options: CompileOptions, needle: &str| match client.compile(&program, &options) {
        Err(PjrtError::InvalidOptions(message)) => assert!(message.contains(needle), "{message}"),
        Err(other) => panic!("expected InvalidOptions containing {needle:?}, got {other}"),
        Ok(executable) => panic!("expected InvalidOptions containing {needle:?}, compiled {executable:?}"),
    };
    expect_invalid(CompileOptions { num_partitions: 0, ..CompileOptions::default() }, "at least 1");
    expect_invalid(CompileOptions { num_replicas: 0, ..CompileOptions::default() }, "at least 1");
    expect_invalid(
        CompileOptions { num_partitions: 8, use_spmd_partitioning: true, ..CompileOptions::default() },
        "4 addressable devices",
    );
    expect_invalid(
        CompileOptions { num_partitions: 2, ..CompileOptions::default() },
        "use_spmd_partitioning",
    );
    expect_invalid(
        CompileOptions {
            num_replicas: 2,
            device_assignment: Some(vec![vec![0], vec![17]]),
            ..CompileOptions::default()
        },
        "no such device",
    );
    expect_invalid(
        CompileOptions {
            num_replicas: 2,
            device_assignment: Some(vec![vec![1], vec![1]]),
            ..CompileOptions::default()
        },
        "assigned twice",
    );
    expect_invalid(
        CompileOptions {
            num_replicas: 2,
            device_assignment: Some(vec![vec![0, 1]]),
            ..CompileOptions::default()
        },
        "2 replicas x 1 partitions",
    );

    // Arguments that do not fit the executable are refused before the plugin sees them.
    let executable = client.compile(&program, &CompileOptions::default()).unwrap();
    let devices = client.addressable_devices();
    let a = client.buffer_from_slice(&[2, 3], &[1.0f32; 6], &devices[0]).unwrap();
    let on_device_1 = client.buffer_from_slice(&[2, 3], &[1.0f32; 6], &devices[1]).unwrap();
    let execute = |arguments: &[Vec<&Buffer>]| executable.execute(arguments, &ExecuteOptions::default());
    assert!(matches!(execute(&[vec![&a, &a], vec![&a, &a]]), Err(PjrtError::InvalidOptions(_))));
    assert!(matches!(execute(&[vec![&a, &on_device_1]]), Err(PjrtError::InvalidOptions(_))));
    let non_donatable = ExecuteOptions { non_donatable_input_indices: vec![2], ..ExecuteOptions::default() };
    assert!(matches!(executable.execute(&[vec![&a, &a]], &non_donatable), Err(PjrtError::InvalidOptions(_))));
    // A wrong argument count is the plugin's INVALID_ARGUMENT, not an abort.
    let error = execute(&[vec![&a]]).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");
}

#[test]
fn replicas_get_a_default_device_assignment() {
    let client = cpu_client();
    let options = CompileOptions { num_replicas: 2, ..CompileOptions::default() };
    let executable = client.compile(&add_program("replicated"), &options).unwrap();
    let devices = executable.addressable_devices();
    assert_eq!(devices, client.addressable_devices()[..2]);
    let inputs: Vec<Buffer> = devices
        .iter()
        .map(|device| client.buffer_from_slice(&[2, 3], &[device.id() as f32; 6], device).unwrap())
        .collect();
    let outputs = run(&executable, &[vec![&inputs[0], &inputs[0]], vec![&inputs[1], &inputs[1]]]);
    assert_eq!(to_f32(&outputs[0][0]), vec![0.0; 6]);
    assert_eq!(to_f32(&outputs[1][0]), vec![2.0; 6]);
}

#[tokio::test]
async fn transfers_and_executions_can_be_awaited() {
    let client = cpu_client();
    let executable = client.compile(&add_program("awaited"), &CompileOptions::default()).unwrap();
    let device = &executable.addressable_devices()[0];
    let a = client.buffer_from_slice(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], device).unwrap();
    a.ready().unwrap().await.unwrap();
    assert_eq!(a.to_host_async().await.unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

    let execution = executable.execute_async(&[vec![&a, &a]], &ExecuteOptions::default()).unwrap();
    assert_eq!(execution.device_complete_events.len(), 1);
    for event in execution.device_complete_events {
        event.await.unwrap();
    }
    let sum = execution.outputs[0][0].to_host_async().await.unwrap();
    assert_eq!(sum.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);

    // The blocking form of an event.
    execution.outputs[0][0].ready().unwrap().wait().unwrap();
}

#[test]
fn runtime_handles_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
    assert_send_sync::<Buffer>();
    assert_send_sync::<Executable>();
    assert_send_sync::<sirocco::pjrt::Device>();
    fn assert_send<T: Send>(_: &T) {}

    let client = cpu_client();
    let device = client.addressable_devices()[1].clone();
    let buffer = std::thread::spawn(move || client.buffer_from_slice(&[2], &[1u32, 2], &device).unwrap())
        .join()
        .unwrap();
    let transfer = buffer.to_host_async();
    assert_send(&transfer);
    let event = buffer.ready().unwrap();
    assert_send(&event);
    assert_send(&event.into_future());
}

#[test]
fn ready_callbacks_report_when_work_is_done() {
    let client = cpu_client();
    let executable = client.compile(&add_program("callback"), &CompileOptions::default()).unwrap();
    let device = &executable.addressable_devices()[0];
    let a = client.buffer_from_slice(&[2, 3], &[1.0f32; 6], device).unwrap();
    a.ready().unwrap().wait().unwrap();
    // Done already: the callback runs at once, on this thread.
    let (sender, receiver) = std::sync::mpsc::channel();
    let caller = std::thread::current().id();
    a.ready()
        .unwrap()
        .on_ready(move |status| sender.send((status, std::thread::current().id())).unwrap())
        .unwrap();
    let (status, thread) = receiver.try_recv().expect("called before on_ready returned");
    assert!(status.is_ok() && thread == caller);

    // An execution's output: called whenever the plugin finishes it, though the event is
    // dropped at once; and a panicking callback does not take the process down.
    let outputs = run(&executable, &[vec![&a, &a]]);
    let (sender, receiver) = std::sync::mpsc::channel();
    outputs[0][0].ready().unwrap().on_ready(move |status| sender.send(status).unwrap()).unwrap();
    receiver.recv_timeout(std::time::Duration::from_secs(10)).unwrap().unwrap();
    outputs[0][0].ready().unwrap().on_ready(|_| panic!("a callback that panics")).unwrap();
    assert_eq!(to_f32(&outputs[0][0]), vec![2.0; 6]);
}
