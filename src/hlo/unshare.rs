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
//! `optimization_barrier` so that neither our sharing nor XLA's CSE merges the copies (XLA
//! drops the barrier later; the multiplications stay). Multiplying by one is exact, infinities,
//! signed zeros and NaN included, so the results are those of the shared computation — except
//! where a value reaches an output through no arithmetic at all (a `select` keeping the old
//! state): XLA:CPU runs with subnormals flushed to zero, so a subnormal kept that way becomes
//! zero in a copy, and a signaling NaN becomes quiet.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::graph::{add_node, Graph, Value, ValueId};
use super::ops::misc::optimization_barrier;
use crate::dtype::DType;

/// The outputs, each rebuilt as its own elementwise computation from the non-elementwise
/// values it depends on (see the module documentation). Left as they are: scalars and values
/// that are not elementwise results; outputs computed from a reduction or broadcast of another
/// output (Adafactor: its update is scaled by its own RMS, computed from the new second moment),
/// with every output they share a computation with, since those cannot be one pass anyway and a
/// copy would read state after it is overwritten; and everything when the graph has an error.
pub fn unshare_elementwise(outputs: &[Value]) -> Vec<Value> {
    let Some((cones, entangled)) = analyze(outputs) else { return outputs.to_vec() };
    let first = &outputs[0];
    let graph = first.graph.clone();
    let count =
        cones.iter().zip(&entangled).filter(|(cone, &entangled)| cone.is_some() && !entangled).count();
    if count < 2 {
        return outputs.to_vec();
    }
    let one = first.builder().scalar(1.0f32);
    let mut ones = optimization_barrier(&vec![one; count]).into_iter();
    outputs
        .iter()
        .zip(cones.iter().zip(&entangled))
        .map(|(output, (cone, &entangled))| {
            if cone.is_none() || entangled {
                return output.clone();
            }
            let one = ones.next().expect("one `1.0` per copied output");
            let mut copy = Copy { graph: &graph, dims: output.dims().to_vec(), one, built: HashMap::new() };
            copy.value(output)
        })
        .collect()
}

/// Whether [`unshare_elementwise`] can give every elementwise output (of rank 1 or more) its own
/// copy: then a backend with sibling multi-output fusion computes them in one pass. False when
/// some output is computed from a reduction of another (Adafactor), or the graph has an error.
pub fn is_single_pass(outputs: &[Value]) -> bool {
    analyze(outputs).is_some_and(|(_, entangled)| !entangled.contains(&true))
}

/// Per output: its cone when it is an elementwise result worth a copy, and whether it is
/// entangled. `None` when there is nothing to analyze or the graph has an error.
fn analyze(outputs: &[Value]) -> Option<(Vec<Option<Cone>>, Vec<bool>)> {
    let first = outputs.first()?;
    let graph = first.graph.clone();
    if graph.borrow().error.is_some() {
        return None;
    }
    let cones: Vec<Option<Cone>> = {
        let graph = graph.borrow();
        outputs
            .iter()
            .map(|output| {
                // Scalars (a step count) are not worth a copy; a schedule computed from the new
                // count is no reason to leave the tensors shared.
                let copied = output.rank() > 0
                    && output.same_graph(first)
                    && graph.nodes[output.id.node as usize].op.is_elementwise();
                copied.then(|| Cone::of(&graph, output))
            })
            .collect()
    };
    let entangled = entangled(&graph.borrow(), outputs, &cones);
    Some((cones, entangled))
}

/// The elementwise nodes an output is computed by (of its shape), and the values they start from.
struct Cone {
    nodes: HashSet<u32>,
    leaves: Vec<ValueId>,
}

impl Cone {
    fn of(graph: &Graph, output: &Value) -> Cone {
        let dims = output.dims();
        let mut cone = Cone { nodes: HashSet::new(), leaves: Vec::new() };
        let mut stack = vec![output.id];
        while let Some(id) = stack.pop() {
            let node = &graph.nodes[id.node as usize];
            if node.op.is_elementwise() && graph.ty(id).dims.as_slice() == dims {
                if cone.nodes.insert(id.node) {
                    stack.extend(node.inputs.iter().copied());
                }
            } else {
                cone.leaves.push(id);
            }
        }
        cone
    }
}

/// Which outputs to leave shared: those with a leaf computed from an output (a reduction of a
/// value computed from new state must run between the state's update and this output's), and,
/// transitively, every output whose computation overlaps theirs.
fn entangled(graph: &Graph, outputs: &[Value], cones: &[Option<Cone>]) -> Vec<bool> {
    let mut owners: HashMap<u32, Vec<usize>> = HashMap::new();
    for (index, cone) in cones.iter().enumerate() {
        for &node in cone.iter().flat_map(|cone| &cone.nodes) {
            owners.entry(node).or_default().push(index);
        }
    }
    let output_nodes: HashSet<u32> = outputs
        .iter()
        .zip(cones)
        .filter(|(_, cone)| cone.is_some())
        .map(|(output, _)| output.id.node)
        .collect();
    // Node order is a topological order: whether a node depends on an output is known from its
    // inputs.
    let mut reaches = vec![false; graph.nodes.len()];
    for (index, node) in graph.nodes.iter().enumerate() {
        reaches[index] = output_nodes.contains(&(index as u32))
            || node.inputs.iter().any(|input| reaches[input.node as usize]);
    }
    let mut entangled: Vec<bool> = cones
        .iter()
        .map(|cone| {
            cone.as_ref().is_some_and(|cone| cone.leaves.iter().any(|leaf| reaches[leaf.node as usize]))
        })
        .collect();
    let mut queue: Vec<usize> = (0..cones.len()).filter(|&index| entangled[index]).collect();
    while let Some(index) = queue.pop() {
        for node in cones[index].iter().flat_map(|cone| &cone.nodes) {
            for &other in &owners[node] {
                if !entangled[other] {
                    entangled[other] = true;
                    queue.push(other);
                }
            }
        }
    }
    entangled
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
