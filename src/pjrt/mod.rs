//! Safe runtime over the PJRT C API: load a plugin, create a client, move arrays between host
//! and devices, compile StableHLO and execute it.
//!
//! ```no_run
//! use sirocco::pjrt::{Client, ClientOptions, CompileOptions, ExecuteOptions, Plugin};
//! # fn main() -> sirocco::pjrt::Result<()> {
//! let plugin = Plugin::load("cpu")?;
//! let client = Client::new(&plugin, &ClientOptions::default())?;
//! let device = &client.addressable_devices()[0];
//! let program = "module @m { func.func public @main(%x: tensor<2xf32>) -> tensor<2xf32> {
//!     %y = stablehlo.add %x, %x : tensor<2xf32>
//!     return %y : tensor<2xf32> } }";
//! let executable = client.compile(program, &CompileOptions::default())?;
//! let x = client.buffer_from_slice(&[2], &[1.0f32, 2.0], device)?;
//! let outputs = executable.execute(&[vec![&x]], &ExecuteOptions::default())?;
//! assert_eq!(outputs[0][0].to_host()?.to_vec::<f32>()?, vec![2.0, 4.0]);
//! # Ok(())
//! # }
//! ```
//!
//! All `unsafe` code of sirocco is in this module. The raw bindings (`ffi`) stay private; every
//! handle is owned by one Rust value and released in its `Drop`.

#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/pjrt_c_api.rs"));
}

mod api;
mod buffer;
mod client;
mod compile_cache;
mod compile_options;
mod device;
mod error;
mod event;
mod executable;
mod named_value;
mod plugin;

pub use buffer::Buffer;
pub use client::{Client, ClientOptions, MAX_CPU_DEVICES};
pub use compile_cache::{CacheStats, CompileCache};
pub use compile_options::{CompileOptions, OptionOverride};
pub use device::{Device, MemoryStats};
pub use error::{ErrorCode, PjrtError, Result};
pub use event::{Event, EventFuture};
pub use executable::{AsyncExecution, Executable, ExecuteOptions};
pub use named_value::NamedValue;
pub use plugin::{
    multi_output_fusion_setting, multi_output_fusion_wanted, with_backend_option, with_xla_flags, Plugin,
    CPU_MULTI_OUTPUT_FUSION, MULTI_OUTPUT_FUSION_ENV,
};
