//! Gather and scatter (StableHLO semantics), with `take` (embedding lookup) and
//! `scatter_add` (its gradient) on top.

use std::panic::Location;
use std::rc::Rc;

use crate::hlo::emit::Emitter;
use crate::hlo::graph::{add_node, innermost_builder, Region, Value};
use crate::hlo::op::{check, EmitNode, Operation, VjpNode};
use crate::hlo::ops::shape::array;
use crate::hlo::types::TensorType;
use crate::hlo::{HloError, Result};

/// Dimension numbers of [`Value::gather`] (the StableHLO spec's names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GatherDimensions {
    /// Output dimensions that hold the slice (offset) dimensions.
    pub offset_dims: Vec<usize>,
    /// Operand dimensions whose slice size is 1 and that the output drops.
    pub collapsed_slice_dims: Vec<usize>,
    /// Operand dimension addressed by each component of an index vector.
    pub start_index_map: Vec<usize>,
    /// The dimension of `indices` that holds index vectors (== rank: scalar indices).
    pub index_vector_dim: usize,
}

/// Dimension numbers of [`Value::scatter`] (the StableHLO spec's names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScatterDimensions {
    /// Dimensions of `updates` that hold the window.
    pub update_window_dims: Vec<usize>,
    /// Operand dimensions of window size 1 absent from `updates`.
    pub inserted_window_dims: Vec<usize>,
    /// Operand dimension addressed by each component of an index vector.
    pub scatter_dims_to_operand_dims: Vec<usize>,
    /// The dimension of `indices` that holds index vectors (== rank: scalar indices).
    pub index_vector_dim: usize,
}

fn list(values: &[usize]) -> String {
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// `name = [..]` fields, leaving out empty lists (the parser's defaults).
fn fields(entries: &[(&str, &[usize])], index_vector_dim: usize) -> String {
    let mut parts: Vec<String> = entries
        .iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(name, values)| format!("{name} = {}", list(values)))
        .collect();
    parts.push(format!("index_vector_dim = {index_vector_dim}"));
    parts.join(", ")
}

/// Dimensions of `indices` other than the index vector dimension (the batch dimensions).
fn batch_dims(indices: &TensorType, index_vector_dim: usize) -> Vec<i64> {
    indices.dims.iter().enumerate().filter(|(d, _)| *d != index_vector_dim).map(|(_, &size)| size).collect()
}

fn index_vector_size(indices: &TensorType, index_vector_dim: usize) -> i64 {
    if index_vector_dim == indices.rank() {
        1
    } else {
        indices.dims[index_vector_dim]
    }
}

#[derive(Debug)]
pub(crate) struct Gather {
    dimensions: GatherDimensions,
    slice_sizes: Vec<i64>,
}

impl Operation for Gather {
    fn name(&self) -> &'static str {
        "gather"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        let d = &self.dimensions;
        let numbers = fields(
            &[
                ("offset_dims", &d.offset_dims),
                ("collapsed_slice_dims", &d.collapsed_slice_dims),
                ("start_index_map", &d.start_index_map),
            ],
            d.index_vector_dim,
        );
        emitter.line(&format!(
            "{} = \"stablehlo.gather\"({}) {{dimension_numbers = #stablehlo.gather<{numbers}>, slice_sizes = {}, indices_are_sorted = false}} : {}",
            node.result,
            node.operands(),
            array(&self.slice_sizes),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None, None]) };
        let (operand, indices) = (&node.inputs[0], &node.inputs[1]);
        let d = &self.dimensions;
        let numbers = ScatterDimensions {
            update_window_dims: d.offset_dims.clone(),
            inserted_window_dims: d.collapsed_slice_dims.clone(),
            scatter_dims_to_operand_dims: d.start_index_map.clone(),
            index_vector_dim: d.index_vector_dim,
        };
        Ok(vec![Some(operand.zeros_like().scatter_add_with(indices, ct, &numbers)), None])
    }
}

/// What a scatter does where an update lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterMode {
    /// Adds the update to the operand element.
    Add,
    /// Replaces the operand element by the update.
    Replace,
}

#[derive(Debug)]
pub(crate) struct Scatter {
    dimensions: ScatterDimensions,
    mode: ScatterMode,
    combiner: Region,
}

impl Operation for Scatter {
    fn name(&self) -> &'static str {
        "scatter"
    }

    fn cse_key(&self) -> Option<String> {
        Some(format!("scatter {:?} {:?}", self.dimensions, self.mode))
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        let d = &self.dimensions;
        let numbers = fields(
            &[
                ("update_window_dims", &d.update_window_dims),
                ("inserted_window_dims", &d.inserted_window_dims),
                ("scatter_dims_to_operand_dims", &d.scatter_dims_to_operand_dims),
            ],
            d.index_vector_dim,
        );
        emitter.begin_line(&format!("{} = \"stablehlo.scatter\"({}) (", node.result, node.operands()));
        emitter.simple_region(&self.combiner);
        emitter.end_line(&format!(
            ") {{scatter_dimension_numbers = #stablehlo.scatter<{numbers}>, indices_are_sorted = false, unique_indices = false}} : {}",
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        if self.mode != ScatterMode::Add {
            return Err(HloError::at("scatter", "only scatter-add has a gradient rule", node.location));
        }
        let Some(ct) = &cotangents[0] else { return Ok(vec![None, None, None]) };
        let (indices, updates) = (&node.inputs[1], &node.inputs[2]);
        let d = &self.dimensions;
        let mut slice_sizes = Vec::with_capacity(ct.rank());
        let mut window = 0;
        for dim in 0..ct.rank() {
            if d.inserted_window_dims.contains(&dim) {
                slice_sizes.push(1);
            } else {
                slice_sizes.push(updates.dims()[d.update_window_dims[window]]);
                window += 1;
            }
        }
        let numbers = GatherDimensions {
            offset_dims: d.update_window_dims.clone(),
            collapsed_slice_dims: d.inserted_window_dims.clone(),
            start_index_map: d.scatter_dims_to_operand_dims.clone(),
            index_vector_dim: d.index_vector_dim,
        };
        Ok(vec![Some(ct.clone()), None, Some(ct.gather(indices, &numbers, &slice_sizes))])
    }
}

impl Value {
    /// StableHLO `gather`: slices of `slice_sizes` starting at the index vectors in `indices`
    /// (out-of-range starts are clamped, as in XLA).
    #[track_caller]
    pub fn gather(&self, indices: &Value, dimensions: &GatherDimensions, slice_sizes: &[i64]) -> Value {
        self.gather_at(indices, dimensions, slice_sizes, Location::caller())
    }

    fn gather_at(
        &self,
        indices: &Value,
        dimensions: &GatherDimensions,
        slice_sizes: &[i64],
        location: &'static Location<'static>,
    ) -> Value {
        let d = dimensions;
        let batch = batch_dims(indices.ty(), d.index_vector_dim);
        let offsets: Vec<i64> = (0..self.rank())
            .filter(|dim| !d.collapsed_slice_dims.contains(dim))
            .filter_map(|dim| slice_sizes.get(dim).copied())
            .collect();
        let output_rank = batch.len() + offsets.len();
        let valid = indices.dtype().is_integer()
            && d.index_vector_dim <= indices.rank()
            && slice_sizes.len() == self.rank()
            && slice_sizes.iter().zip(self.dims()).all(|(&size, &dim)| 0 <= size && size <= dim)
            && d.collapsed_slice_dims.iter().all(|&dim| dim < self.rank() && slice_sizes[dim] == 1)
            && index_vector_size(indices.ty(), d.index_vector_dim) == d.start_index_map.len() as i64
            && d.start_index_map.iter().all(|&dim| dim < self.rank())
            && d.offset_dims.len() == offsets.len()
            && d.offset_dims.windows(2).all(|pair| pair[0] < pair[1])
            && d.offset_dims.iter().all(|&dim| dim < output_rank);
        let ok = check(self, valid, "gather", location, || {
            format!(
                "cannot gather {slice_sizes:?} slices of {:?} at indices {:?} with {d:?}",
                self.ty(),
                indices.ty()
            )
        });
        let mut dims = Vec::with_capacity(output_rank);
        if ok {
            let (mut next_batch, mut next_offset) = (batch.iter(), offsets.iter());
            for dim in 0..output_rank {
                let size = if d.offset_dims.contains(&dim) { next_offset.next() } else { next_batch.next() };
                dims.push(*size.expect("counts checked above"));
            }
        }
        let op = Gather { dimensions: d.clone(), slice_sizes: slice_sizes.to_vec() };
        let builder = innermost_builder(&[self.clone(), indices.clone()]);
        add_node(&builder.graph, Rc::new(op), &[self, indices], vec![self.ty().with_dims(&dims)], location)
            .pop()
            .expect("one result")
    }

    /// StableHLO `scatter`: writes (or adds) the windows of `updates` at the index vectors in
    /// `indices`; returns the updated copy of `self`.
    #[track_caller]
    pub fn scatter(
        &self,
        indices: &Value,
        updates: &Value,
        dimensions: &ScatterDimensions,
        mode: ScatterMode,
    ) -> Value {
        self.scatter_at(indices, updates, dimensions, mode, Location::caller())
    }

    fn scatter_add_with(&self, indices: &Value, updates: &Value, dimensions: &ScatterDimensions) -> Value {
        self.scatter_at(indices, updates, dimensions, ScatterMode::Add, Location::caller())
    }

    fn scatter_at(
        &self,
        indices: &Value,
        updates: &Value,
        dimensions: &ScatterDimensions,
        mode: ScatterMode,
        location: &'static Location<'static>,
    ) -> Value {
        let d = dimensions;
        let batch = batch_dims(indices.ty(), d.index_vector_dim);
        let update_batch: Vec<i64> = (0..updates.rank())
            .filter(|dim| !d.update_window_dims.contains(dim))
            .map(|dim| updates.dims()[dim])
            .collect();
        let window_operand_dims: Vec<usize> =
            (0..self.rank()).filter(|dim| !d.inserted_window_dims.contains(dim)).collect();
        let valid = indices.dtype().is_integer()
            && updates.dtype() == self.dtype()
            && d.index_vector_dim <= indices.rank()
            && index_vector_size(indices.ty(), d.index_vector_dim)
                == d.scatter_dims_to_operand_dims.len() as i64
            && d.scatter_dims_to_operand_dims.iter().all(|&dim| dim < self.rank())
            && d.inserted_window_dims.iter().all(|&dim| dim < self.rank())
            && d.update_window_dims.len() == window_operand_dims.len()
            && d.update_window_dims.iter().all(|&dim| dim < updates.rank())
            && d.update_window_dims
                .iter()
                .zip(&window_operand_dims)
                .all(|(&update_dim, &operand_dim)| updates.dims()[update_dim] <= self.dims()[operand_dim])
            && update_batch == batch;
        check(self, valid, "scatter", location, || {
            format!(
                "cannot scatter {:?} into {:?} at indices {:?} with {d:?}",
                updates.ty(),
                self.ty(),
                indices.ty()
            )
        });
        let builder = innermost_builder(&[self.clone(), indices.clone(), updates.clone()]);
        let scalar = TensorType::scalar(self.dtype());
        let combiner = builder.region_at(
            "scatter_combiner",
            &[scalar.clone(), scalar],
            |_, args| match mode {
                ScatterMode::Add => vec![&args[0] + &args[1]],
                ScatterMode::Replace => vec![args[1].clone()],
            },
            location,
        );
        let op = Scatter { dimensions: d.clone(), mode, combiner };
        add_node(&builder.graph, Rc::new(op), &[self, indices, updates], vec![self.ty().clone()], location)
            .pop()
            .expect("one result")
    }

    /// Rows of `self` (along dimension 0) picked by integer `indices` of any shape: the result
    /// has dimensions `indices.dims ++ self.dims[1..]` (an embedding lookup).
    #[track_caller]
    pub fn take(&self, indices: &Value) -> Value {
        let location = Location::caller();
        if !check(self, self.rank() >= 1, "take", location, || {
            format!("cannot take rows of a scalar {:?}", self.ty())
        }) {
            return self.clone();
        }
        let index_rank = indices.rank();
        let numbers = GatherDimensions {
            offset_dims: (index_rank..index_rank + self.rank() - 1).collect(),
            collapsed_slice_dims: vec![0],
            start_index_map: vec![0],
            index_vector_dim: index_rank,
        };
        let mut slice_sizes = self.dims().to_vec();
        slice_sizes[0] = 1;
        self.gather_at(indices, &numbers, &slice_sizes, location)
    }

    /// Adds each of `updates` (dimensions `indices.dims ++ self.dims[1..]`) into the row of
    /// `self` that `indices` names; repeated indices accumulate. The gradient of [`Value::take`].
    #[track_caller]
    pub fn scatter_add_rows(&self, indices: &Value, updates: &Value) -> Value {
        let location = Location::caller();
        let index_rank = indices.rank();
        let numbers = ScatterDimensions {
            update_window_dims: (index_rank..index_rank + self.rank().saturating_sub(1)).collect(),
            inserted_window_dims: vec![0],
            scatter_dims_to_operand_dims: vec![0],
            index_vector_dim: index_rank,
        };
        self.scatter_at(indices, updates, &numbers, ScatterMode::Add, location)
    }
}
