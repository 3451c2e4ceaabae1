//! Dense host tensors: the values that travel between host memory and PJRT buffers.

use crate::dtype::{DType, Element};

/// A host tensor whose dimensions or data disagree with what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("tensor of dims {dims:?} holds {expected} {dtype} elements ({expected_bytes} bytes), got {actual_bytes} bytes")]
    ByteCount { dtype: DType, dims: Vec<i64>, expected: usize, expected_bytes: usize, actual_bytes: usize },
    #[error("negative dimension in {dims:?}")]
    NegativeDimension { dims: Vec<i64> },
    #[error("tensor holds {actual}, asked for {requested}")]
    DTypeMismatch { actual: DType, requested: DType },
}

/// A dense, row-major host tensor: element type, dimensions and native-endian bytes.
#[derive(Clone, PartialEq)]
pub struct HostTensor {
    dtype: DType,
    dims: Vec<i64>,
    data: Vec<u8>,
}

impl std::fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostTensor({}{:?}, {} bytes)", self.dtype, self.dims, self.data.len())
    }
}

/// Number of elements of a shape; an error for negative dimensions.
pub fn element_count(dims: &[i64]) -> Result<usize, TensorError> {
    dims.iter().try_fold(1usize, |count, &dim| {
        usize::try_from(dim)
            .map(|dim| count * dim)
            .map_err(|_| TensorError::NegativeDimension { dims: dims.to_vec() })
    })
}

impl HostTensor {
    /// Wraps raw native-endian bytes; checks that their length matches `dtype` and `dims`.
    pub fn from_bytes(dtype: DType, dims: &[i64], data: Vec<u8>) -> Result<Self, TensorError> {
        let expected = element_count(dims)?;
        let expected_bytes = expected * dtype.size_in_bytes();
        if data.len() != expected_bytes {
            return Err(TensorError::ByteCount {
                dtype,
                dims: dims.to_vec(),
                expected,
                expected_bytes,
                actual_bytes: data.len(),
            });
        }
        Ok(HostTensor { dtype, dims: dims.to_vec(), data })
    }

    /// A tensor of `dims` holding `values` in row-major order.
    pub fn from_slice<T: Element>(dims: &[i64], values: &[T]) -> Result<Self, TensorError> {
        let mut data = Vec::with_capacity(std::mem::size_of_val(values));
        for &value in values {
            value.write_bytes(&mut data);
        }
        Self::from_bytes(T::DTYPE, dims, data)
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T) -> Self {
        let mut data = Vec::with_capacity(T::DTYPE.size_in_bytes());
        value.write_bytes(&mut data);
        HostTensor { dtype: T::DTYPE, dims: Vec::new(), data }
    }

    /// A tensor of `dims` filled with zero bytes (0, 0.0 or false).
    pub fn zeros(dtype: DType, dims: &[i64]) -> Result<Self, TensorError> {
        let count = element_count(dims)?;
        Self::from_bytes(dtype, dims, vec![0; count * dtype.size_in_bytes()])
    }

    /// A tensor of `dims` with every element `value` (converted as [`DType::encode_f64`]).
    pub fn full(dtype: DType, dims: &[i64], value: f64) -> Result<Self, TensorError> {
        let count = element_count(dims)?;
        Self::from_bytes(dtype, dims, dtype.encode_f64(value).repeat(count))
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    pub fn element_count(&self) -> usize {
        self.data.len() / self.dtype.size_in_bytes()
    }

    /// The elements as `T`; an error when the tensor holds another element type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::DTypeMismatch { actual: self.dtype, requested: T::DTYPE });
        }
        Ok(self.data.chunks_exact(T::DTYPE.size_in_bytes()).map(T::read_bytes).collect())
    }

    /// The elements converted to f64, whatever the element type (for tests and reports).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        fn convert<T: Element>(data: &[u8]) -> Vec<f64> {
            data.chunks_exact(T::DTYPE.size_in_bytes()).map(|bytes| T::read_bytes(bytes).to_f64()).collect()
        }
        match self.dtype {
            DType::Pred => convert::<bool>(&self.data),
            DType::U8 => convert::<u8>(&self.data),
            DType::U32 => convert::<u32>(&self.data),
            DType::U64 => convert::<u64>(&self.data),
            DType::I32 => convert::<i32>(&self.data),
            DType::I64 => convert::<i64>(&self.data),
            DType::F16 => convert::<half::f16>(&self.data),
            DType::BF16 => convert::<half::bf16>(&self.data),
            DType::F32 => convert::<f32>(&self.data),
            DType::F64 => convert::<f64>(&self.data),
        }
    }

    /// The same data with other dimensions of equal element count.
    pub fn reshape(self, dims: &[i64]) -> Result<Self, TensorError> {
        Self::from_bytes(self.dtype, dims, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_typed_values() {
        let tensor = HostTensor::from_slice(&[2, 2], &[1.5f32, -2.0, 3.25, 0.0]).unwrap();
        assert_eq!(tensor.to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.25, 0.0]);
        assert_eq!(tensor.to_f64_vec(), vec![1.5, -2.0, 3.25, 0.0]);
        assert!(matches!(tensor.to_vec::<i32>(), Err(TensorError::DTypeMismatch { .. })));
        let flags = HostTensor::from_slice(&[3], &[true, false, true]).unwrap();
        assert_eq!(flags.to_vec::<bool>().unwrap(), vec![true, false, true]);
    }

    #[test]
    fn rejects_wrong_byte_count() {
        let error = HostTensor::from_slice(&[3], &[1i32, 2]).unwrap_err();
        assert!(error.to_string().contains("holds 3 i32 elements"), "{error}");
        assert!(HostTensor::zeros(DType::F32, &[-1]).is_err());
    }
}
