//! `PJRT_LoadedExecutable`: a compiled program loaded on its devices, and its execution.

use std::fmt;
use std::ptr;
use std::sync::Arc;

use super::api::{args, destroy_on_drop, pjrt_call, string_from_raw, vec_from_raw};
use super::buffer::Buffer;
use super::client::{Client, ClientHandle};
use super::compile_options::CompileOptions;
use super::device::Device;
use super::error::{ErrorCode, PjrtError, Result};
use super::event::Event;
use super::ffi;
use super::named_value::{named_value_from_raw, NamedValue};

/// The program format `PJRT_Client_Compile` gets: StableHLO (or any MLIR dialect the plugin
/// reads) as text.
const PROGRAM_FORMAT: &str = "mlir";

/// Options of one execution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecuteOptions {
    /// Arguments (by index) not to donate even where the program aliases them to an output
    /// (`tf.aliasing_output`): they stay valid after the execution.
    pub non_donatable_input_indices: Vec<i64>,
    /// Non-zero: identifies this launch among the launches of a multi-host program.
    pub launch_id: i32,
}

/// The outputs of [`Executable::execute_async`] and when each device is done.
pub struct AsyncExecution {
    /// One list of outputs per addressable device of the executable.
    pub outputs: Vec<Vec<Buffer>>,
    /// One event per device, ready when that device finished the execution.
    pub device_complete_events: Vec<Event>,
}

/// A compiled program, loaded on its addressable devices.
pub struct Executable {
    // Declared (and so dropped) before `loaded`, which it was obtained from.
    executable: OwnedExecutable,
    loaded: OwnedLoadedExecutable,
    name: String,
    num_replicas: usize,
    num_partitions: usize,
    num_outputs: usize,
    devices: Vec<Device>,
}

/// The `PJRT_Executable` view of a loaded executable (name, counts, serialization).
struct OwnedExecutable {
    client: Arc<ClientHandle>,
    raw: *mut ffi::PJRT_Executable,
}

struct OwnedLoadedExecutable {
    client: Arc<ClientHandle>,
    raw: *mut ffi::PJRT_LoadedExecutable,
}

// SAFETY: PJRT executables (xla::PjRtLoadedExecutable, xla::PjRtExecutable) are thread-safe: they
// may be executed and queried from several threads at once.
unsafe impl Send for OwnedExecutable {}
// SAFETY: as above.
unsafe impl Sync for OwnedExecutable {}
// SAFETY: as above.
unsafe impl Send for OwnedLoadedExecutable {}
// SAFETY: as above.
unsafe impl Sync for OwnedLoadedExecutable {}

destroy_on_drop!(
    OwnedExecutable,
    PJRT_Executable_Destroy(PJRT_Executable_Destroy_Args { executable }),
    api = self.client.api()
);

destroy_on_drop!(
    OwnedLoadedExecutable,
    PJRT_LoadedExecutable_Destroy(PJRT_LoadedExecutable_Destroy_Args { executable }),
    api = self.client.api()
);

impl Client {
    /// Compiles a StableHLO program (MLIR text) for this client's devices.
    ///
    /// The options are validated first (see [`CompileOptions::resolve`]). With a compile cache
    /// (see [`Client::with_compile_cache`]) a program compiled before is loaded from it. A
    /// program the compiler rejects is a [`PjrtError::Call`] carrying the compiler's diagnostic.
    pub fn compile(&self, program: &str, options: &CompileOptions) -> Result<Executable> {
        let encoded_options = options.resolve(self)?.encode();
        match self.compile_cache() {
            Some(cache) => cache.load_or_compile(self, program, &encoded_options),
            None => self.compile_encoded(program, &encoded_options),
        }
    }

    /// Compiles with already validated and encoded options.
    pub(crate) fn compile_encoded(&self, program: &str, encoded_options: &[u8]) -> Result<Executable> {
        let client = self.handle();
        let program = args!(PJRT_Program {
            // The plugin only reads the code; the C struct lacks the `const`.
            code: program.as_ptr().cast_mut().cast(),
            code_size: program.len(),
            format: PROGRAM_FORMAT.as_ptr().cast(),
            format_size: PROGRAM_FORMAT.len(),
        });
        let mut compile = args!(PJRT_Client_Compile_Args {
            client: client.raw(),
            program: &program,
            compile_options: encoded_options.as_ptr().cast(),
            compile_options_size: encoded_options.len(),
        });
        // SAFETY: the client is live; program text, format and options outlive the call; the
        // options were produced by `CompileOptions::encode` from validated options.
        unsafe { pjrt_call!(client.api(), PJRT_Client_Compile, &mut compile) }?;
        Executable::from_loaded(client, compile.executable)
    }

    /// Loads an executable serialized by [`Executable::serialize`] with the same plugin version.
    /// Only bytes known to be intact may be passed: the plugin may abort on a corrupt blob.
    pub(crate) fn deserialize_executable(&self, serialized: &[u8]) -> Result<Executable> {
        let client = self.handle();
        let mut load = args!(PJRT_Executable_DeserializeAndLoad_Args {
            client: client.raw(),
            serialized_executable: serialized.as_ptr().cast(),
            serialized_executable_size: serialized.len(),
        });
        // SAFETY: the client is live and the bytes outlive the call; null override options
        // mean "the options stored in the executable".
        unsafe { pjrt_call!(client.api(), PJRT_Executable_DeserializeAndLoad, &mut load) }?;
        Executable::from_loaded(client, load.loaded_executable)
    }
}

impl Executable {
    /// Takes ownership of a loaded executable of `client` and reads what it reports.
    fn from_loaded(client: &Arc<ClientHandle>, raw: *mut ffi::PJRT_LoadedExecutable) -> Result<Executable> {
        let loaded = OwnedLoadedExecutable { client: Arc::clone(client), raw };
        let api = client.api();
        let mut get = args!(PJRT_LoadedExecutable_GetExecutable_Args { loaded_executable: raw });
        // SAFETY: `raw` is live; the PJRT_Executable returned is ours to destroy.
        unsafe { pjrt_call!(api, PJRT_LoadedExecutable_GetExecutable, &mut get) }?;
        let executable = OwnedExecutable { client: Arc::clone(client), raw: get.executable };

        let mut name = args!(PJRT_Executable_Name_Args { executable: executable.raw });
        let mut replicas = args!(PJRT_Executable_NumReplicas_Args { executable: executable.raw });
        let mut partitions = args!(PJRT_Executable_NumPartitions_Args { executable: executable.raw });
        let mut outputs = args!(PJRT_Executable_NumOutputs_Args { executable: executable.raw });
        let mut devices = args!(PJRT_LoadedExecutable_AddressableDevices_Args { executable: raw });
        // SAFETY: both executables are live; the name and device array they return are owned by
        // them and copied here.
        let (name, raw_devices) = unsafe {
            pjrt_call!(api, PJRT_Executable_Name, &mut name)?;
            pjrt_call!(api, PJRT_Executable_NumReplicas, &mut replicas)?;
            pjrt_call!(api, PJRT_Executable_NumPartitions, &mut partitions)?;
            pjrt_call!(api, PJRT_Executable_NumOutputs, &mut outputs)?;
            pjrt_call!(api, PJRT_LoadedExecutable_AddressableDevices, &mut devices)?;
            (
                string_from_raw(name.executable_name, name.executable_name_size),
                vec_from_raw(devices.addressable_devices, devices.num_addressable_devices),
            )
        };
        let devices = raw_devices
            .into_iter()
            .map(|raw_device| {
                client.device(raw_device).ok_or_else(|| PjrtError::Call {
                    call: "PJRT_LoadedExecutable_AddressableDevices",
                    code: ErrorCode::Internal,
                    message: "the executable reports a device that is not one of its client's".into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Executable {
            executable,
            loaded,
            name,
            num_replicas: replicas.num_replicas,
            num_partitions: partitions.num_partitions,
            num_outputs: outputs.num_outputs,
            devices,
        })
    }

    fn client(&self) -> &Arc<ClientHandle> {
        &self.loaded.client
    }

    /// The program's name (the module name).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    pub fn num_partitions(&self) -> usize {
        self.num_partitions
    }

    /// Outputs per device.
    pub fn num_outputs(&self) -> usize {
        self.num_outputs
    }

    /// The devices the executable runs on, in the order `execute` takes argument lists.
    pub fn addressable_devices(&self) -> Vec<Device> {
        self.devices.clone()
    }

    /// An identifier of the compiled code (equal inputs and compiler give equal fingerprints);
    /// `None` when the plugin does not provide one.
    pub fn fingerprint(&self) -> Option<String> {
        let mut fingerprint = args!(PJRT_Executable_Fingerprint_Args { executable: self.executable.raw });
        // SAFETY: the executable is live; the fingerprint it returns lives as long as it and is
        // copied here.
        match unsafe { pjrt_call!(self.client().api(), PJRT_Executable_Fingerprint, &mut fingerprint) } {
            // SAFETY: as above.
            Ok(()) => Some(unsafe {
                string_from_raw(fingerprint.executable_fingerprint, fingerprint.executable_fingerprint_size)
            })
            .filter(|fingerprint| !fingerprint.is_empty()),
            Err(error) => {
                tracing::debug!("no executable fingerprint: {error}");
                None
            }
        }
    }

    /// XLA's cost analysis of the compiled program (on XLA plugins: `flops`,
    /// `bytes accessed`, `transcendentals`, ... per device), as the plugin reports it.
    pub fn cost_analysis(&self) -> Result<Vec<(String, NamedValue)>> {
        let mut analysis = args!(PJRT_Executable_GetCostAnalysis_Args { executable: self.executable.raw });
        // SAFETY: the executable is live; the properties it returns live as long as it and
        // are copied before this returns.
        unsafe {
            pjrt_call!(self.client().api(), PJRT_Executable_GetCostAnalysis, &mut analysis)?;
            let raw = if analysis.num_properties == 0 || analysis.properties.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts(analysis.properties, analysis.num_properties)
            };
            Ok(raw.iter().filter_map(|value| named_value_from_raw(value)).collect())
        }
    }

    /// One number of [`Executable::cost_analysis`] (e.g. `"flops"`), when reported.
    pub fn cost(&self, name: &str) -> Option<f64> {
        let analysis = self.cost_analysis().ok()?;
        analysis.into_iter().find(|(key, _)| key == name).and_then(|(_, value)| match value {
            NamedValue::Float(value) => Some(f64::from(value)),
            NamedValue::Int64(value) => Some(value as f64),
            _ => None,
        })
    }

    /// The plugin's serialization of the compiled executable (valid for the same plugin
    /// version and platform only).
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let mut serialize = args!(PJRT_Executable_Serialize_Args { executable: self.executable.raw });
        // SAFETY: the executable is live; the bytes returned are backed by
        // `serialized_executable`, copied, then freed once with the plugin's deleter.
        unsafe {
            pjrt_call!(self.client().api(), PJRT_Executable_Serialize, &mut serialize)?;
            let bytes =
                vec_from_raw(serialize.serialized_bytes.cast::<u8>(), serialize.serialized_bytes_size);
            if let Some(deleter) = serialize.serialized_executable_deleter {
                deleter(serialize.serialized_executable);
            }
            Ok(bytes)
        }
    }

    /// The optimized program XLA compiled, as the plugin returns it. On the XLA plugins (CPU,
    /// GPU, TPU) that is format `hlo_with_config`: a serialized `xla.HloModuleProtoWithConfig`
    /// (the optimized HLO module after SPMD partitioning, with its module config).
    pub fn optimized_program(&self) -> Result<Vec<u8>> {
        let api = self.client().api();
        let mut program = args!(PJRT_Program {});
        let mut query = args!(PJRT_Executable_OptimizedProgram_Args {
            executable: self.executable.raw,
            program: &mut program,
        });
        // SAFETY: the executable is live; with a null `code` the call only reports the size.
        unsafe { pjrt_call!(api, PJRT_Executable_OptimizedProgram, &mut query) }?;
        let mut code = vec![0u8; program.code_size];
        program.code = code.as_mut_ptr().cast();
        let mut fill = args!(PJRT_Executable_OptimizedProgram_Args {
            executable: self.executable.raw,
            program: &mut program,
        });
        // SAFETY: `code` holds the `code_size` bytes the first call asked for.
        unsafe { pjrt_call!(api, PJRT_Executable_OptimizedProgram, &mut fill) }?;
        code.truncate(program.code_size);
        Ok(code)
    }

    /// Runs the program: `arguments` holds one argument list per addressable device (in
    /// [`Executable::addressable_devices`] order; for a sharded argument, that device's shard).
    /// Returns one output list per device.
    ///
    /// Does not wait for the device: the outputs become ready later, and an execution error
    /// shows when they are read (or through [`Executable::execute_async`]'s events). Donated
    /// arguments (`tf.aliasing_output`, unless listed in `non_donatable_input_indices`) are
    /// deleted; passing them again is an [`PjrtError::InvalidOptions`] error.
    pub fn execute(&self, arguments: &[Vec<&Buffer>], options: &ExecuteOptions) -> Result<Vec<Vec<Buffer>>> {
        self.launch(arguments, options, false).map(|execution| execution.outputs)
    }

    /// Like [`Executable::execute`], with an event per device that is ready when the device has
    /// finished (and carries the execution's error, if any).
    pub fn execute_async(
        &self,
        arguments: &[Vec<&Buffer>],
        options: &ExecuteOptions,
    ) -> Result<AsyncExecution> {
        self.launch(arguments, options, true)
    }

    fn launch(
        &self,
        arguments: &[Vec<&Buffer>],
        options: &ExecuteOptions,
        with_events: bool,
    ) -> Result<AsyncExecution> {
        self.check_arguments(arguments, options)?;
        let client = self.client();
        let num_devices = self.devices.len();
        let num_args = arguments.first().map_or(0, Vec::len);

        let argument_lists: Vec<Vec<*mut ffi::PJRT_Buffer>> =
            arguments.iter().map(|list| list.iter().map(|buffer| buffer.raw()).collect()).collect();
        let argument_pointers: Vec<*const *mut ffi::PJRT_Buffer> =
            argument_lists.iter().map(|list| list.as_ptr()).collect();
        let mut output_lists = vec![vec![ptr::null_mut::<ffi::PJRT_Buffer>(); self.num_outputs]; num_devices];
        let output_pointers: Vec<*mut *mut ffi::PJRT_Buffer> =
            output_lists.iter_mut().map(|list| list.as_mut_ptr()).collect();
        let mut events = vec![ptr::null_mut::<ffi::PJRT_Event>(); num_devices];

        let mut execute_options = args!(PJRT_ExecuteOptions {
            launch_id: options.launch_id,
            non_donatable_input_indices: options.non_donatable_input_indices.as_ptr(),
            num_non_donatable_input_indices: options.non_donatable_input_indices.len(),
        });
        let mut execute = args!(PJRT_LoadedExecutable_Execute_Args {
            executable: self.loaded.raw,
            options: &mut execute_options,
            argument_lists: argument_pointers.as_ptr(),
            num_devices,
            num_args,
            output_lists: output_pointers.as_ptr(),
            device_complete_events: if with_events { events.as_mut_ptr() } else { ptr::null_mut() },
        });
        // SAFETY: the executable is live; `check_arguments` made sure there are `num_devices`
        // lists of `num_args` live, undeleted buffers of this client on the right devices; the
        // output lists have room for `num_outputs` buffers per device and the event array for
        // one event per device; everything pointed to outlives the call.
        unsafe { pjrt_call!(client.api(), PJRT_LoadedExecutable_Execute, &mut execute) }?;

        // Take ownership of every returned handle before reporting any error, so none leaks.
        let device_complete_events: Vec<Event> = events
            .into_iter()
            .filter(|event| !event.is_null())
            .map(|event| Event::from_raw(Arc::clone(client), event, "PJRT_LoadedExecutable_Execute"))
            .collect();
        let outputs: Vec<Vec<Result<Buffer>>> = output_lists
            .into_iter()
            .map(|list| list.into_iter().map(|raw| self.output_buffer(raw)).collect())
            .collect();
        let outputs = outputs.into_iter().map(|list| list.into_iter().collect()).collect::<Result<_>>()?;
        Ok(AsyncExecution { outputs, device_complete_events })
    }

    fn output_buffer(&self, raw: *mut ffi::PJRT_Buffer) -> Result<Buffer> {
        if raw.is_null() {
            return Err(PjrtError::Call {
                call: "PJRT_LoadedExecutable_Execute",
                code: ErrorCode::Internal,
                message: format!(
                    "the plugin returned fewer than the {} outputs it reports",
                    self.num_outputs
                ),
            });
        }
        Buffer::from_raw(self.client(), raw, "PJRT_LoadedExecutable_Execute")
    }

    /// Everything the plugin would otherwise CHECK (or get wrong): list count and lengths,
    /// client, device and liveness of every argument, donation indices.
    fn check_arguments(&self, arguments: &[Vec<&Buffer>], options: &ExecuteOptions) -> Result<()> {
        let invalid =
            |message: String| Err(PjrtError::InvalidOptions(format!("executing `{}`: {message}", self.name)));
        if arguments.len() != self.devices.len() {
            let ids: Vec<i64> = self.devices.iter().map(Device::id).collect();
            return invalid(format!(
                "the executable runs on {} devices (ids {ids:?}) and takes one argument list per device, got {}",
                self.devices.len(),
                arguments.len()
            ));
        }
        let num_args = arguments.first().map_or(0, Vec::len);
        for (device_index, (list, device)) in arguments.iter().zip(&self.devices).enumerate() {
            if list.len() != num_args {
                return invalid(format!(
                    "argument list {device_index} has {} buffers, list 0 has {num_args}: every device takes the same arguments",
                    list.len()
                ));
            }
            for (index, buffer) in list.iter().enumerate() {
                let place = format!("argument {index} of device list {device_index}");
                if !Arc::ptr_eq(buffer.client(), self.client()) {
                    return invalid(format!("{place} belongs to another client"));
                }
                if buffer.device() != device {
                    return invalid(format!(
                        "{place} is on {:?}, the list is for {device:?}",
                        buffer.device()
                    ));
                }
                if buffer.is_deleted()? {
                    return invalid(format!(
                        "{place} ({buffer:?}) is deleted, e.g. donated to an earlier execution"
                    ));
                }
            }
        }
        if let Some(index) = options
            .non_donatable_input_indices
            .iter()
            .find(|&&index| usize::try_from(index).map_or(true, |index| index >= num_args))
        {
            return invalid(format!(
                "non_donatable_input_indices has {index}, but there are {num_args} arguments"
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Executable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Executable({}, {} replicas x {} partitions, {} outputs)",
            self.name, self.num_replicas, self.num_partitions, self.num_outputs
        )
    }
}
