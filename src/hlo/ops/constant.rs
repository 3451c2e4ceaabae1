//! Constants (scalar and array) and iota.

use std::fmt;
use std::panic::Location;
use std::rc::Rc;

use crate::dtype::{DType, Element};
use crate::hlo::emit::{dense_literal, Emitter};
use crate::hlo::graph::{add_node, Builder, Value};
use crate::hlo::op::{EmitNode, Operation, VjpNode};
use crate::hlo::types::TensorType;
use crate::hlo::{HloError, Result};
use crate::tensor::HostTensor;

/// Constants larger than this are never shared (their key would cost more than it saves).
const SHARED_CONSTANT_BYTES: usize = 4096;

pub(crate) struct Constant {
    ty: TensorType,
    data: Rc<[u8]>,
}

impl fmt::Debug for Constant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "constant {:?} ", self.ty)?;
        for byte in self.data.iter().take(SHARED_CONSTANT_BYTES) {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl Operation for Constant {
    fn name(&self) -> &'static str {
        "constant"
    }
    fn cse_key(&self) -> Option<String> {
        (self.data.len() <= SHARED_CONSTANT_BYTES).then(|| format!("{self:?}"))
    }
    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = stablehlo.constant dense<{}> : {}",
            node.result,
            dense_literal(&self.ty, &self.data),
            self.ty
        ));
    }
    fn vjp(&self, _: &VjpNode, _: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(Vec::new())
    }
}

#[derive(Debug)]
pub(crate) struct Iota {
    dimension: usize,
}

impl Operation for Iota {
    fn name(&self) -> &'static str {
        "iota"
    }
    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.iota\"() {{iota_dimension = {} : i64}} : () -> {}",
            node.result,
            self.dimension,
            node.output()
        ));
    }
    fn vjp(&self, _: &VjpNode, _: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(Vec::new())
    }
}

impl Builder {
    fn constant_node(&self, ty: TensorType, data: Rc<[u8]>, location: &'static Location<'static>) -> Value {
        let op = Rc::new(Constant { ty: ty.clone(), data });
        add_node(&self.graph, op, &[], vec![ty], location).pop().expect("one result")
    }

    /// A constant holding `tensor`.
    #[track_caller]
    pub fn constant(&self, tensor: &HostTensor) -> Value {
        let ty = TensorType::new(tensor.dtype(), tensor.dims());
        self.constant_node(ty, tensor.bytes().into(), Location::caller())
    }

    /// A rank-0 constant of the Rust value's type.
    #[track_caller]
    pub fn scalar<T: Element>(&self, value: T) -> Value {
        self.constant(&HostTensor::scalar(value))
    }

    /// A rank-0 constant of `dtype` with `value` converted to it.
    #[track_caller]
    pub fn scalar_of(&self, dtype: DType, value: f64) -> Value {
        self.constant_node(TensorType::scalar(dtype), dtype.encode_f64(value).into(), Location::caller())
    }

    /// A tensor of type `ty` with every element `value`, built as a broadcast scalar so that
    /// it costs nothing in the program text.
    #[track_caller]
    pub fn full(&self, ty: &TensorType, value: f64) -> Value {
        let scalar = self.scalar_of(ty.dtype, value);
        if ty.rank() == 0 {
            scalar
        } else {
            scalar.broadcast_in_dim(&ty.dims, &[])
        }
    }

    #[track_caller]
    pub fn zeros(&self, ty: &TensorType) -> Value {
        self.full(ty, 0.0)
    }

    #[track_caller]
    pub fn ones(&self, ty: &TensorType) -> Value {
        self.full(ty, 1.0)
    }

    /// Counts `0, 1, 2, ...` along `dimension` of a tensor of type `ty`.
    #[track_caller]
    pub fn iota(&self, ty: &TensorType, dimension: usize) -> Value {
        let location = Location::caller();
        if dimension >= ty.rank() {
            self.record_error(HloError::at(
                "iota",
                format!("dimension {dimension} out of range for {ty:?}"),
                location,
            ));
        }
        add_node(&self.graph, Rc::new(Iota { dimension }), &[], vec![ty.clone()], location)
            .pop()
            .expect("one result")
    }
}

impl Value {
    /// A rank-0 constant of this value's dtype.
    #[track_caller]
    pub fn scalar_like(&self, value: f64) -> Value {
        self.builder().scalar_of(self.dtype(), value)
    }

    /// A tensor of this value's type filled with `value`.
    #[track_caller]
    pub fn full_like(&self, value: f64) -> Value {
        self.builder().full(&self.ty, value)
    }

    #[track_caller]
    pub fn zeros_like(&self) -> Value {
        self.full_like(0.0)
    }

    #[track_caller]
    pub fn ones_like(&self) -> Value {
        self.full_like(1.0)
    }
}
