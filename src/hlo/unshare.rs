//! Rewrites elementwise outputs so that they share no intermediate, only inputs: the shape
//! XLA's sibling multi-output fusion needs to compute them all in one loop.
//!
//! An optimizer update writes several tensors per parameter (the parameter and its moments)
//! from the same inputs, and the parameter reads the new moments. Built naively, the moments
//! are intermediates with two users. A backend that fuses without duplicating (XLA:CPU with
//! multi-output fusion) then writes them out and reads them back, and the update takes several
//! passes over memory. [`unshare_elementwise`] gives every output its own copy of the
//! elementwise computation it needs, starting from the shared inputs, so the copies are
//! siblings that read the same tensors and can be fused into one pass.
//!
//! Two copies of one expression are one node after our hash-consing and after XLA's CSE. Each
//! copy therefore multiplies its floating-point leaves by its own `1.0`, passed through an
//! `optimization_barrier` so that neither we nor XLA fold it. Multiplying by one is exact
//! (NaN, infinities and signed zeros included), so the results are bit for bit those of the
//! shared computation.

use std::collections::HashMap;
use std::rc::Rc;

use super::graph::{add_node, Value, ValueId};
use super::ops::misc::optimization_barrier;
use crate::dtype::DType;

/// The outputs, each rebuilt as its own elementwise computation from the non-elementwise
/// values it depends on (see the module documentation). Values that are not elementwise
/// results are returned as they are; so is everything when the graph has an error.
pub fn unshare_elementwise(outputs: &[Value]) -> Vec<Value> {
    let Some(first) = outputs.first() else { return Vec::new() };
    let graph = first.graph.clone();
    if graph.borrow().error.is_some() {
        return outputs.to_vec();
    }
    let elementwise = |value: &Value| {
        value.same_graph(first) && graph.borrow().nodes[value.id.node as usize].op.is_elementwise()
    };
    let count = outputs.iter().filter(|value| elementwise(value)).count();
    if count < 2 {
        return outputs.to_vec();
    }
    let one = first.builder().scalar(1.0f32);
    let ones = optimization_barrier(&vec![one; count]);
    let mut ones = ones.into_iter();
    outputs
        .iter()
        .map(|output| {
            if !elementwise(output) {
                return output.clone();
            }
            let one = ones.next().expect("one `1.0` per elementwise output");
            let mut copy = Copy { graph: &graph, dims: output.dims().to_vec(), one, built: HashMap::new() };
            copy.value(output)
        })
        .collect()
}

/// One output's copy of its elementwise computation.
struct Copy<'a> {
    graph: &'a super::graph::GraphRef,
    dims: Vec<i64>,
    one: Value,
    built: HashMap<ValueId, Value>,
}

impl Copy<'_> {
    fn value(&mut self, value: &Value) -> Value {
        if let Some(done) = self.built.get(&value.id) {
            return done.clone();
        }
        let (op, inputs, outputs, location) = {
            let graph = self.graph.borrow();
            let node = &graph.nodes[value.id.node as usize];
            (node.op.clone(), node.inputs.clone(), node.outputs.to_vec(), node.location)
        };
        let result = if op.is_elementwise() && value.dims() == self.dims.as_slice() {
            let inputs: Vec<Value> = inputs
                .iter()
                .map(|&id| {
                    let ty = self.graph.borrow().ty(id).clone();
                    self.value(&Value { graph: self.graph.clone(), id, ty })
                })
                .collect();
            let references: Vec<&Value> = inputs.iter().collect();
            add_node(self.graph, Rc::clone(&op), &references, outputs, location)
                .swap_remove(value.id.output as usize)
        } else {
            self.leaf(value, op.name())
        };
        self.built.insert(value.id, result.clone());
        result
    }

    /// A value the copy starts from: a full-size floating-point tensor read from memory is
    /// multiplied by this copy's `1.0`; scalars, broadcasts and constants are used as they are
    /// (fusion recomputes them anyway).
    fn leaf(&self, value: &Value, op: &str) -> Value {
        let from_memory = !matches!(op, "broadcast_in_dim" | "constant" | "iota");
        let float = matches!(value.dtype(), DType::F32 | DType::F64 | DType::BF16 | DType::F16);
        if from_memory && float && value.dims() == self.dims.as_slice() {
            let one = self.one.convert(value.dtype()).broadcast_to(&self.dims);
            value * &one
        } else {
            value.clone()
        }
    }
}
