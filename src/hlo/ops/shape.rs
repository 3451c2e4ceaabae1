//! Ops that move data without arithmetic: broadcast, reshape, transpose, slices, concat, pad,
//! reverse.

use std::panic::Location;

use crate::hlo::emit::Emitter;
use crate::hlo::graph::Value;
use crate::hlo::op::{check, single_result, EmitNode, Operation, VjpNode};
use crate::hlo::Result;

/// A dense `i64` array attribute (`array<i64: 1, 2>`, or `array<i64>` when empty).
pub(crate) fn array(values: &[i64]) -> String {
    if values.is_empty() {
        return "array<i64>".to_string();
    }
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("array<i64: {}>", items.join(", "))
}

pub(crate) fn usize_array(values: &[usize]) -> String {
    let values: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    array(&values)
}

#[derive(Debug)]
pub(crate) struct BroadcastInDim {
    dimensions: Vec<usize>,
}

impl Operation for BroadcastInDim {
    fn name(&self) -> &'static str {
        "broadcast_in_dim"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.broadcast_in_dim\"({}) {{broadcast_dimensions = {}}} : {}",
            node.result,
            node.inputs[0],
            usize_array(&self.dimensions),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None]) };
        let input = &node.inputs[0];
        let output_rank = ct.rank();
        // Sum over the new dimensions and over input dimensions of size 1 that were expanded.
        let mut summed: Vec<usize> = (0..output_rank).filter(|d| !self.dimensions.contains(d)).collect();
        for (input_dim, &output_dim) in self.dimensions.iter().enumerate() {
            if input.dims()[input_dim] == 1 && ct.dims()[output_dim] != 1 {
                summed.push(output_dim);
            }
        }
        summed.sort_unstable();
        let reduced = if summed.is_empty() { ct.clone() } else { ct.reduce_sum(&summed) };
        Ok(vec![Some(reduced.reshape(input.dims()))])
    }
}

#[derive(Debug)]
pub(crate) struct Reshape;

impl Operation for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.reshape\"({}) : {}",
            node.result,
            node.inputs[0],
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(vec![cotangents[0].as_ref().map(|ct| ct.reshape(node.inputs[0].dims()))])
    }
}

#[derive(Debug)]
pub(crate) struct Transpose {
    permutation: Vec<usize>,
}

impl Operation for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.transpose\"({}) {{permutation = {}}} : {}",
            node.result,
            node.inputs[0],
            usize_array(&self.permutation),
            node.signature()
        ));
    }

    fn vjp(&self, _: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let mut inverse = vec![0; self.permutation.len()];
        for (position, &dimension) in self.permutation.iter().enumerate() {
            inverse[dimension] = position;
        }
        Ok(vec![cotangents[0].as_ref().map(|ct| ct.transpose(&inverse))])
    }
}

#[derive(Debug)]
pub(crate) struct Slice {
    start: Vec<i64>,
    limit: Vec<i64>,
    strides: Vec<i64>,
}

impl Operation for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.slice\"({}) {{start_indices = {}, limit_indices = {}, strides = {}}} : {}",
            node.result,
            node.inputs[0],
            array(&self.start),
            array(&self.limit),
            array(&self.strides),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None]) };
        let input = &node.inputs[0];
        let mut high = Vec::with_capacity(self.start.len());
        for (axis, &size) in ct.dims().iter().enumerate() {
            let last = if size == 0 {
                self.start[axis]
            } else {
                self.start[axis] + (size - 1) * self.strides[axis] + 1
            };
            high.push(input.dims()[axis] - last);
        }
        let interior: Vec<i64> = self.strides.iter().map(|stride| stride - 1).collect();
        Ok(vec![Some(ct.pad(&ct.scalar_like(0.0), &self.start, &high, &interior))])
    }
}

#[derive(Debug)]
pub(crate) struct DynamicSlice {
    sizes: Vec<i64>,
}

impl Operation for DynamicSlice {
    fn name(&self) -> &'static str {
        "dynamic_slice"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.dynamic_slice\"({}) {{slice_sizes = {}}} : {}",
            node.result,
            node.operands(),
            array(&self.sizes),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None]) };
        let input = &node.inputs[0];
        let starts = &node.inputs[1..];
        Ok(vec![Some(input.zeros_like().dynamic_update_slice(ct, starts))])
    }
}

#[derive(Debug)]
pub(crate) struct DynamicUpdateSlice;

impl Operation for DynamicUpdateSlice {
    fn name(&self) -> &'static str {
        "dynamic_update_slice"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.dynamic_update_slice\"({}) : {}",
            node.result,
            node.operands(),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None, None]) };
        let update = &node.inputs[1];
        let starts = &node.inputs[2..];
        let operand_ct = ct.dynamic_update_slice(&update.zeros_like(), starts);
        let update_ct = ct.dynamic_slice(starts, update.dims());
        Ok(vec![Some(operand_ct), Some(update_ct)])
    }
}

#[derive(Debug)]
pub(crate) struct Concatenate {
    dimension: usize,
}

impl Operation for Concatenate {
    fn name(&self) -> &'static str {
        "concatenate"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.concatenate\"({}) {{dimension = {} : i64}} : {}",
            node.result,
            node.operands(),
            self.dimension,
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None; node.inputs.len()]) };
        let mut offset = 0;
        let mut pieces = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            let size = input.dims()[self.dimension];
            pieces.push(Some(ct.slice_axis(self.dimension, offset, offset + size)));
            offset += size;
        }
        Ok(pieces)
    }
}

#[derive(Debug)]
pub(crate) struct Pad {
    low: Vec<i64>,
    high: Vec<i64>,
    interior: Vec<i64>,
}

impl Operation for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.pad\"({}) {{edge_padding_low = {}, edge_padding_high = {}, interior_padding = {}}} : {}",
            node.result,
            node.operands(),
            array(&self.low),
            array(&self.high),
            array(&self.interior),
            node.signature()
        ));
    }

    fn vjp(&self, _: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None, None]) };
        let limit: Vec<i64> = ct.dims().iter().zip(&self.high).map(|(size, high)| size - high).collect();
        let strides: Vec<i64> = self.interior.iter().map(|interior| interior + 1).collect();
        let operand_ct = ct.slice(&self.low, &limit, &strides);
        let all: Vec<usize> = (0..ct.rank()).collect();
        let padding_ct = &ct.reduce_sum(&all) - &operand_ct.reduce_sum(&all);
        Ok(vec![Some(operand_ct), Some(padding_ct)])
    }
}

#[derive(Debug)]
pub(crate) struct Reverse {
    dimensions: Vec<usize>,
}

impl Operation for Reverse {
    fn name(&self) -> &'static str {
        "reverse"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.reverse\"({}) {{dimensions = {}}} : {}",
            node.result,
            node.inputs[0],
            usize_array(&self.dimensions),
            node.signature()
        ));
    }

    fn vjp(&self, _: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(vec![cotangents[0].as_ref().map(|ct| ct.reverse(&self.dimensions))])
    }
}

fn is_permutation(values: &[usize], rank: usize) -> bool {
    let mut seen = vec![false; rank];
    values.len() == rank && values.iter().all(|&v| v < rank && !std::mem::replace(&mut seen[v], true))
}

impl Value {
    pub(crate) fn broadcast_in_dim_at(
        &self,
        dims: &[i64],
        dimensions: &[usize],
        location: &'static Location<'static>,
    ) -> Value {
        let valid = dimensions.len() == self.rank()
            && dimensions.windows(2).all(|pair| pair[0] < pair[1])
            && dimensions.iter().enumerate().all(|(input_dim, &output_dim)| {
                output_dim < dims.len()
                    && (self.dims()[input_dim] == 1 || self.dims()[input_dim] == dims[output_dim])
            });
        check(self, valid, "broadcast_in_dim", location, || {
            format!("cannot broadcast {:?} to {dims:?} along dimensions {dimensions:?}", self.ty())
        });
        single_result(
            BroadcastInDim { dimensions: dimensions.to_vec() },
            &[self],
            self.ty().with_dims(dims),
            location,
        )
    }

    /// Broadcasts to `dims`: input dimension `i` becomes output dimension `dimensions[i]`
    /// (increasing); input dimensions of size 1 may expand.
    #[track_caller]
    pub fn broadcast_in_dim(&self, dims: &[i64], dimensions: &[usize]) -> Value {
        self.broadcast_in_dim_at(dims, dimensions, Location::caller())
    }

    /// NumPy-style broadcast to `dims`: dimensions align from the right.
    #[track_caller]
    pub fn broadcast_to(&self, dims: &[i64]) -> Value {
        let location = Location::caller();
        if self.dims() == dims {
            return self.clone();
        }
        let offset = dims.len().saturating_sub(self.rank());
        let dimensions: Vec<usize> = (offset..dims.len()).collect();
        self.broadcast_in_dim_at(dims, &dimensions, location)
    }

    /// Same elements, new dimensions (row-major).
    #[track_caller]
    pub fn reshape(&self, dims: &[i64]) -> Value {
        let location = Location::caller();
        if self.dims() == dims {
            return self.clone();
        }
        let count: i64 = dims.iter().product();
        check(
            self,
            dims.iter().all(|&d| d >= 0) && count == self.ty().element_count(),
            "reshape",
            location,
            || format!("cannot reshape {:?} to {dims:?}", self.ty()),
        );
        single_result(Reshape, &[self], self.ty().with_dims(dims), location)
    }

    /// Output dimension `i` is input dimension `permutation[i]`.
    #[track_caller]
    pub fn transpose(&self, permutation: &[usize]) -> Value {
        let location = Location::caller();
        if !check(self, is_permutation(permutation, self.rank()), "transpose", location, || {
            format!("{permutation:?} is not a permutation of the dimensions of {:?}", self.ty())
        }) {
            return self.clone();
        }
        if permutation.iter().enumerate().all(|(i, &p)| i == p) {
            return self.clone();
        }
        let dims: Vec<i64> = permutation.iter().map(|&p| self.dims()[p]).collect();
        single_result(
            Transpose { permutation: permutation.to_vec() },
            &[self],
            self.ty().with_dims(&dims),
            location,
        )
    }

    /// Static slice `[start, limit)` with `strides` per dimension.
    #[track_caller]
    pub fn slice(&self, start: &[i64], limit: &[i64], strides: &[i64]) -> Value {
        let location = Location::caller();
        let rank = self.rank();
        let valid = start.len() == rank
            && limit.len() == rank
            && strides.len() == rank
            && (0..rank).all(|d| {
                0 <= start[d] && start[d] <= limit[d] && limit[d] <= self.dims()[d] && strides[d] >= 1
            });
        if !check(self, valid, "slice", location, || {
            format!("invalid slice start {start:?} limit {limit:?} strides {strides:?} of {:?}", self.ty())
        }) {
            return self.clone();
        }
        let dims: Vec<i64> = (0..rank).map(|d| (limit[d] - start[d] + strides[d] - 1) / strides[d]).collect();
        single_result(
            Slice { start: start.to_vec(), limit: limit.to_vec(), strides: strides.to_vec() },
            &[self],
            self.ty().with_dims(&dims),
            location,
        )
    }

    /// `[start, limit)` along one dimension, everything along the others.
    #[track_caller]
    pub fn slice_axis(&self, dimension: usize, start: i64, limit: i64) -> Value {
        let location = Location::caller();
        if !check(self, dimension < self.rank(), "slice", location, || {
            format!("dimension {dimension} out of range for {:?}", self.ty())
        }) {
            return self.clone();
        }
        let mut starts = vec![0; self.rank()];
        let mut limits = self.dims().to_vec();
        starts[dimension] = start;
        limits[dimension] = limit;
        let strides = vec![1; self.rank()];
        let valid = 0 <= start && start <= limit && limit <= self.dims()[dimension];
        if !check(self, valid, "slice", location, || {
            format!("invalid range [{start}, {limit}) of dimension {dimension} of {:?}", self.ty())
        }) {
            return self.clone();
        }
        let dims: Vec<i64> = (0..self.rank()).map(|d| limits[d] - starts[d]).collect();
        single_result(
            Slice { start: starts, limit: limits, strides },
            &[self],
            self.ty().with_dims(&dims),
            location,
        )
    }

    /// A slice of `sizes` starting at runtime indices `starts` (one integer scalar per
    /// dimension); starts are clamped so the slice stays in bounds, as in XLA.
    #[track_caller]
    pub fn dynamic_slice(&self, starts: &[Value], sizes: &[i64]) -> Value {
        let location = Location::caller();
        let valid = starts.len() == self.rank()
            && sizes.len() == self.rank()
            && starts
                .iter()
                .all(|s| s.rank() == 0 && s.dtype().is_integer() && s.dtype() == starts[0].dtype())
            && sizes.iter().zip(self.dims()).all(|(&size, &dim)| 0 <= size && size <= dim);
        check(self, valid, "dynamic_slice", location, || {
            let start_types: Vec<_> = starts.iter().map(|s| s.ty().clone()).collect();
            format!("invalid starts {start_types:?} / sizes {sizes:?} for {:?}", self.ty())
        });
        let mut inputs = vec![self];
        inputs.extend(starts);
        single_result(DynamicSlice { sizes: sizes.to_vec() }, &inputs, self.ty().with_dims(sizes), location)
    }

    /// Writes `update` into `self` at runtime indices `starts` (clamped as in XLA).
    #[track_caller]
    pub fn dynamic_update_slice(&self, update: &Value, starts: &[Value]) -> Value {
        let location = Location::caller();
        let valid = update.dtype() == self.dtype()
            && update.rank() == self.rank()
            && starts.len() == self.rank()
            && starts
                .iter()
                .all(|s| s.rank() == 0 && s.dtype().is_integer() && s.dtype() == starts[0].dtype())
            && update.dims().iter().zip(self.dims()).all(|(&size, &dim)| size <= dim);
        check(self, valid, "dynamic_update_slice", location, || {
            let start_types: Vec<_> = starts.iter().map(|s| s.ty().clone()).collect();
            format!("cannot write {:?} into {:?} at {start_types:?}", update.ty(), self.ty())
        });
        let mut inputs = vec![self, update];
        inputs.extend(starts);
        single_result(DynamicUpdateSlice, &inputs, self.ty().clone(), location)
    }

    /// `self[index]` along dimension 0 at a runtime index, keeping the remaining dimensions.
    #[track_caller]
    pub fn index_axis0(&self, index: &Value) -> Value {
        let location = Location::caller();
        if !check(self, self.rank() >= 1, "index", location, || {
            format!("cannot index a scalar {:?}", self.ty())
        }) {
            return self.clone();
        }
        let zero = self.builder().scalar_of(index.dtype(), 0.0);
        let mut starts = vec![index.clone()];
        starts.extend(std::iter::repeat_n(zero, self.rank() - 1));
        let mut sizes = self.dims().to_vec();
        sizes[0] = 1;
        self.dynamic_slice(&starts, &sizes).reshape(&self.dims()[1..])
    }

    /// Writes `update` (one slice of dimension 0) at a runtime `index`.
    #[track_caller]
    pub fn update_axis0(&self, update: &Value, index: &Value) -> Value {
        let zero = self.builder().scalar_of(index.dtype(), 0.0);
        let mut starts = vec![index.clone()];
        starts.extend(std::iter::repeat_n(zero, self.rank().saturating_sub(1)));
        let mut dims = vec![1];
        dims.extend_from_slice(update.dims());
        self.dynamic_update_slice(&update.reshape(&dims), &starts)
    }

    /// Joins `values` along `dimension`.
    #[track_caller]
    pub fn concatenate(values: &[Value], dimension: usize) -> Value {
        let location = Location::caller();
        let first = &values[0];
        let valid = values.iter().all(|v| {
            v.dtype() == first.dtype()
                && v.rank() == first.rank()
                && dimension < v.rank()
                && (0..v.rank()).all(|d| d == dimension || v.dims()[d] == first.dims()[d])
        });
        check(first, valid, "concatenate", location, || {
            let types: Vec<_> = values.iter().map(|v| v.ty().clone()).collect();
            format!("cannot join {types:?} along dimension {dimension}")
        });
        let mut dims = first.dims().to_vec();
        if dimension < dims.len() {
            dims[dimension] = values.iter().map(|v| v.dims().get(dimension).copied().unwrap_or(0)).sum();
        }
        let inputs: Vec<&Value> = values.iter().collect();
        single_result(Concatenate { dimension }, &inputs, first.ty().with_dims(&dims), location)
    }

    /// Pads with `value` (a scalar): `low`/`high` elements at the edges (non-negative) and
    /// `interior` between elements, per dimension.
    #[track_caller]
    pub fn pad(&self, value: &Value, low: &[i64], high: &[i64], interior: &[i64]) -> Value {
        let location = Location::caller();
        let rank = self.rank();
        let valid = value.rank() == 0
            && value.dtype() == self.dtype()
            && low.len() == rank
            && high.len() == rank
            && interior.len() == rank
            && (0..rank).all(|d| low[d] >= 0 && high[d] >= 0 && interior[d] >= 0);
        check(self, valid, "pad", location, || {
            format!(
                "invalid padding low {low:?} high {high:?} interior {interior:?} with {:?} for {:?}",
                value.ty(),
                self.ty()
            )
        });
        let dims: Vec<i64> = (0..rank)
            .map(|d| {
                let size = self.dims()[d];
                let interior = interior.get(d).copied().unwrap_or(0);
                low.get(d).copied().unwrap_or(0)
                    + size
                    + (size - 1).max(0) * interior
                    + high.get(d).copied().unwrap_or(0)
            })
            .collect();
        single_result(
            Pad { low: low.to_vec(), high: high.to_vec(), interior: interior.to_vec() },
            &[self, value],
            self.ty().with_dims(&dims),
            location,
        )
    }

    /// Reverses the order of elements along `dimensions`.
    #[track_caller]
    pub fn reverse(&self, dimensions: &[usize]) -> Value {
        let location = Location::caller();
        check(self, dimensions.iter().all(|&d| d < self.rank()), "reverse", location, || {
            format!("dimensions {dimensions:?} out of range for {:?}", self.ty())
        });
        single_result(Reverse { dimensions: dimensions.to_vec() }, &[self], self.ty().clone(), location)
    }

    /// Inserts a dimension of size 1 at `dimension`.
    #[track_caller]
    pub fn expand_dims(&self, dimension: usize) -> Value {
        let mut dims = self.dims().to_vec();
        dims.insert(dimension.min(dims.len()), 1);
        self.reshape(&dims)
    }

    /// Flattens to one dimension.
    #[track_caller]
    pub fn flatten(&self) -> Value {
        self.reshape(&[self.ty().element_count()])
    }
}
