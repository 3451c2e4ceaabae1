//! `PJRT_Client`: a plugin's runtime with its devices; buffers and executables are made from it.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use super::api::{args, destroy_on_drop, pjrt_call, string_from_raw, vec_from_raw, Api};
use super::compile_cache::CompileCache;
use super::device::{Device, DeviceInfo};
use super::error::{PjrtError, Result};
use super::ffi;
use super::named_value::{NamedValue, RawNamedValues};
use super::plugin::Plugin;

/// Options of [`Client::new`], passed to `PJRT_Client_Create` as named values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientOptions {
    /// Number of virtual devices of the CPU plugin (`cpu_device_count`), at least 1.
    pub cpu_device_count: Option<usize>,
    /// GPU: fraction of device memory the allocator may use (`memory_fraction`), in (0, 1].
    pub memory_fraction: Option<f64>,
    /// GPU: allocate the memory fraction up front (`preallocate`).
    pub preallocate: Option<bool>,
    /// GPU: the local device ordinals this client uses (`visible_devices`).
    pub visible_devices: Option<Vec<i64>>,
    /// Further plugin-specific options, passed as given.
    pub extra: Vec<(String, NamedValue)>,
}

/// The create options the CPU plugin reads, with a value of the type each must have.
///
/// Verified on xla-cpu-pjrt 0.0.1: the plugin silently ignores any other name, and a known
/// option of another type aborts the process (a C++ exception escapes the C API; seen with
/// `cpu_device_count` given as a string). Both are refused before the call.
const CPU_OPTIONS: [(&str, NamedValue); 4] = [
    ("cpu_device_count", NamedValue::Int64(1)),
    ("asynchronous", NamedValue::Bool(true)),
    ("max_inflight_computations", NamedValue::Int64(1)),
    ("pooling_allocator", NamedValue::Bool(true)),
];

/// The most virtual CPU devices a client is created with.
pub const MAX_CPU_DEVICES: i64 = 1024;

impl ClientOptions {
    /// The named create options for the plugin called `plugin_name`, checked.
    fn create_options(&self, plugin_name: &str) -> Result<Vec<(String, NamedValue)>> {
        let mut options = Vec::new();
        if self.cpu_device_count.is_some() && matches!(plugin_name, "cuda" | "tpu") {
            return invalid(format!(
                "cpu_device_count sets the CPU plugin's virtual devices; the `{plugin_name}` plugin does not take it"
            ));
        }
        if let Some(count) = self.cpu_device_count {
            options.push((
                "cpu_device_count".to_owned(),
                NamedValue::Int64(i64::try_from(count).unwrap_or(i64::MAX)),
            ));
        }
        if let Some(fraction) = self.memory_fraction {
            if !(fraction > 0.0 && fraction <= 1.0) {
                return invalid(format!("memory_fraction must be in (0, 1], got {fraction}"));
            }
            // The C API carries single-precision floats.
            options.push(("memory_fraction".to_owned(), NamedValue::Float(fraction as f32)));
        }
        if let Some(preallocate) = self.preallocate {
            options.push(("preallocate".to_owned(), NamedValue::Bool(preallocate)));
        }
        if let Some(devices) = &self.visible_devices {
            let distinct: BTreeSet<i64> = devices.iter().copied().collect();
            if devices.is_empty()
                || distinct.len() != devices.len()
                || devices.iter().any(|&device| device < 0)
            {
                return invalid(format!(
                    "visible_devices must list distinct, non-negative device ordinals, got {devices:?}"
                ));
            }
            options.push(("visible_devices".to_owned(), NamedValue::Int64List(devices.clone())));
        }
        options.extend(self.extra.iter().cloned());

        let mut names = BTreeSet::new();
        for (name, value) in &options {
            if !names.insert(name.as_str()) {
                return invalid(format!("client option `{name}` is given twice"));
            }
            // Zero or negative counts give a client without devices.
            if name == "cpu_device_count" && matches!(value, NamedValue::Int64(count) if *count < 1) {
                return invalid(format!("cpu_device_count must be at least 1, got {value}"));
            }
            // XLA starts threads per device: many thousands take minutes and gigabytes to create.
            if name == "cpu_device_count"
                && matches!(value, NamedValue::Int64(count) if *count > MAX_CPU_DEVICES)
            {
                return invalid(format!("cpu_device_count must be at most {MAX_CPU_DEVICES}, got {value}"));
            }
        }
        if plugin_name == "cpu" {
            check_cpu_options(&options)?;
        }
        Ok(options)
    }
}

fn check_cpu_options(options: &[(String, NamedValue)]) -> Result<()> {
    let known: Vec<&str> = CPU_OPTIONS.iter().map(|(name, _)| *name).collect();
    for (name, value) in options {
        match CPU_OPTIONS.iter().find(|(known_name, _)| known_name == name) {
            None => {
                return invalid(format!(
                    "the CPU plugin has no client option `{name}` (it would ignore it); its options are {}",
                    known.join(", ")
                ))
            }
            Some((_, example)) if std::mem::discriminant(example) != std::mem::discriminant(value) => {
                return invalid(format!(
                    "client option `{name}` must be a value like {example:?}, got {value:?}"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn invalid<T>(message: String) -> Result<T> {
    Err(PjrtError::InvalidOptions(message))
}

/// A PJRT client. Cheap to clone: clones share the runtime (and the compile cache).
#[derive(Clone)]
pub struct Client {
    handle: Arc<ClientHandle>,
    compile_cache: Option<Arc<CompileCache>>,
}

/// The runtime shared by a client's clones and everything made from it (devices, buffers,
/// executables, events hold it, so it is destroyed last).
pub(crate) struct ClientHandle {
    owned: OwnedClient,
    plugin: Arc<Plugin>,
    platform_name: String,
    platform_version: String,
    process_index: i32,
    devices: Vec<Arc<DeviceInfo>>,
    addressable_devices: Vec<Arc<DeviceInfo>>,
}

/// The raw client, destroyed on drop.
struct OwnedClient {
    api: Api,
    raw: *mut ffi::PJRT_Client,
}

// SAFETY: a PJRT_Client (xla::PjRtClient) is thread-safe: every C API function may be called on
// it from any thread concurrently.
unsafe impl Send for OwnedClient {}
// SAFETY: as above.
unsafe impl Sync for OwnedClient {}

// Everything made from the client holds its ClientHandle, so nothing uses the client once the
// handle, and with it this value, is dropped.
destroy_on_drop!(OwnedClient, PJRT_Client_Destroy(PJRT_Client_Destroy_Args { client }), api = self.api);

impl Client {
    /// Creates a client of `plugin` with `options`.
    pub fn new(plugin: &Arc<Plugin>, options: &ClientOptions) -> Result<Client> {
        let create_options = options.create_options(plugin.name())?;
        let raw_options = RawNamedValues::new(&create_options);
        let api = plugin.api();
        let mut create = args!(PJRT_Client_Create_Args {
            create_options: raw_options.as_ptr(),
            num_options: raw_options.len(),
        });
        // SAFETY: the options array and the names and values it points to live until the call
        // returns; no key-value callbacks are passed (single process).
        unsafe { pjrt_call!(api, PJRT_Client_Create, &mut create) }?;
        let owned = OwnedClient { api, raw: create.client };

        let mut name = args!(PJRT_Client_PlatformName_Args { client: owned.raw });
        let mut version = args!(PJRT_Client_PlatformVersion_Args { client: owned.raw });
        let mut process = args!(PJRT_Client_ProcessIndex_Args { client: owned.raw });
        // SAFETY: the client is live; the strings it returns are owned by it and copied here.
        let (platform_name, platform_version) = unsafe {
            pjrt_call!(api, PJRT_Client_PlatformName, &mut name)?;
            pjrt_call!(api, PJRT_Client_PlatformVersion, &mut version)?;
            pjrt_call!(api, PJRT_Client_ProcessIndex, &mut process)?;
            (
                string_from_raw(name.platform_name, name.platform_name_size),
                string_from_raw(version.platform_version, version.platform_version_size),
            )
        };

        let mut all = args!(PJRT_Client_Devices_Args { client: owned.raw });
        let mut addressable = args!(PJRT_Client_AddressableDevices_Args { client: owned.raw });
        // SAFETY: the client is live; the device arrays it returns are owned by it and copied.
        let (all, addressable) = unsafe {
            pjrt_call!(api, PJRT_Client_Devices, &mut all)?;
            pjrt_call!(api, PJRT_Client_AddressableDevices, &mut addressable)?;
            (
                vec_from_raw(all.devices, all.num_devices),
                vec_from_raw(addressable.addressable_devices, addressable.num_addressable_devices),
            )
        };
        let devices =
            all.iter().map(|&raw| DeviceInfo::read(api, raw).map(Arc::new)).collect::<Result<Vec<_>>>()?;
        let addressable_devices = addressable
            .iter()
            .map(|&raw| match devices.iter().find(|device| device.raw == raw) {
                Some(device) => Ok(Arc::clone(device)),
                None => DeviceInfo::read(api, raw).map(Arc::new),
            })
            .collect::<Result<Vec<_>>>()?;

        let handle = ClientHandle {
            owned,
            plugin: Arc::clone(plugin),
            platform_name,
            platform_version,
            process_index: process.process_index,
            devices,
            addressable_devices,
        };
        Ok(Client { handle: Arc::new(handle), compile_cache: None })
    }

    /// The platform, e.g. `cpu`, `cuda`, `tpu`.
    pub fn platform_name(&self) -> &str {
        &self.handle.platform_name
    }

    /// Platform-specific version text (e.g. the CUDA or libtpu version).
    pub fn platform_version(&self) -> &str {
        &self.handle.platform_version
    }

    /// This process's index among the processes of a multi-process job (0 when alone).
    pub fn process_index(&self) -> i32 {
        self.handle.process_index
    }

    /// Every device of the job, addressable or not.
    pub fn devices(&self) -> Vec<Device> {
        self.handle.device_list(&self.handle.devices)
    }

    /// The devices this process can run on, in the order executables and device assignments use.
    pub fn addressable_devices(&self) -> Vec<Device> {
        self.handle.device_list(&self.handle.addressable_devices)
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.handle.plugin
    }

    /// This client, compiling through `cache` (see [`Client::compile`]).
    pub fn with_compile_cache(mut self, cache: CompileCache) -> Client {
        self.set_compile_cache(cache);
        self
    }

    /// Compiles through `cache` from now on (clones made before keep their cache).
    pub fn set_compile_cache(&mut self, cache: CompileCache) {
        self.compile_cache = Some(Arc::new(cache));
    }

    pub fn compile_cache(&self) -> Option<&CompileCache> {
        self.compile_cache.as_deref()
    }

    /// The same client (devices, buffers and executables shared) compiling without any cache:
    /// for timing compilation, or for making XLA run (and dump) its whole pipeline.
    pub fn without_compile_cache(&self) -> Client {
        Client { handle: self.handle.clone(), compile_cache: None }
    }

    pub(crate) fn handle(&self) -> &Arc<ClientHandle> {
        &self.handle
    }

    /// An error unless `device` belongs to this client.
    pub(crate) fn check_device(&self, device: &Device, role: &str) -> Result<()> {
        if Arc::ptr_eq(device.client(), &self.handle) {
            Ok(())
        } else {
            Err(PjrtError::InvalidOptions(format!("{role} {device:?} belongs to another client")))
        }
    }
}

impl ClientHandle {
    pub(crate) fn api(&self) -> Api {
        self.owned.api
    }

    pub(crate) fn raw(&self) -> *mut ffi::PJRT_Client {
        self.owned.raw
    }

    /// The device whose raw pointer is `raw`, if it is one of this client's.
    pub(crate) fn device(self: &Arc<Self>, raw: *mut ffi::PJRT_Device) -> Option<Device> {
        let info = self.devices.iter().chain(&self.addressable_devices).find(|info| info.raw == raw)?;
        Some(Device::new(Arc::clone(self), Arc::clone(info)))
    }

    fn device_list(self: &Arc<Self>, infos: &[Arc<DeviceInfo>]) -> Vec<Device> {
        infos.iter().map(|info| Device::new(Arc::clone(self), Arc::clone(info))).collect()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Client({} {}, {} devices, plugin {})",
            self.platform_name(),
            self.platform_version(),
            self.handle.devices.len(),
            self.plugin().path().display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_the_plugin_sees_them() {
        let options = ClientOptions { cpu_device_count: Some(0), ..Default::default() };
        assert!(matches!(options.create_options("cpu"), Err(PjrtError::InvalidOptions(_))));
        let options = ClientOptions { memory_fraction: Some(0.5), ..Default::default() };
        let error = options.create_options("cpu").unwrap_err().to_string();
        assert!(error.contains("no client option `memory_fraction`"), "{error}");
        assert_eq!(
            options.create_options("cuda").unwrap(),
            vec![("memory_fraction".into(), NamedValue::Float(0.5))]
        );
        let options = ClientOptions { memory_fraction: Some(1.5), ..Default::default() };
        assert!(options.create_options("cuda").is_err());
        let options = ClientOptions { visible_devices: Some(vec![0, 0]), ..Default::default() };
        assert!(options.create_options("cuda").is_err());
        let options = ClientOptions {
            cpu_device_count: Some(2),
            extra: vec![("cpu_device_count".into(), NamedValue::Int64(3))],
            ..Default::default()
        };
        assert!(options.create_options("cpu").unwrap_err().to_string().contains("twice"));
        // The CUDA plugin refuses the CPU plugin's option (verified with jax-cuda12-pjrt
        // 0.12.0.1: "Unexpected option name passed to PJRT_Client_Create").
        let options = ClientOptions { cpu_device_count: Some(1), ..Default::default() };
        let error = options.create_options("cuda").unwrap_err().to_string();
        assert!(error.contains("cpu_device_count") && error.contains("`cuda`"), "{error}");
    }

    #[test]
    fn cpu_options_must_have_the_type_the_plugin_reads() {
        // A string cpu_device_count aborts the CPU plugin.
        let options = ClientOptions {
            extra: vec![("cpu_device_count".into(), NamedValue::Str("4".into()))],
            ..Default::default()
        };
        assert!(options.create_options("cpu").unwrap_err().to_string().contains("must be a value like"));
        let options = ClientOptions {
            extra: vec![("cpu_device_count".into(), NamedValue::Int64(0))],
            ..Default::default()
        };
        assert!(options.create_options("cpu").unwrap_err().to_string().contains("at least 1"));
        let options = ClientOptions {
            cpu_device_count: Some(4),
            extra: vec![("asynchronous".into(), NamedValue::Bool(false))],
            ..Default::default()
        };
        assert_eq!(options.create_options("cpu").unwrap().len(), 2);
    }
}
