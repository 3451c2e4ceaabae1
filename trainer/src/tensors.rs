//! Safetensors files of host tensors (named, row-major, little-endian).

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use sirocco::{DType, HostTensor};

use crate::error::{Result, TrainerError};

fn to_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::BOOL => DType::Pred,
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::U64 => DType::U64,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

fn from_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::Pred => Dtype::BOOL,
        DType::U8 => Dtype::U8,
        DType::U32 => Dtype::U32,
        DType::U64 => Dtype::U64,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
    }
}

/// Every tensor of a safetensors file, in the file's (sorted) order.
pub fn read(path: &Path) -> Result<Vec<(String, HostTensor)>> {
    let bytes = std::fs::read(path).map_err(|error| TrainerError::io(path, error))?;
    read_bytes(&bytes, path)
}

/// Parses safetensors `bytes` (read from `path`, for messages).
pub fn read_bytes(bytes: &[u8], path: &Path) -> Result<Vec<(String, HostTensor)>> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|error| TrainerError::tensors(path, format!("not a valid safetensors file: {error}")))?;
    let mut tensors = Vec::new();
    let mut names: Vec<String> = file.names().into_iter().cloned().collect();
    names.sort();
    for name in names {
        let view =
            file.tensor(&name).map_err(|error| TrainerError::tensors(path, format!("{name}: {error}")))?;
        let dtype = to_dtype(view.dtype()).ok_or_else(|| {
            TrainerError::tensors(path, format!("{name}: unsupported dtype {:?}", view.dtype()))
        })?;
        let dims: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let mut data = view.data().to_vec();
        if cfg!(target_endian = "big") {
            for element in data.chunks_exact_mut(dtype.size_in_bytes()) {
                element.reverse();
            }
        }
        let tensor = HostTensor::from_bytes(dtype, &dims, data)
            .map_err(|error| TrainerError::tensors(path, format!("{name}: {error}")))?;
        tensors.push((name, tensor));
    }
    Ok(tensors)
}

/// Serializes `tensors` in the safetensors format, with `metadata`.
pub fn to_bytes(
    tensors: &[(String, HostTensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, tensor)| {
            let shape: Vec<usize> = tensor.dims().iter().map(|&d| d as usize).collect();
            TensorView::new(from_dtype(tensor.dtype()), shape, tensor.bytes())
                .map(|view| (name.clone(), view))
                .map_err(|error| TrainerError::Other(format!("tensor {name}: {error}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &metadata)
        .map_err(|error| TrainerError::Other(format!("safetensors: {error}")))
}

/// Writes `tensors` to `path` (through a temporary file and a rename, so a crash never
/// leaves a half-written file).
pub fn write(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    let bytes = to_bytes(tensors, None)?;
    crate::files::write_atomically(path, &bytes)
}
