//! Ops about evaluation rather than arithmetic: stop_gradient, optimization_barrier,
//! sharding constraints, and random bits (with uniform/normal samplers built on them).

use std::panic::Location;
use std::rc::Rc;

use crate::dtype::DType;
use crate::hlo::emit::Emitter;
use crate::hlo::graph::{add_node, innermost_builder, Value};
use crate::hlo::op::{check, single_result, EmitNode, Operation, VjpNode};
use crate::hlo::sharding::{Partitioner, Sharding};
use crate::hlo::types::TensorType;
use crate::hlo::Result;

#[derive(Debug)]
pub(crate) struct StopGradient;

impl Operation for StopGradient {
    fn name(&self) -> &'static str {
        "stop_gradient"
    }
    fn emit(&self, _: &mut Emitter, _: &EmitNode) {
        unreachable!("stop_gradient forwards its input")
    }
    fn forwards_input(&self) -> Option<usize> {
        Some(0)
    }
    fn vjp(&self, _: &VjpNode, _: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(vec![None])
    }
}

#[derive(Debug)]
pub(crate) struct OptimizationBarrier;

impl Operation for OptimizationBarrier {
    fn name(&self) -> &'static str {
        "optimization_barrier"
    }
    fn cse_key(&self) -> Option<String> {
        None
    }
    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.optimization_barrier\"({}) : {}",
            node.result,
            node.operands(),
            node.signature()
        ));
    }
    fn vjp(&self, _: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(cotangents.to_vec())
    }
}

#[derive(Debug)]
pub(crate) struct ShardingConstraint {
    sharding: Sharding,
}

impl Operation for ShardingConstraint {
    fn name(&self) -> &'static str {
        "sharding_constraint"
    }
    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        let line = match emitter.options.partitioner {
            Partitioner::Gspmd => format!(
                "{} = \"stablehlo.custom_call\"({}) {{call_target_name = \"Sharding\", mhlo.sharding = \"{}\"}} : {}",
                node.result,
                node.inputs[0],
                self.sharding.gspmd(emitter.mesh.as_ref()),
                node.signature()
            ),
            Partitioner::Shardy => format!(
                "{} = sdy.sharding_constraint {} <@mesh, {}> : {}",
                node.result,
                node.inputs[0],
                self.sharding.shardy_dims(node.output().rank()),
                node.output()
            ),
        };
        emitter.line(&line);
    }
    fn vjp(&self, _: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(vec![cotangents[0].as_ref().map(|ct| ct.with_sharding(&self.sharding))])
    }
}

/// Random-bit algorithms of `rng_bit_generator`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RngAlgorithm {
    /// The backend's choice (Philox on CPU and GPU).
    #[default]
    Default,
    ThreeFry,
    Philox,
}

#[derive(Debug)]
pub(crate) struct RngBitGenerator {
    algorithm: RngAlgorithm,
}

impl Operation for RngBitGenerator {
    fn name(&self) -> &'static str {
        "rng_bit_generator"
    }
    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        let algorithm = match self.algorithm {
            RngAlgorithm::Default => "DEFAULT",
            RngAlgorithm::ThreeFry => "THREE_FRY",
            RngAlgorithm::Philox => "PHILOX",
        };
        emitter.line(&format!(
            "{} = \"stablehlo.rng_bit_generator\"({}) {{rng_algorithm = #stablehlo<rng_algorithm {algorithm}>}} : {}",
            node.result,
            node.inputs[0],
            node.signature()
        ));
    }
    fn vjp(&self, _: &VjpNode, _: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(vec![None])
    }
}

impl Value {
    /// The same value, with no gradient flowing through it.
    #[track_caller]
    pub fn stop_gradient(&self) -> Value {
        single_result(StopGradient, &[self], self.ty().clone(), Location::caller())
    }

    /// Pins the layout of an intermediate value on the function's mesh.
    #[track_caller]
    pub fn with_sharding(&self, sharding: &Sharding) -> Value {
        let location = Location::caller();
        let mesh = self.graph.borrow().mesh.clone();
        if let Err(mut error) = sharding.check(self.ty(), mesh.as_ref(), "sharding_constraint") {
            error.location = location;
            self.builder().record_error(error);
        }
        single_result(ShardingConstraint { sharding: sharding.clone() }, &[self], self.ty().clone(), location)
    }

    /// Random bits: from a `u64[2]` generator state, returns the next state and a tensor of
    /// `ty` (an unsigned integer type) filled with random bits.
    #[track_caller]
    pub fn rng_bit_generator(&self, ty: &TensorType, algorithm: RngAlgorithm) -> (Value, Value) {
        let location = Location::caller();
        let valid = self.dtype() == DType::U64 && self.dims() == [2] && ty.dtype.is_unsigned_integer();
        check(self, valid, "rng_bit_generator", location, || {
            format!("needs a u64[2] state and an unsigned output type, got state {:?} and {ty:?}", self.ty())
        });
        let outputs = add_node(
            &self.graph,
            Rc::new(RngBitGenerator { algorithm }),
            &[self],
            vec![self.ty().clone(), ty.clone()],
            location,
        );
        (outputs[0].clone(), outputs[1].clone())
    }

    /// Uniform samples in `[0, 1)` of `ty` (a float type) from a `u64[2]` generator state;
    /// returns the next state too. Uses 23 random mantissa bits (f32 precision).
    #[track_caller]
    pub fn random_uniform(&self, ty: &TensorType) -> (Value, Value) {
        let (state, bits) = self.rng_bit_generator(&ty.with_dtype(DType::U32), RngAlgorithm::Default);
        let builder = self.builder();
        let mantissa = bits.shift_right_logical(&builder.scalar_of(DType::U32, 9.0));
        let one_to_two = mantissa
            .or(&builder.scalar_of(DType::U32, f64::from(0x3F80_0000u32)))
            .bitcast_convert(DType::F32);
        let unit = &one_to_two - 1.0;
        (state, unit.convert(ty.dtype))
    }

    /// Standard normal samples of `ty` (Box-Muller over two uniform draws); returns the next
    /// generator state too.
    #[track_caller]
    pub fn random_normal(&self, ty: &TensorType) -> (Value, Value) {
        let f32_ty = ty.with_dtype(DType::F32);
        let (state, u1) = self.random_uniform(&f32_ty);
        let (state, u2) = state.random_uniform(&f32_ty);
        // 1 - u1 lies in (0, 1], so the logarithm is finite.
        let radius = ((1.0 - &u1).log() * -2.0).sqrt();
        let angle = &u2 * (2.0 * std::f64::consts::PI);
        (state, (&radius * &angle.cos()).convert(ty.dtype))
    }
}

/// Keeps XLA from moving computation across this point (for example, so rematerialized
/// values are recomputed where they are needed rather than shared with the forward pass).
#[track_caller]
pub fn optimization_barrier(values: &[Value]) -> Vec<Value> {
    let location = Location::caller();
    if values.is_empty() {
        return Vec::new();
    }
    let inputs: Vec<&Value> = values.iter().collect();
    let types = values.iter().map(|v| v.ty().clone()).collect();
    add_node(&innermost_builder(values).graph, Rc::new(OptimizationBarrier), &inputs, types, location)
}
