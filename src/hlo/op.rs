//! The contract every op implements: one op = one place. Each op's module holds its public
//! constructor (shape and dtype rule, `#[track_caller]`), its StableHLO emission and its VJP.

use std::fmt;
use std::panic::Location;
use std::rc::Rc;

use super::emit::Emitter;
use super::error::{HloError, Result};
use super::graph::{add_node, Builder, Value};
use super::types::TensorType;

pub(crate) trait Operation: fmt::Debug + 'static {
    /// The op's name in error messages.
    fn name(&self) -> &'static str;

    /// Attributes that, with the inputs, identify the node for sharing. `None` never shares.
    fn cse_key(&self) -> Option<String> {
        Some(format!("{self:?}"))
    }

    /// Writes the node's StableHLO.
    fn emit(&self, emitter: &mut Emitter, node: &EmitNode);

    /// True for ops that compute each result element from the same-index elements of their
    /// inputs, all of one shape (see [`crate::hlo::unshare_elementwise`]).
    fn is_elementwise(&self) -> bool {
        false
    }

    /// When `Some(i)`, the op emits nothing: its single result is input `i` (e.g.
    /// `stop_gradient`).
    fn forwards_input(&self) -> Option<usize> {
        None
    }

    /// Ops that lower to a sub-graph written in place (scan, checkpoint) return the names of
    /// their results here instead of writing a single op; `None` means "use `emit`".
    fn emit_inline(&self, emitter: &mut Emitter, node: &EmitNode) -> Option<Vec<String>> {
        let _ = (emitter, node);
        None
    }

    /// Cotangents of the inputs given cotangents of the outputs (`None` = zero). Returning
    /// fewer entries than inputs means the rest get no gradient.
    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let _ = cotangents;
        Err(HloError::at(self.name(), "has no gradient rule", node.location))
    }
}

/// What an op's `emit` sees: SSA names and types of its inputs and results.
pub(crate) struct EmitNode<'a> {
    pub inputs: &'a [String],
    pub input_types: &'a [TensorType],
    pub outputs: &'a [TensorType],
    /// The left-hand side to write: `%v3` or `%v3:2`.
    pub result: &'a str,
    /// Which results something live reads.
    pub used: &'a [bool],
}

impl EmitNode<'_> {
    /// `(t0, t1) -> t2` style signature of the generic op form.
    pub fn signature(&self) -> String {
        let inputs: Vec<String> = self.input_types.iter().map(ToString::to_string).collect();
        let outputs: Vec<String> = self.outputs.iter().map(ToString::to_string).collect();
        if outputs.len() == 1 {
            format!("({}) -> {}", inputs.join(", "), outputs[0])
        } else {
            format!("({}) -> ({})", inputs.join(", "), outputs.join(", "))
        }
    }

    pub fn operands(&self) -> String {
        self.inputs.join(", ")
    }

    pub fn output(&self) -> &TensorType {
        &self.outputs[0]
    }
}

/// What an op's `vjp` sees: the node's inputs and results as values of the graph being
/// differentiated, so rules are written with the ordinary builder API.
pub(crate) struct VjpNode {
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
    pub location: &'static Location<'static>,
}

impl VjpNode {
    pub fn builder(&self) -> Builder {
        self.outputs[0].builder()
    }
}

/// Appends a node with one result.
pub(crate) fn single_result(
    op: impl Operation,
    inputs: &[&Value],
    output: TensorType,
    location: &'static Location<'static>,
) -> Value {
    let deepest = inputs.iter().max_by_key(|input| input.graph.borrow().depth()).expect("at least one input");
    add_node(&deepest.graph, Rc::new(op), inputs, vec![output], location).pop().expect("one result")
}

/// Checks a condition of an op's shape rule; records the error on the graph of `anchor`.
pub(crate) fn check(
    anchor: &Value,
    condition: bool,
    op: &'static str,
    location: &'static Location<'static>,
    message: impl FnOnce() -> String,
) -> bool {
    if !condition {
        super::graph::record_error(&anchor.graph, HloError::at(op, message(), location));
    }
    condition
}
