//! Reverse-mode differentiation on the graph itself.
//!
//! `vjp` walks the nodes between the chosen inputs and the outputs in reverse creation order
//! and asks each op's VJP rule (next to the op's definition) for its inputs' cotangents. The
//! rules build ordinary ops into the same graph, so gradients compile into the same XLA
//! computation as the forward pass. Integer and boolean values carry no gradient.

use std::collections::HashMap;
use std::panic::Location;
use std::rc::Rc;

use super::error::{HloError, Result};
use super::graph::{Value, ValueId};
use super::op::VjpNode;

/// Cotangents of `wrt` given cotangents of `outputs` (the vector-Jacobian product). Values in
/// `wrt` that `outputs` do not depend on get zeros.
#[track_caller]
pub fn vjp(outputs: &[Value], cotangents: &[Value], wrt: &[Value]) -> Result<Vec<Value>> {
    vjp_at(outputs, cotangents, wrt, Location::caller())
}

/// Gradient of a scalar float `output` with respect to each of `wrt`.
#[track_caller]
pub fn grad(output: &Value, wrt: &[Value]) -> Result<Vec<Value>> {
    let location = Location::caller();
    if output.rank() != 0 || !output.dtype().is_float() {
        return Err(HloError::at(
            "grad",
            format!("needs a float scalar output, got {:?}", output.ty()),
            location,
        ));
    }
    vjp_at(std::slice::from_ref(output), &[output.ones_like()], wrt, location)
}

/// Calls `f` on `arguments` and returns its (scalar) value with its gradient with respect to
/// every argument.
#[track_caller]
pub fn value_and_grad(f: impl FnOnce(&[Value]) -> Value, arguments: &[Value]) -> Result<(Value, Vec<Value>)> {
    let location = Location::caller();
    let value = f(arguments);
    if output_error(&value).is_some() {
        return Err(output_error(&value).expect("checked"));
    }
    if value.rank() != 0 || !value.dtype().is_float() {
        return Err(HloError::at(
            "value_and_grad",
            format!("needs a float scalar output, got {:?}", value.ty()),
            location,
        ));
    }
    let gradients = vjp_at(std::slice::from_ref(&value), &[value.ones_like()], arguments, location)?;
    Ok((value, gradients))
}

fn output_error(value: &Value) -> Option<HloError> {
    value.graph.borrow().error.clone()
}

pub(crate) fn vjp_at(
    outputs: &[Value],
    cotangents: &[Value],
    wrt: &[Value],
    location: &'static Location<'static>,
) -> Result<Vec<Value>> {
    let Some(first) = outputs.first() else {
        return Err(HloError::at("vjp", "needs at least one output", location));
    };
    if let Some(error) = output_error(first) {
        return Err(error);
    }
    if outputs.len() != cotangents.len() {
        return Err(HloError::at(
            "vjp",
            format!("{} outputs but {} cotangents", outputs.len(), cotangents.len()),
            location,
        ));
    }
    for value in outputs.iter().chain(cotangents).chain(wrt) {
        if !value.same_graph(first) {
            return Err(HloError::at(
                "vjp",
                "outputs, cotangents and inputs must belong to one builder",
                location,
            ));
        }
    }
    for (output, cotangent) in outputs.iter().zip(cotangents) {
        if output.ty() != cotangent.ty() {
            return Err(HloError::at(
                "vjp",
                format!("cotangent {:?} does not match output {:?}", cotangent.ty(), output.ty()),
                location,
            ));
        }
    }

    let graph = first.graph.clone();
    let (node_count, start) = {
        let g = graph.borrow();
        let start = wrt.iter().map(|v| v.id.node as usize).min().unwrap_or(g.nodes.len());
        (g.nodes.len(), start)
    };

    // Nodes that depend on some value in `wrt`.
    let mut depends = vec![false; node_count];
    for value in wrt {
        depends[value.id.node as usize] = true;
    }
    {
        let g = graph.borrow();
        for index in start..node_count {
            if !depends[index] && g.nodes[index].inputs.iter().any(|input| depends[input.node as usize]) {
                depends[index] = true;
            }
        }
    }

    let mut accumulated: HashMap<ValueId, Value> = HashMap::new();
    for (output, cotangent) in outputs.iter().zip(cotangents) {
        if depends[output.id.node as usize] && output.dtype().is_float() {
            accumulate(&mut accumulated, output.id, cotangent.clone());
        }
    }

    let end = outputs.iter().map(|v| v.id.node as usize).max().unwrap_or(0);
    for index in (start..=end.min(node_count.saturating_sub(1))).rev() {
        if !depends[index] {
            continue;
        }
        let (op, inputs, outputs_of_node, node_location) = {
            let g = graph.borrow();
            let node = &g.nodes[index];
            let inputs: Vec<Value> = node
                .inputs
                .iter()
                .map(|&id| Value { graph: graph.clone(), id, ty: g.ty(id).clone() })
                .collect();
            let outputs: Vec<Value> = (0..node.outputs.len())
                .map(|output| {
                    let id = ValueId { node: index as u32, output: output as u32 };
                    Value { graph: graph.clone(), id, ty: g.ty(id).clone() }
                })
                .collect();
            (Rc::clone(&node.op), inputs, outputs, node.location)
        };
        let node_cotangents: Vec<Option<Value>> =
            outputs_of_node.iter().map(|output| accumulated.get(&output.id).cloned()).collect();
        if node_cotangents.iter().all(Option::is_none) || inputs.is_empty() {
            continue;
        }
        let node = VjpNode { inputs, outputs: outputs_of_node, location: node_location };
        let input_cotangents = op.vjp(&node, &node_cotangents)?;
        for (input, cotangent) in node.inputs.iter().zip(input_cotangents) {
            let Some(cotangent) = cotangent else { continue };
            if !depends[input.id.node as usize] || !input.dtype().is_float() {
                continue;
            }
            if cotangent.ty() != input.ty() {
                return Err(HloError::at(
                    op.name(),
                    format!(
                        "gradient rule produced {:?} for an input of type {:?} (a bug in the rule)",
                        cotangent.ty(),
                        input.ty()
                    ),
                    node.location,
                ));
            }
            accumulate(&mut accumulated, input.id, cotangent);
        }
        if let Some(error) = output_error(first) {
            return Err(error);
        }
    }

    Ok(wrt
        .iter()
        .map(|value| accumulated.get(&value.id).cloned().unwrap_or_else(|| value.zeros_like()))
        .collect())
}

fn accumulate(accumulated: &mut HashMap<ValueId, Value>, id: ValueId, cotangent: Value) {
    match accumulated.remove(&id) {
        Some(existing) => {
            accumulated.insert(id, &existing + &cotangent);
        }
        None => {
            accumulated.insert(id, cotangent);
        }
    }
}
