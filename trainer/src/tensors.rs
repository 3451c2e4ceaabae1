//! Safetensors files of host tensors (named, row-major, little-endian).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorInfo, TensorView};
use safetensors::SafeTensorError;
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

/// The first NaN or infinite element of a float tensor: its flat index and value. Reads the
/// exponent bits in place, so a multi-gigabyte tensor is not copied.
pub(crate) fn first_non_finite(tensor: &HostTensor) -> Option<(usize, f64)> {
    let dtype = tensor.dtype();
    if !dtype.is_float() {
        return None;
    }
    let size = dtype.size_in_bytes();
    tensor.bytes().chunks_exact(size).enumerate().find_map(|(index, element)| {
        let finite = match dtype {
            DType::F16 => u16::from_ne_bytes([element[0], element[1]]) & 0x7c00 != 0x7c00,
            DType::BF16 => u16::from_ne_bytes([element[0], element[1]]) & 0x7f80 != 0x7f80,
            DType::F32 => f32::from_ne_bytes(element.try_into().ok()?).is_finite(),
            DType::F64 => f64::from_ne_bytes(element.try_into().ok()?).is_finite(),
            _ => true,
        };
        if finite {
            return None;
        }
        let value = HostTensor::from_bytes(dtype, &[], element.to_vec()).ok()?.to_f64_vec()[0];
        Some((index, value))
    })
}

/// Every tensor of a safetensors file, in the file's (sorted) order.
pub fn read(path: &Path) -> Result<Vec<(String, HostTensor)>> {
    let bytes = std::fs::read(path).map_err(|error| TrainerError::io(path, error))?;
    read_bytes(&bytes, path)
}

/// Parses safetensors `bytes` (read from `path`, for messages).
pub fn read_bytes(bytes: &[u8], path: &Path) -> Result<Vec<(String, HostTensor)>> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|error| {
        TrainerError::tensors(path, format!("not a valid safetensors file: {}", describe(&error, bytes)))
    })?;
    let mut tensors = Vec::new();
    let mut names: Vec<String> = file.names().into_iter().cloned().collect();
    names.sort();
    for name in names {
        let view = file
            .tensor(&name)
            .map_err(|error| TrainerError::tensors(path, format!("{name}: {}", describe(&error, bytes))))?;
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

/// The header's length field: 8 bytes, little-endian.
const LENGTH_BYTES: usize = 8;

/// What is wrong with the safetensors `bytes` that the crate refused with `error` (whose own
/// text is only its variant's name), in words, with the sizes and tensor involved.
fn describe(error: &SafeTensorError, bytes: &[u8]) -> String {
    let header_length =
        bytes.get(..LENGTH_BYTES).and_then(|field| field.try_into().ok()).map_or(0, u64::from_le_bytes);
    let after_length = bytes.len().saturating_sub(LENGTH_BYTES);
    match error {
        SafeTensorError::HeaderTooSmall => {
            format!("truncated: {} bytes, fewer than the {LENGTH_BYTES} of the header's length", bytes.len())
        }
        SafeTensorError::HeaderTooLarge => {
            format!("header too large: its length field says {header_length} bytes (at most 100 MB are read)")
        }
        SafeTensorError::InvalidHeaderLength => format!(
            "truncated: the header says {header_length} bytes but the file has {after_length} after \
             the length field"
        ),
        SafeTensorError::InvalidHeader => "the header is not UTF-8 text".into(),
        SafeTensorError::InvalidHeaderStart => "the header is not a JSON object".into(),
        SafeTensorError::InvalidHeaderDeserialization => match header_entries(bytes) {
            Err(problem) => problem,
            Ok(_) => "the header is not a safetensors header".into(),
        },
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor `{name}`: data offsets out of range (the tensors' data must follow each \
             other from offset 0, without gaps or overlaps)"
        ),
        SafeTensorError::TensorInvalidInfo => {
            let sized_wrong = header_entries(bytes).ok().and_then(|entries| {
                entries.into_iter().find(|(_, info)| {
                    let (start, end) = info.data_offsets;
                    element_bytes(info) != end.checked_sub(start)
                })
            });
            match sized_wrong {
                Some((name, info)) => format!(
                    "tensor `{name}`: data offsets [{}, {}] hold {} bytes, not the {} of {:?} {:?}",
                    info.data_offsets.0,
                    info.data_offsets.1,
                    info.data_offsets.1.saturating_sub(info.data_offsets.0),
                    element_bytes(&info).map_or("more than 2^64".into(), |size| size.to_string()),
                    info.dtype,
                    info.shape
                ),
                None => "a tensor's data offsets do not hold its shape and dtype".into(),
            }
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape has more bytes than 2^64".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            let described = header_entries(bytes)
                .ok()
                .map(|entries| entries.iter().map(|(_, info)| info.data_offsets.1).max().unwrap_or(0));
            let stored = after_length.saturating_sub(usize::try_from(header_length).unwrap_or(usize::MAX));
            match described {
                Some(described) if stored < described => format!(
                    "truncated: the header says the tensor data is {described} bytes but the file \
                     has {stored}"
                ),
                Some(described) => format!(
                    "the file has {stored} bytes of tensor data, more than the {described} its header \
                     describes"
                ),
                None => "the tensor data is not the size the header describes".into(),
            }
        }
        SafeTensorError::TensorNotFound(name) => format!("no tensor `{name}`"),
        SafeTensorError::InvalidTensorView(dtype, shape, size) => {
            format!("{size} bytes do not hold a {dtype:?} tensor of shape {shape:?}")
        }
        SafeTensorError::IoError(error) => error.to_string(),
        SafeTensorError::JsonError(error) => format!("the header is not valid JSON: {error}"),
    }
}

/// The header's tensors, by name (the `__metadata__` entry left out), or what makes the header
/// unreadable.
fn header_entries(bytes: &[u8]) -> std::result::Result<Vec<(String, TensorInfo)>, String> {
    let length = bytes
        .get(..LENGTH_BYTES)
        .and_then(|field| usize::try_from(u64::from_le_bytes(field.try_into().ok()?)).ok())
        .ok_or("truncated")?;
    let header = bytes.get(LENGTH_BYTES..LENGTH_BYTES.saturating_add(length)).ok_or("truncated")?;
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|error| format!("the header is not a JSON object: {error}"))?;
    entries
        .into_iter()
        .filter_map(|(name, entry)| {
            if name == "__metadata__" {
                let strings = serde_json::from_value::<HashMap<String, String>>(entry).is_ok();
                return (!strings).then(|| Err("`__metadata__` is not a map of strings".to_string()));
            }
            Some(match serde_json::from_value::<TensorInfo>(entry) {
                Ok(info) => Ok((name, info)),
                Err(error) => Err(format!("tensor `{name}`: {error}")),
            })
        })
        .collect()
}

/// The bytes a tensor of `info`'s shape and dtype takes; `None` past `usize`.
fn element_bytes(info: &TensorInfo) -> Option<usize> {
    info.shape.iter().try_fold(info.dtype.size(), |size, &dim| size.checked_mul(dim))
}

/// Serializes `tensors` in the safetensors format, with `metadata`.
pub fn to_bytes(
    tensors: &[(String, HostTensor)],
    metadata: Option<HashMap<String, String>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_non_finite_element_of_each_float_type() {
        let f32_tensor = HostTensor::from_slice(&[3], &[1.0f32, f32::INFINITY, f32::NAN]).unwrap();
        assert_eq!(first_non_finite(&f32_tensor), Some((1, f64::INFINITY)));
        let f64_tensor = HostTensor::from_slice(&[2], &[0.0f64, f64::NAN]).unwrap();
        assert!(matches!(first_non_finite(&f64_tensor), Some((1, value)) if value.is_nan()));
        let bf16 = HostTensor::from_slice(&[2], &[half::bf16::MAX, half::bf16::NEG_INFINITY]).unwrap();
        assert_eq!(first_non_finite(&bf16), Some((1, f64::NEG_INFINITY)));
        let f16 = HostTensor::from_slice(&[2], &[half::f16::MAX, half::f16::NAN]).unwrap();
        assert!(matches!(first_non_finite(&f16), Some((1, value)) if value.is_nan()));
        let finite = HostTensor::from_slice(&[2], &[half::bf16::MIN, half::bf16::MIN_POSITIVE]).unwrap();
        assert_eq!(first_non_finite(&finite), None);
        // Integer bit patterns that would be NaN as floats are fine.
        assert_eq!(first_non_finite(&HostTensor::from_slice(&[1], &[u32::MAX]).unwrap()), None);
    }

    /// A safetensors file of `header` (JSON) and `data`.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    /// The message of reading `bytes`, which must fail.
    fn error(bytes: &[u8]) -> String {
        let error = read_bytes(bytes, Path::new("x.safetensors")).unwrap_err().to_string();
        assert!(error.starts_with("x.safetensors: not a valid safetensors file: "), "{error}");
        error["x.safetensors: not a valid safetensors file: ".len()..].to_string()
    }

    const TWO_TENSORS: &str = r#"{"params/a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"params/b":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}"#;

    #[test]
    fn a_well_formed_file_reads() {
        let tensors = read_bytes(&file(TWO_TENSORS, &[0; 20]), Path::new("x.safetensors")).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["params/a", "params/b"]);
    }

    #[test]
    fn malformed_files_are_described_in_words() {
        assert_eq!(error(&[1, 2, 3]), "truncated: 3 bytes, fewer than the 8 of the header's length");
        assert_eq!(
            error(&file(TWO_TENSORS, &[0; 20])[..30]),
            format!(
                "truncated: the header says {} bytes but the file has 22 after the length field",
                TWO_TENSORS.len()
            )
        );
        assert_eq!(
            error(&file(TWO_TENSORS, &[0; 12])),
            "truncated: the header says the tensor data is 20 bytes but the file has 12"
        );
        assert_eq!(
            error(&file(TWO_TENSORS, &[0; 24])),
            "the file has 24 bytes of tensor data, more than the 20 its header describes"
        );
        let mut huge = (1u64 << 40).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert_eq!(
            error(&huge),
            "header too large: its length field says 1099511627776 bytes (at most 100 MB are read)"
        );
        assert!(error(&file("{not json", &[])).starts_with("the header is not a JSON object: "));
        assert_eq!(
            error(&file(r#"{"params/a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]))
                .split(',')
                .next()
                .unwrap(),
            "tensor `params/a`: unknown variant `Q7`"
        );
        let gap = TWO_TENSORS.replace("[8,20]", "[12,24]");
        assert_eq!(
            error(&file(&gap, &[0; 24])),
            "tensor `params/b`: data offsets out of range (the tensors' data must follow each other \
             from offset 0, without gaps or overlaps)"
        );
        let wrong_size = TWO_TENSORS.replace(r#""shape":[3]"#, r#""shape":[4]"#);
        assert_eq!(
            error(&file(&wrong_size, &[0; 20])),
            "tensor `params/b`: data offsets [8, 20] hold 12 bytes, not the 16 of F32 [4]"
        );
        let past_the_end = TWO_TENSORS.replace("[8,20]", "[8,1000000000000]");
        assert_eq!(
            error(&file(&past_the_end, &[0; 20])),
            "tensor `params/b`: data offsets [8, 1000000000000] hold 999999999992 bytes, not the 12 of F32 [3]"
        );
    }
}
