//! `PJRT_Device`: one device of a client, with its description read once.

use std::fmt;
use std::sync::Arc;

use super::api::{args, pjrt_call, string_from_raw, Api};
use super::client::ClientHandle;
use super::error::{ErrorCode, Result};
use super::ffi;

/// What a device reports about itself; fixed for the life of its client.
pub(crate) struct DeviceInfo {
    pub(crate) raw: *mut ffi::PJRT_Device,
    id: i64,
    kind: String,
    process_index: i32,
    local_hardware_id: Option<i64>,
    is_addressable: bool,
    debug_string: String,
}

// SAFETY: a PJRT_Device is owned by its client, never changes, and the C API lets any thread
// query it; `DeviceInfo` only holds the pointer and copies of its description.
unsafe impl Send for DeviceInfo {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for DeviceInfo {}

impl DeviceInfo {
    /// Reads the description of `raw`, a device of a live client.
    pub(crate) fn read(api: Api, raw: *mut ffi::PJRT_Device) -> Result<DeviceInfo> {
        let mut description = args!(PJRT_Device_GetDescription_Args { device: raw });
        // SAFETY: `raw` is a device of a live client; the description it returns is owned by
        // the device and lives as long as the client.
        unsafe { pjrt_call!(api, PJRT_Device_GetDescription, &mut description) }?;
        let description = description.device_description;

        let mut id = args!(PJRT_DeviceDescription_Id_Args { device_description: description });
        let mut process = args!(PJRT_DeviceDescription_ProcessIndex_Args { device_description: description });
        let mut kind = args!(PJRT_DeviceDescription_Kind_Args { device_description: description });
        let mut debug = args!(PJRT_DeviceDescription_DebugString_Args { device_description: description });
        let mut hardware = args!(PJRT_Device_LocalHardwareId_Args { device: raw });
        let mut addressable = args!(PJRT_Device_IsAddressable_Args { device: raw });
        // SAFETY: `description` and `raw` are live; the strings returned are owned by the
        // description and copied before this block ends.
        let (kind, debug_string) = unsafe {
            pjrt_call!(api, PJRT_DeviceDescription_Id, &mut id)?;
            pjrt_call!(api, PJRT_DeviceDescription_ProcessIndex, &mut process)?;
            pjrt_call!(api, PJRT_DeviceDescription_Kind, &mut kind)?;
            pjrt_call!(api, PJRT_DeviceDescription_DebugString, &mut debug)?;
            pjrt_call!(api, PJRT_Device_LocalHardwareId, &mut hardware)?;
            pjrt_call!(api, PJRT_Device_IsAddressable, &mut addressable)?;
            (
                string_from_raw(kind.device_kind, kind.device_kind_size),
                string_from_raw(debug.debug_string, debug.debug_string_size),
            )
        };
        Ok(DeviceInfo {
            raw,
            id: i64::from(id.id),
            kind,
            process_index: process.process_index,
            // The C API reports -1 when the platform has no such id.
            local_hardware_id: (hardware.local_hardware_id >= 0)
                .then_some(i64::from(hardware.local_hardware_id)),
            is_addressable: addressable.is_addressable,
            debug_string,
        })
    }
}

/// One device of a [`super::Client`]. Holds the client, so the device stays valid.
#[derive(Clone)]
pub struct Device {
    client: Arc<ClientHandle>,
    info: Arc<DeviceInfo>,
}

/// Allocator statistics of a device; each field is `None` when the plugin does not report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    pub bytes_in_use: Option<i64>,
    pub peak_bytes_in_use: Option<i64>,
    pub bytes_limit: Option<i64>,
}

impl Device {
    pub(crate) fn new(client: Arc<ClientHandle>, info: Arc<DeviceInfo>) -> Device {
        Device { client, info }
    }

    pub(crate) fn raw(&self) -> *mut ffi::PJRT_Device {
        self.info.raw
    }

    pub(crate) fn client(&self) -> &Arc<ClientHandle> {
        &self.client
    }

    /// The global device id (the ids that device assignments use).
    pub fn id(&self) -> i64 {
        self.info.id
    }

    /// The kind of device, e.g. `cpu` or a GPU model name.
    pub fn kind(&self) -> &str {
        &self.info.kind
    }

    pub fn process_index(&self) -> i32 {
        self.info.process_index
    }

    /// The id of the hardware device within its process, when the platform has one.
    pub fn local_hardware_id(&self) -> Option<i64> {
        self.info.local_hardware_id
    }

    pub fn is_addressable(&self) -> bool {
        self.info.is_addressable
    }

    pub fn debug_string(&self) -> &str {
        &self.info.debug_string
    }

    /// The device's allocator statistics; `None` when the plugin does not implement them.
    pub fn memory_stats(&self) -> Result<Option<MemoryStats>> {
        let mut stats = args!(PJRT_Device_MemoryStats_Args { device: self.raw() });
        // SAFETY: the device belongs to the live client that `self` holds.
        match unsafe { pjrt_call!(self.client.api(), PJRT_Device_MemoryStats, &mut stats) } {
            Ok(()) => Ok(Some(MemoryStats {
                bytes_in_use: Some(stats.bytes_in_use),
                peak_bytes_in_use: stats.peak_bytes_in_use_is_set.then_some(stats.peak_bytes_in_use),
                bytes_limit: stats.bytes_limit_is_set.then_some(stats.bytes_limit),
            })),
            Err(error) if error.code() == Some(ErrorCode::Unimplemented) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        self.info.raw == other.info.raw
    }
}

impl Eq for Device {}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device({} {})", self.kind(), self.id())
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.debug_string())
    }
}
