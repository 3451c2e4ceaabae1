//! Reductions: sum, max, min, prod over chosen dimensions, a general region form over
//! several operands, and argmax/argmin built on it.

use std::panic::Location;
use std::rc::Rc;

use crate::dtype::DType;
use crate::hlo::emit::Emitter;
use crate::hlo::graph::{add_node, innermost_builder, Region, Value};
use crate::hlo::op::{check, single_result, EmitNode, Operation, VjpNode};
use crate::hlo::ops::shape::usize_array;
use crate::hlo::types::TensorType;
use crate::hlo::{HloError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ReduceKind {
    Sum,
    Max,
    Min,
    Prod,
}

impl ReduceKind {
    fn combiner(self) -> &'static str {
        match self {
            ReduceKind::Sum => "stablehlo.add",
            ReduceKind::Max => "stablehlo.maximum",
            ReduceKind::Min => "stablehlo.minimum",
            ReduceKind::Prod => "stablehlo.multiply",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "reduce_sum",
            ReduceKind::Max => "reduce_max",
            ReduceKind::Min => "reduce_min",
            ReduceKind::Prod => "reduce_prod",
        }
    }

    /// The identity of the combiner for `dtype`.
    fn identity(self, dtype: DType) -> f64 {
        match (self, dtype.is_float()) {
            (ReduceKind::Sum, _) => 0.0,
            (ReduceKind::Prod, _) => 1.0,
            (ReduceKind::Max, true) => f64::NEG_INFINITY,
            (ReduceKind::Min, true) => f64::INFINITY,
            (ReduceKind::Max, false) => integer_bounds(dtype).0,
            (ReduceKind::Min, false) => integer_bounds(dtype).1,
        }
    }
}

fn integer_bounds(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::Pred => (0.0, 1.0),
        DType::U8 => (0.0, f64::from(u8::MAX)),
        DType::U32 => (0.0, f64::from(u32::MAX)),
        DType::U64 => (0.0, u64::MAX as f64),
        DType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        DType::I64 => (i64::MIN as f64, i64::MAX as f64),
        _ => (f64::NEG_INFINITY, f64::INFINITY),
    }
}

fn list(values: &[usize]) -> String {
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn reduced_dims(dims: &[i64], reduced: &[usize]) -> Vec<i64> {
    dims.iter().enumerate().filter(|(d, _)| !reduced.contains(d)).map(|(_, &size)| size).collect()
}

/// The dimensions of the input that remain after reducing `reduced`.
fn kept(rank: usize, reduced: &[usize]) -> Vec<usize> {
    (0..rank).filter(|d| !reduced.contains(d)).collect()
}

#[derive(Debug)]
pub(crate) struct Reduce {
    kind: ReduceKind,
    dimensions: Vec<usize>,
}

impl Operation for Reduce {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = stablehlo.reduce({} init: {}) applies {} across dimensions = {} : {}",
            node.result,
            node.inputs[0],
            node.inputs[1],
            self.kind.combiner(),
            list(&self.dimensions),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None, None]) };
        let x = &node.inputs[0];
        let y = &node.outputs[0];
        let keep = kept(x.rank(), &self.dimensions);
        let spread = |v: &Value| v.broadcast_in_dim(x.dims(), &keep);
        let gradient = match self.kind {
            ReduceKind::Sum => spread(ct),
            ReduceKind::Max | ReduceKind::Min => {
                // The gradient goes to the chosen elements, split evenly between ties (JAX).
                let chosen = x.eq(&spread(y)).select(&x.ones_like(), &x.zeros_like());
                let count = chosen.reduce_sum(&self.dimensions);
                &chosen * &spread(&(ct / &count))
            }
            ReduceKind::Prod => &spread(&(ct * y)) / x,
        };
        Ok(vec![Some(gradient), None])
    }
}

/// A reduction with a user region over several operands (and their initial values).
#[derive(Debug)]
pub(crate) struct ReduceRegion {
    dimensions: Vec<usize>,
    region: Region,
}

impl Operation for ReduceRegion {
    fn name(&self) -> &'static str {
        "reduce"
    }

    fn cse_key(&self) -> Option<String> {
        None
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.begin_line(&format!("{} = \"stablehlo.reduce\"({}) (", node.result, node.operands()));
        emitter.simple_region(&self.region);
        emitter.end_line(&format!(
            ") {{dimensions = {}}} : {}",
            usize_array(&self.dimensions),
            node.signature()
        ));
    }
}

impl Value {
    fn reduce_kind(
        &self,
        kind: ReduceKind,
        dimensions: &[usize],
        location: &'static Location<'static>,
    ) -> Value {
        let mut sorted = dimensions.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let valid = sorted.len() == dimensions.len() && sorted.iter().all(|&d| d < self.rank());
        check(self, valid, kind.name(), location, || {
            format!("invalid dimensions {dimensions:?} for {:?}", self.ty())
        });
        let init = self.builder().scalar_of(self.dtype(), kind.identity(self.dtype()));
        let output = self.ty().with_dims(&reduced_dims(self.dims(), &sorted));
        single_result(Reduce { kind, dimensions: sorted }, &[self, &init], output, location)
    }

    /// Sum over `dimensions`.
    #[track_caller]
    pub fn reduce_sum(&self, dimensions: &[usize]) -> Value {
        self.reduce_kind(ReduceKind::Sum, dimensions, Location::caller())
    }

    #[track_caller]
    pub fn reduce_max(&self, dimensions: &[usize]) -> Value {
        self.reduce_kind(ReduceKind::Max, dimensions, Location::caller())
    }

    #[track_caller]
    pub fn reduce_min(&self, dimensions: &[usize]) -> Value {
        self.reduce_kind(ReduceKind::Min, dimensions, Location::caller())
    }

    #[track_caller]
    pub fn reduce_prod(&self, dimensions: &[usize]) -> Value {
        self.reduce_kind(ReduceKind::Prod, dimensions, Location::caller())
    }

    /// Mean over `dimensions`.
    #[track_caller]
    pub fn reduce_mean(&self, dimensions: &[usize]) -> Value {
        let location = Location::caller();
        let count: i64 = dimensions.iter().filter_map(|&d| self.dims().get(d)).product();
        let sum = self.reduce_kind(ReduceKind::Sum, dimensions, location);
        &sum / count as f64
    }

    /// Sum of all elements (a scalar).
    #[track_caller]
    pub fn sum(&self) -> Value {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.reduce_kind(ReduceKind::Sum, &all, Location::caller())
    }

    /// Index of the largest element along `dimension` (the first one on ties; NaN counts as
    /// largest), as `index_dtype`.
    #[track_caller]
    pub fn argmax(&self, dimension: usize, index_dtype: DType) -> Value {
        self.arg_extremum(dimension, index_dtype, true, Location::caller())
    }

    /// Index of the smallest element along `dimension` (the first one on ties).
    #[track_caller]
    pub fn argmin(&self, dimension: usize, index_dtype: DType) -> Value {
        self.arg_extremum(dimension, index_dtype, false, Location::caller())
    }

    fn arg_extremum(
        &self,
        dimension: usize,
        index_dtype: DType,
        largest: bool,
        location: &'static Location<'static>,
    ) -> Value {
        let op = if largest { "argmax" } else { "argmin" };
        if !check(self, dimension < self.rank() && index_dtype.is_integer(), op, location, || {
            format!("dimension {dimension} / index type {index_dtype} invalid for {:?}", self.ty())
        }) {
            return self.clone();
        }
        let builder = self.builder();
        let indices = builder.iota(&self.ty().with_dtype(index_dtype), dimension);
        let value_init = builder.scalar_of(
            self.dtype(),
            if largest {
                ReduceKind::Max.identity(self.dtype())
            } else {
                ReduceKind::Min.identity(self.dtype())
            },
        );
        let index_init = builder.scalar_of(index_dtype, 0.0);
        let scalar = TensorType::scalar(self.dtype());
        let index_scalar = TensorType::scalar(index_dtype);
        let results = reduce_region_at(
            &[self.clone(), indices],
            &[value_init, index_init],
            &[dimension],
            &[scalar.clone(), index_scalar.clone(), scalar, index_scalar],
            |args| {
                let (a, a_index, b, b_index) = (&args[0], &args[1], &args[2], &args[3]);
                let better = if largest { a.gt(b) } else { a.lt(b) };
                // NaN wins, like JAX's argmax.
                let a_wins = better.or(&a.ne(a));
                let tie = a.eq(b);
                let value = a_wins.select(a, b);
                let index = tie.select(&a_index.min(b_index), &a_wins.select(a_index, b_index));
                vec![value, index]
            },
            location,
        );
        results[1].clone()
    }

    /// General reduction of `operands` (same dimensions) with `inits` (scalars) over
    /// `dimensions`: `body` receives (accumulators..., elements...) as scalars and returns the
    /// new accumulators. Not differentiable.
    #[track_caller]
    pub fn reduce(
        operands: &[Value],
        inits: &[Value],
        dimensions: &[usize],
        body: impl FnOnce(&[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        let location = Location::caller();
        let mut types: Vec<TensorType> = inits.iter().map(|init| init.ty().clone()).collect();
        types.extend(inits.iter().map(|init| init.ty().clone()));
        reduce_region_at(operands, inits, dimensions, &types, body, location)
    }
}

fn reduce_region_at(
    operands: &[Value],
    inits: &[Value],
    dimensions: &[usize],
    region_types: &[TensorType],
    body: impl FnOnce(&[Value]) -> Vec<Value>,
    location: &'static Location<'static>,
) -> Vec<Value> {
    let first = &operands[0];
    let valid = operands.len() == inits.len()
        && operands.iter().all(|o| o.dims() == first.dims())
        && inits
            .iter()
            .zip(operands)
            .all(|(init, operand)| init.rank() == 0 && init.dtype() == operand.dtype())
        && dimensions.iter().all(|&d| d < first.rank());
    if !check(first, valid, "reduce", location, || {
        let operand_types: Vec<_> = operands.iter().map(|o| o.ty().clone()).collect();
        let init_types: Vec<_> = inits.iter().map(|i| i.ty().clone()).collect();
        format!(
            "operands {operand_types:?} and inits {init_types:?} do not match over dimensions {dimensions:?}"
        )
    }) {
        return operands.to_vec();
    }
    let all: Vec<Value> = operands.iter().chain(inits).cloned().collect();
    let builder = innermost_builder(&all);
    let region = builder.region_at("reducer", region_types, |_, args| body(args), location);
    if !region.captures().is_empty() {
        builder.record_error(HloError::at(
            "reduce",
            "a reduction body cannot use values from outside it",
            location,
        ));
    }
    let mut sorted = dimensions.to_vec();
    sorted.sort_unstable();
    let output_dims = reduced_dims(first.dims(), &sorted);
    let outputs: Vec<TensorType> = operands.iter().map(|o| o.ty().with_dims(&output_dims)).collect();
    let mut inputs: Vec<&Value> = operands.iter().collect();
    inputs.extend(inits);
    add_node(&builder.graph, Rc::new(ReduceRegion { dimensions: sorted, region }), &inputs, outputs, location)
}
