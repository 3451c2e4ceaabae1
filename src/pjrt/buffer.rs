//! `PJRT_Buffer`: an array on one device, and the transfers between it and host memory.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::api::{args, destroy_on_drop, pjrt_call, vec_from_raw};
use super::client::{Client, ClientHandle};
use super::device::Device;
use super::error::{ErrorCode, PjrtError, Result};
use super::event::Event;
use super::ffi;
use crate::dtype::{DType, Element};
use crate::tensor::HostTensor;

/// The PJRT element type of `dtype`.
pub(crate) fn buffer_type(dtype: DType) -> ffi::PJRT_Buffer_Type {
    use ffi::PJRT_Buffer_Type::*;
    match dtype {
        DType::Pred => PJRT_Buffer_Type_PRED,
        DType::U8 => PJRT_Buffer_Type_U8,
        DType::U32 => PJRT_Buffer_Type_U32,
        DType::U64 => PJRT_Buffer_Type_U64,
        DType::I32 => PJRT_Buffer_Type_S32,
        DType::I64 => PJRT_Buffer_Type_S64,
        DType::F16 => PJRT_Buffer_Type_F16,
        DType::BF16 => PJRT_Buffer_Type_BF16,
        DType::F32 => PJRT_Buffer_Type_F32,
        DType::F64 => PJRT_Buffer_Type_F64,
    }
}

/// The dtype of a raw `PJRT_Buffer_Type` value, if sirocco supports it.
fn dtype_of(raw_type: u32) -> Option<DType> {
    DType::ALL.into_iter().find(|&dtype| buffer_type(dtype) as u32 == raw_type)
}

/// An array on one device. Dropping it releases the device memory (once pending work on it is
/// done: PJRT keeps the memory alive for transfers and executions in flight).
pub struct Buffer {
    owned: OwnedBuffer,
    dtype: DType,
    dims: Vec<i64>,
    device: Device,
}

/// The raw buffer, destroyed on drop.
struct OwnedBuffer {
    client: Arc<ClientHandle>,
    raw: *mut ffi::PJRT_Buffer,
}

// SAFETY: a PJRT_Buffer (xla::PjRtBuffer) is thread-safe: it may be read, copied, used as an
// argument and destroyed from any thread.
unsafe impl Send for OwnedBuffer {}
// SAFETY: as above; `&Buffer` methods only call thread-safe C API functions.
unsafe impl Sync for OwnedBuffer {}

destroy_on_drop!(
    OwnedBuffer,
    PJRT_Buffer_Destroy(PJRT_Buffer_Destroy_Args { buffer }),
    api = self.client.api()
);

impl Buffer {
    /// Takes ownership of `raw`, a buffer of `client` returned by `call`, and reads its shape.
    pub(crate) fn from_raw(
        client: &Arc<ClientHandle>,
        raw: *mut ffi::PJRT_Buffer,
        call: &'static str,
    ) -> Result<Buffer> {
        let owned = OwnedBuffer { client: Arc::clone(client), raw };
        let api = client.api();
        let mut element_type = args!(PJRT_Buffer_ElementType_Args { buffer: raw });
        let mut dimensions = args!(PJRT_Buffer_Dimensions_Args { buffer: raw });
        let mut device = args!(PJRT_Buffer_Device_Args { buffer: raw });
        // SAFETY: `raw` is a live buffer; the type is read as its integer representation (a
        // type unknown to this header must not become an invalid Rust enum value), and the
        // dimensions, owned by the buffer, are copied.
        let (raw_type, dims) = unsafe {
            pjrt_call!(api, PJRT_Buffer_ElementType, &mut element_type)?;
            pjrt_call!(api, PJRT_Buffer_Dimensions, &mut dimensions)?;
            pjrt_call!(api, PJRT_Buffer_Device, &mut device)?;
            (
                std::ptr::addr_of!(element_type.type_).cast::<u32>().read(),
                vec_from_raw(dimensions.dims, dimensions.num_dims),
            )
        };
        let dtype =
            dtype_of(raw_type).ok_or(PjrtError::UnsupportedElementType { call, element_type: raw_type })?;
        let device = client.device(device.device).ok_or_else(|| PjrtError::Call {
            call: "PJRT_Buffer_Device",
            code: ErrorCode::Internal,
            message: "the buffer's device is not one of its client's devices".into(),
        })?;
        Ok(Buffer { owned, dtype, dims, device })
    }

    pub(crate) fn raw(&self) -> *mut ffi::PJRT_Buffer {
        self.owned.raw
    }

    pub(crate) fn client(&self) -> &Arc<ClientHandle> {
        &self.owned.client
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dimensions, major to minor (`[]` for a scalar).
    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes the buffer occupies on its device (may include padding).
    pub fn on_device_size_bytes(&self) -> Result<usize> {
        let mut size = args!(PJRT_Buffer_OnDeviceSizeInBytes_Args { buffer: self.raw() });
        // SAFETY: the buffer is live.
        unsafe { pjrt_call!(self.client().api(), PJRT_Buffer_OnDeviceSizeInBytes, &mut size) }?;
        Ok(size.on_device_size_in_bytes)
    }

    /// Whether the buffer's memory is gone, e.g. because it was donated to an execution.
    pub fn is_deleted(&self) -> Result<bool> {
        let mut deleted = args!(PJRT_Buffer_IsDeleted_Args { buffer: self.raw() });
        // SAFETY: the buffer handle is live (its memory may be deleted, the handle is not).
        unsafe { pjrt_call!(self.client().api(), PJRT_Buffer_IsDeleted, &mut deleted) }?;
        Ok(deleted.is_deleted)
    }

    /// An event that is ready once the buffer's value is computed (or failed to be).
    pub fn ready(&self) -> Result<Event> {
        let mut ready = args!(PJRT_Buffer_ReadyEvent_Args { buffer: self.raw() });
        // SAFETY: the buffer is live; the event returned is ours to destroy.
        unsafe { pjrt_call!(self.client().api(), PJRT_Buffer_ReadyEvent, &mut ready) }?;
        Ok(Event::from_raw(Arc::clone(self.client()), ready.event, "PJRT_Buffer_ReadyEvent"))
    }

    /// Copies the value to host memory, blocking until it is there.
    pub fn to_host(&self) -> Result<HostTensor> {
        let (data, event) = self.start_to_host()?;
        // `wait` returns only once the copy into `data` is over, failed or not.
        event.wait()?;
        Ok(HostTensor::from_bytes(self.dtype, &self.dims, data)?)
    }

    /// Copies the value to host memory; the future resolves when the copy is done, woken by the
    /// plugin (no thread blocks). The host memory stays alive until the copy is over, even if
    /// the future is dropped first.
    pub fn to_host_async(&self) -> impl Future<Output = Result<HostTensor>> + Send + 'static {
        // The event takes the host array now, not at the first poll, so that dropping the
        // future unpolled cannot free memory the copy is writing to.
        let transfer = self.start_to_host().map(|(data, event)| event.into_future_with(data));
        let (dtype, dims) = (self.dtype, self.dims.clone());
        async move {
            let data = transfer?.await?;
            Ok(HostTensor::from_bytes(dtype, &dims, data)?)
        }
    }

    /// Starts the copy into a new dense row-major host array; the array must stay alive until
    /// the returned event is ready.
    fn start_to_host(&self) -> Result<(Vec<u8>, Event)> {
        let element_count = crate::tensor::element_count(&self.dims)?;
        let mut data = vec![0u8; element_count * self.dtype.size_in_bytes()];
        // Ask for the row-major layout explicitly: without a host layout the plugin copies in the
        // device's layout, which need not be row-major on accelerators.
        let minor_to_major: Vec<i64> = (0..self.dims.len() as i64).rev().collect();
        let tiled = args!(PJRT_Buffer_MemoryLayout_Tiled {
            minor_to_major: minor_to_major.as_ptr(),
            minor_to_major_size: minor_to_major.len(),
        });
        let mut host_layout = args!(PJRT_Buffer_MemoryLayout {
            __bindgen_anon_1: ffi::PJRT_Buffer_MemoryLayout__bindgen_ty_1 { tiled },
            type_: ffi::PJRT_Buffer_MemoryLayout_Type::PJRT_Buffer_MemoryLayout_Type_Tiled,
        });
        let mut copy = args!(PJRT_Buffer_ToHostBuffer_Args {
            src: self.raw(),
            host_layout: &mut host_layout,
            dst: data.as_mut_ptr().cast(),
            dst_size: data.len(),
        });
        // SAFETY: the buffer is live; the layout (and `minor_to_major`) live through the call;
        // `data` holds `dst_size` writable bytes and the caller keeps it alive (its heap
        // allocation does not move with the Vec) until the returned event is ready.
        unsafe { pjrt_call!(self.client().api(), PJRT_Buffer_ToHostBuffer, &mut copy) }?;
        Ok((data, Event::from_raw(Arc::clone(self.client()), copy.event, "PJRT_Buffer_ToHostBuffer")))
    }

    /// Copies the buffer to another device of the same client.
    pub fn copy_to_device(&self, device: &Device) -> Result<Buffer> {
        if !Arc::ptr_eq(device.client(), self.client()) {
            return Err(PjrtError::InvalidOptions(format!(
                "cannot copy a buffer to {device:?}, a device of another client"
            )));
        }
        let mut copy = args!(PJRT_Buffer_CopyToDevice_Args { buffer: self.raw(), dst_device: device.raw() });
        // SAFETY: the buffer and the device belong to the same live client.
        unsafe { pjrt_call!(self.client().api(), PJRT_Buffer_CopyToDevice, &mut copy) }?;
        Buffer::from_raw(self.client(), copy.dst_buffer, "PJRT_Buffer_CopyToDevice")
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({}{:?} on {:?})", self.dtype, self.dims, self.device)
    }
}

impl Client {
    /// Copies a host tensor to `device`. Returns once the host data has been read, so the
    /// tensor may be dropped or changed right after.
    pub fn buffer_from_host(&self, tensor: &HostTensor, device: &Device) -> Result<Buffer> {
        self.check_device(device, "target device")?;
        let client = self.handle();
        let mut transfer = args!(PJRT_Client_BufferFromHostBuffer_Args {
            client: client.raw(),
            data: tensor.bytes().as_ptr().cast(),
            type_: buffer_type(tensor.dtype()),
            dims: tensor.dims().as_ptr(),
            num_dims: tensor.dims().len(),
            host_buffer_semantics:
                ffi::PJRT_HostBufferSemantics::PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes,
            device: device.raw(),
        });
        // SAFETY: the client and device are live; `tensor` is a dense row-major array of the
        // given type and dims (checked by HostTensor) and stays borrowed until the
        // done-with-host-buffer event below is ready.
        unsafe { pjrt_call!(client.api(), PJRT_Client_BufferFromHostBuffer, &mut transfer) }?;
        let buffer = Buffer::from_raw(client, transfer.buffer, "PJRT_Client_BufferFromHostBuffer");
        if !transfer.done_with_host_buffer.is_null() {
            Event::from_raw(
                Arc::clone(client),
                transfer.done_with_host_buffer,
                "PJRT_Client_BufferFromHostBuffer",
            )
            .wait()?;
        }
        buffer
    }

    /// Copies `values`, row-major with dimensions `dims`, to `device`.
    pub fn buffer_from_slice<T: Element>(
        &self,
        dims: &[i64],
        values: &[T],
        device: &Device,
    ) -> Result<Buffer> {
        self.buffer_from_host(&HostTensor::from_slice(dims, values)?, device)
    }
}
