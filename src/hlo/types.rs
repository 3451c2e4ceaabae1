//! Tensor types: an element type and a static shape.

use std::fmt;

use crate::dtype::DType;

/// Static dimensions of a tensor; rank 0 is a scalar.
pub type Dims = smallvec::SmallVec<[i64; 4]>;

/// The type of a value in a graph: element type and static dimensions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub dims: Dims,
}

impl TensorType {
    pub fn new(dtype: DType, dims: &[i64]) -> Self {
        TensorType { dtype, dims: Dims::from_slice(dims) }
    }

    pub fn scalar(dtype: DType) -> Self {
        TensorType { dtype, dims: Dims::new() }
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Number of elements (1 for a scalar).
    pub fn element_count(&self) -> i64 {
        self.dims.iter().product()
    }

    pub fn with_dtype(&self, dtype: DType) -> Self {
        TensorType { dtype, dims: self.dims.clone() }
    }

    pub fn with_dims(&self, dims: &[i64]) -> Self {
        TensorType::new(self.dtype, dims)
    }

    /// The StableHLO spelling, e.g. `tensor<2x3xf32>` or `tensor<f32>`.
    pub fn stablehlo(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        for dim in &self.dims {
            write!(f, "{dim}x")?;
        }
        write!(f, "{}>", self.dtype.stablehlo_name())
    }
}

impl fmt::Debug for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?}", self.dtype, self.dims.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spells_stablehlo_types() {
        assert_eq!(TensorType::new(DType::F32, &[2, 3]).to_string(), "tensor<2x3xf32>");
        assert_eq!(TensorType::scalar(DType::Pred).to_string(), "tensor<i1>");
        assert_eq!(format!("{:?}", TensorType::new(DType::BF16, &[4])), "bf16[4]");
    }
}
