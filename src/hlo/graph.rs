//! The graph under construction: nodes, values, builders, regions and finished functions.
//!
//! A [`Builder`] owns one graph. Every op appends a node whose inputs are earlier values, so
//! node order is a topological order and emission is deterministic. Identical nodes (same op,
//! same attributes, same inputs) are shared at construction time (hash-consing), which gives
//! common-subexpression elimination and constant sharing for free.
//!
//! Errors do not interrupt building: the first mistake is recorded with the caller's source
//! line (like XLA's own `XlaBuilder`), later ops become cheap placeholders, and
//! [`Builder::build`] returns the recorded error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::Location;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

use smallvec::SmallVec;

use super::error::{HloError, Result};
use super::op::Operation;
use super::sharding::{Mesh, Sharding};
use super::types::TensorType;
use crate::dtype::DType;

pub(crate) type GraphRef = Rc<RefCell<Graph>>;

/// One result of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ValueId {
    pub node: u32,
    pub output: u32,
}

pub(crate) struct Node {
    pub op: Rc<dyn Operation>,
    pub inputs: SmallVec<[ValueId; 4]>,
    pub outputs: SmallVec<[TensorType; 1]>,
    pub location: &'static Location<'static>,
}

/// A value captured from an enclosing graph by a region: the outer value and the region's
/// parameter that stands for it.
#[derive(Clone)]
pub(crate) struct Capture {
    pub outer: Value,
    pub inner: ValueId,
}

/// What makes two nodes the same: op key, inputs and result types.
type SharingKey = (String, SmallVec<[ValueId; 4]>, Vec<TensorType>);

pub(crate) struct Graph {
    uid: u64,
    pub name: String,
    pub nodes: Vec<Node>,
    /// Parameter values in order: the declared ones, then captures (regions only).
    pub parameters: Vec<ValueId>,
    pub parameter_names: Vec<String>,
    /// Every shareable node by its key.
    cse: HashMap<SharingKey, u32>,
    pub error: Option<HloError>,
    parent: Option<Weak<RefCell<Graph>>>,
    pub captures: Vec<Capture>,
    /// The device mesh shardings refer to (inherited by regions).
    pub mesh: Option<Mesh>,
    /// 0 for a function, 1 + the parent's depth for a region.
    depth: usize,
    /// A region whose op is built: nothing may be added to it any more.
    sealed: bool,
}

static NEXT_GRAPH_UID: AtomicU64 = AtomicU64::new(1);

impl Graph {
    fn new(name: String, parent: Option<&GraphRef>) -> Self {
        let mesh = parent.and_then(|parent| parent.borrow().mesh.clone());
        let depth = parent.map_or(0, |parent| parent.borrow().depth + 1);
        Graph {
            mesh,
            depth,
            uid: NEXT_GRAPH_UID.fetch_add(1, Ordering::Relaxed),
            name,
            nodes: Vec::new(),
            parameters: Vec::new(),
            parameter_names: Vec::new(),
            cse: HashMap::new(),
            error: None,
            parent: parent.map(Rc::downgrade),
            captures: Vec::new(),
            sealed: false,
        }
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.nodes[id.node as usize].outputs[id.output as usize]
    }

    /// Nodes needed to compute `outputs`, as a mask over node indices.
    pub fn live_nodes(&self, outputs: &[ValueId]) -> Vec<bool> {
        let mut live = vec![false; self.nodes.len()];
        for output in outputs {
            live[output.node as usize] = true;
        }
        for index in (0..self.nodes.len()).rev() {
            if live[index] {
                for input in &self.nodes[index].inputs {
                    live[input.node as usize] = true;
                }
            }
        }
        live
    }
}

/// The placeholder op standing in for values built after an error.
#[derive(Debug)]
struct Poisoned;

impl Operation for Poisoned {
    fn name(&self) -> &'static str {
        "poisoned"
    }
    fn cse_key(&self) -> Option<String> {
        None
    }
    fn emit(&self, _: &mut super::emit::Emitter, _: &super::op::EmitNode) {
        unreachable!("a graph with an error is never emitted")
    }
}

/// A parameter of a graph: the function's inputs, and the block arguments of regions.
#[derive(Debug)]
pub(crate) struct Parameter;

impl Operation for Parameter {
    fn name(&self) -> &'static str {
        "parameter"
    }
    fn cse_key(&self) -> Option<String> {
        None
    }
    fn emit(&self, _: &mut super::emit::Emitter, _: &super::op::EmitNode) {
        unreachable!("parameters are named by the enclosing function or region")
    }
    fn vjp(&self, _: &super::op::VjpNode, _: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(Vec::new())
    }
}

/// A handle to a value in a graph: cheap to clone, carries its type.
#[derive(Clone)]
pub struct Value {
    pub(crate) graph: GraphRef,
    pub(crate) id: ValueId,
    pub(crate) ty: TensorType,
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value(%{}#{}: {:?})", self.id.node, self.id.output, self.ty)
    }
}

impl Value {
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }

    pub fn dims(&self) -> &[i64] {
        &self.ty.dims
    }

    pub fn rank(&self) -> usize {
        self.ty.rank()
    }

    /// The builder that owns this value.
    pub fn builder(&self) -> Builder {
        Builder { graph: self.graph.clone() }
    }

    pub(crate) fn same_graph(&self, other: &Value) -> bool {
        Rc::ptr_eq(&self.graph, &other.graph)
    }
}

/// Builds one function (or one region of a control-flow op).
#[derive(Clone)]
pub struct Builder {
    pub(crate) graph: GraphRef,
}

impl Builder {
    /// A builder for a function called `name` (the module name in the emitted StableHLO).
    pub fn new(name: impl Into<String>) -> Self {
        Builder { graph: Rc::new(RefCell::new(Graph::new(name.into(), None))) }
    }

    /// Declares the next input of the function.
    #[track_caller]
    pub fn parameter(&self, name: impl Into<String>, ty: TensorType) -> Value {
        let location = Location::caller();
        if let Some(poisoned) = refuse_node(&self.graph, "parameter", std::slice::from_ref(&ty), location) {
            return poisoned.into_iter().next().expect("one result");
        }
        let mut graph = self.graph.borrow_mut();
        let id = push_node(&mut graph, Rc::new(Parameter), SmallVec::new(), [ty.clone()].into(), location);
        graph.parameters.push(id);
        graph.parameter_names.push(name.into());
        drop(graph);
        Value { graph: self.graph.clone(), id, ty }
    }

    /// Shorthand for [`Builder::parameter`] with a dtype and dimensions.
    #[track_caller]
    pub fn param(&self, name: impl Into<String>, dtype: DType, dims: &[i64]) -> Value {
        self.parameter(name, TensorType::new(dtype, dims))
    }

    /// Places the function on `mesh`; shardings of parameters, outputs and intermediate
    /// values name its axes.
    pub fn set_mesh(&self, mesh: Mesh) {
        self.graph.borrow_mut().mesh = Some(mesh);
    }

    /// The mesh shardings refer to, if the function has one.
    pub fn mesh(&self) -> Option<Mesh> {
        self.graph.borrow().mesh.clone()
    }

    /// The first error recorded while building, if any.
    pub fn error(&self) -> Option<HloError> {
        self.graph.borrow().error.clone()
    }

    /// Records `error` unless an earlier one is already recorded.
    pub fn record_error(&self, error: HloError) {
        record_error(&self.graph, error);
    }

    /// Number of nodes built so far (parameters and shared nodes included).
    pub fn node_count(&self) -> usize {
        self.graph.borrow().nodes.len()
    }

    pub fn parameters(&self) -> Vec<Value> {
        let graph = self.graph.borrow();
        graph
            .parameters
            .iter()
            .map(|&id| Value { graph: self.graph.clone(), id, ty: graph.ty(id).clone() })
            .collect()
    }

    /// Finishes the function with `outputs`; returns the first recorded error instead if any.
    #[track_caller]
    pub fn build(&self, outputs: &[Value]) -> Result<Function> {
        let location = Location::caller();
        for output in outputs {
            if !Rc::ptr_eq(&output.graph, &self.graph) {
                record_error(
                    &self.graph,
                    HloError::at("build", "an output belongs to another builder", location),
                );
            }
        }
        let graph = self.graph.borrow();
        if let Some(error) = &graph.error {
            return Err(error.clone());
        }
        if graph.parent.is_some() {
            return Err(HloError::at("build", "regions are finished by their op, not by build()", location));
        }
        let parameter_count = graph.parameters.len();
        let mesh = graph.mesh.clone();
        drop(graph);
        Ok(Function {
            graph: self.graph.clone(),
            outputs: outputs.iter().map(|output| output.id).collect(),
            output_types: outputs.iter().map(|output| output.ty.clone()).collect(),
            parameter_shardings: vec![None; parameter_count],
            output_shardings: vec![None; outputs.len()],
            donations: Vec::new(),
            mesh,
        })
    }

    /// `value` as a value of this builder: itself, or a capture when it belongs to an
    /// enclosing function (inside a loop or branch body, to differentiate with respect to an
    /// enclosing value, take `grad` with respect to its local copy).
    #[track_caller]
    pub fn local(&self, value: &Value) -> Value {
        let location = Location::caller();
        match resolve_input(&self.graph, value, location) {
            Some(id) => Value { graph: self.graph.clone(), id, ty: value.ty.clone() },
            None => poisoned(&self.graph, vec![value.ty.clone()], location).pop().expect("one result"),
        }
    }

    /// Builds a region (the body of a control-flow or reduction op) whose parameters have
    /// `parameter_types`. Values of this builder (or its ancestors) used inside `body` are
    /// captured: they become extra region parameters, listed in [`Region::captures`].
    pub(crate) fn region_at(
        &self,
        name: &str,
        parameter_types: &[TensorType],
        body: impl FnOnce(&Builder, &[Value]) -> Vec<Value>,
        location: &'static Location<'static>,
    ) -> Region {
        let child = Builder { graph: Rc::new(RefCell::new(Graph::new(name.to_string(), Some(&self.graph)))) };
        let parameters: Vec<Value> = parameter_types
            .iter()
            .enumerate()
            .map(|(index, ty)| child.parameter(format!("{name}_{index}"), ty.clone()))
            .collect();
        let results = body(&child, &parameters);
        let mut outputs = Vec::with_capacity(results.len());
        for result in &results {
            match resolve_input(&child.graph, result, location) {
                Some(id) => outputs.push(id),
                None => outputs.push(result.id),
            }
        }
        let graph = child.graph.borrow();
        if let Some(error) = graph.error.clone() {
            drop(graph);
            record_error(&self.graph, error);
        } else {
            drop(graph);
        }
        let output_types = outputs.iter().map(|&id| child.graph.borrow().ty(id).clone()).collect();
        child.graph.borrow_mut().sealed = true;
        Region { graph: child.graph, outputs, output_types }
    }
}

/// A finished region: a sub-graph with declared parameters, then captured ones.
#[derive(Clone)]
pub(crate) struct Region {
    pub graph: GraphRef,
    pub outputs: Vec<ValueId>,
    pub output_types: Vec<TensorType>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Region#{}", self.graph.borrow().uid)
    }
}

impl Region {
    /// The outer values this region captured, in the order of its extra parameters.
    pub fn captures(&self) -> Vec<Value> {
        self.graph.borrow().captures.iter().map(|capture| capture.outer.clone()).collect()
    }

    pub fn parameter_types(&self) -> Vec<TensorType> {
        let graph = self.graph.borrow();
        graph.parameters.iter().map(|&id| graph.ty(id).clone()).collect()
    }
}

pub(crate) fn record_error(graph: &GraphRef, error: HloError) {
    let mut graph = graph.borrow_mut();
    if graph.error.is_none() {
        graph.error = Some(error);
    }
}

fn push_node(
    graph: &mut Graph,
    op: Rc<dyn Operation>,
    inputs: SmallVec<[ValueId; 4]>,
    outputs: SmallVec<[TensorType; 1]>,
    location: &'static Location<'static>,
) -> ValueId {
    let node = u32::try_from(graph.nodes.len()).expect("a graph holds fewer than 2^32 nodes");
    graph.nodes.push(Node { op, inputs, outputs, location });
    ValueId { node, output: 0 }
}

/// The id of `value` inside `graph`, capturing it from an enclosing graph when needed.
/// Records an error and returns `None` when the value belongs to an unrelated graph.
fn resolve_input(graph: &GraphRef, value: &Value, location: &'static Location<'static>) -> Option<ValueId> {
    if Rc::ptr_eq(graph, &value.graph) {
        return Some(value.id);
    }
    let Some(parent) = parent_of(graph) else {
        let error = HloError::at(
            "capture",
            format!(
                "a value of type {:?} from function `{}` is used in function `{}`; pass it as a parameter",
                value.ty,
                value.graph.borrow().name,
                graph.borrow().name
            ),
            location,
        );
        // Whichever of the two functions is built reports the mistake.
        record_error(&root_of(&value.graph), error.clone());
        record_error(graph, error);
        return None;
    };
    // Make the value available in the parent first (it may come from further out).
    let outer_id = resolve_input(&parent, value, location)?;
    let outer = Value { graph: parent, id: outer_id, ty: value.ty.clone() };
    let mut inner_graph = graph.borrow_mut();
    if let Some(capture) = inner_graph.captures.iter().find(|c| c.outer.id == outer.id) {
        return Some(capture.inner);
    }
    let index = inner_graph.parameters.len();
    let inner =
        push_node(&mut inner_graph, Rc::new(Parameter), SmallVec::new(), [value.ty.clone()].into(), location);
    inner_graph.parameters.push(inner);
    inner_graph.parameter_names.push(format!("capture_{index}"));
    inner_graph.captures.push(Capture { outer, inner });
    Some(inner)
}

/// The graph enclosing the region `graph` (`None` for a function).
fn parent_of(graph: &GraphRef) -> Option<GraphRef> {
    graph.borrow().parent.as_ref().and_then(Weak::upgrade)
}

/// The function graph that `graph` is a region of (itself for a function).
fn root_of(graph: &GraphRef) -> GraphRef {
    let mut current = graph.clone();
    while let Some(parent) = parent_of(&current) {
        current = parent;
    }
    current
}

/// Whether `graph` or a graph enclosing it has recorded an error: a region built after a
/// mistake in its function builds nothing either.
fn has_error(graph: &GraphRef) -> bool {
    let mut current = Some(graph.clone());
    while let Some(graph) = current {
        if graph.borrow().error.is_some() {
            return true;
        }
        current = parent_of(&graph);
    }
    false
}

/// When a node cannot be added — a result too large for XLA, or `graph` is a finished region (a
/// value computed inside a loop or branch body was kept and used after its op was built) —
/// records the mistake on the enclosing function and returns placeholders of `outputs`.
fn refuse_node(
    graph: &GraphRef,
    op: &'static str,
    outputs: &[TensorType],
    location: &'static Location<'static>,
) -> Option<Vec<Value>> {
    // XLA throws (and the process aborts) on a shape of 2^63 bytes or more: refuse it here.
    if let Some(ty) = outputs.iter().find(|ty| byte_size(ty).is_none()) {
        let message = format!("its result {ty} has 2^63 bytes or more, more than XLA can address");
        record_error(&root_of(graph), HloError::at(op, message, location));
        return Some(poisoned(graph, outputs.to_vec(), location));
    }
    if !graph.borrow().sealed {
        return None;
    }
    let message = format!(
        "uses a value computed inside the region `{}` after that region was finished; return the \
         value from the region (as a carry or output) instead",
        graph.borrow().name
    );
    record_error(&root_of(graph), HloError::at(op, message, location));
    Some(poisoned(graph, outputs.to_vec(), location))
}

/// The size of a value of type `ty` in bytes, `None` when it does not fit in an `i64`.
fn byte_size(ty: &TensorType) -> Option<i64> {
    ty.dims.iter().try_fold(ty.dtype.size_in_bytes() as i64, |bytes, &dim| bytes.checked_mul(dim.max(0)))
}

/// The builder of the most deeply nested graph among `values` (ops on values of a region and
/// of its enclosing function belong in the region).
pub(crate) fn innermost_builder(values: &[Value]) -> Builder {
    let graph = values
        .iter()
        .map(|value| &value.graph)
        .max_by_key(|graph| graph.borrow().depth)
        .expect("at least one value");
    Builder { graph: graph.clone() }
}

/// Appends a node (or reuses an identical one) and returns its results. Once the graph has
/// an error, returns placeholders of the given types without building anything.
pub(crate) fn add_node(
    graph: &GraphRef,
    op: Rc<dyn Operation>,
    inputs: &[&Value],
    outputs: Vec<TensorType>,
    location: &'static Location<'static>,
) -> Vec<Value> {
    if let Some(poisoned) = refuse_node(graph, op.name(), &outputs, location) {
        return poisoned;
    }
    let mut ids = SmallVec::<[ValueId; 4]>::with_capacity(inputs.len());
    for input in inputs {
        match resolve_input(graph, input, location) {
            Some(id) => ids.push(id),
            None => break,
        }
    }
    if has_error(graph) {
        return poisoned(graph, outputs, location);
    }
    let mut graph_mut = graph.borrow_mut();
    let key = op.cse_key().map(|key| (key, ids.clone(), outputs.clone()));
    if let Some(key) = &key {
        if let Some(&node) = graph_mut.cse.get(key) {
            drop(graph_mut);
            return node_values(graph, node, outputs);
        }
    }
    let first = push_node(&mut graph_mut, op, ids, outputs.iter().cloned().collect(), location);
    if let Some(key) = key {
        graph_mut.cse.insert(key, first.node);
    }
    drop(graph_mut);
    node_values(graph, first.node, outputs)
}

/// The results of `node`, of types `outputs`, as values.
fn node_values(graph: &GraphRef, node: u32, outputs: Vec<TensorType>) -> Vec<Value> {
    outputs
        .into_iter()
        .enumerate()
        .map(|(output, ty)| Value { graph: graph.clone(), id: ValueId { node, output: output as u32 }, ty })
        .collect()
}

fn poisoned(graph: &GraphRef, outputs: Vec<TensorType>, location: &'static Location<'static>) -> Vec<Value> {
    let mut graph_mut = graph.borrow_mut();
    let id = push_node(
        &mut graph_mut,
        Rc::new(Poisoned),
        SmallVec::new(),
        outputs.iter().cloned().collect(),
        location,
    );
    drop(graph_mut);
    node_values(graph, id.node, outputs)
}

/// A finished function: parameters, outputs and their attributes (shardings, donation).
#[derive(Clone)]
pub struct Function {
    pub(crate) graph: GraphRef,
    pub(crate) outputs: Vec<ValueId>,
    pub(crate) output_types: Vec<TensorType>,
    pub(crate) parameter_shardings: Vec<Option<Sharding>>,
    pub(crate) output_shardings: Vec<Option<Sharding>>,
    pub(crate) donations: Vec<(usize, usize)>,
    pub(crate) mesh: Option<Mesh>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Function `{}` {:?} -> {:?}", self.name(), self.parameter_types(), self.output_types)
    }
}

impl Function {
    pub fn name(&self) -> String {
        self.graph.borrow().name.clone()
    }

    pub fn parameter_types(&self) -> Vec<TensorType> {
        let graph = self.graph.borrow();
        graph.parameters.iter().map(|&id| graph.ty(id).clone()).collect()
    }

    pub fn parameter_names(&self) -> Vec<String> {
        self.graph.borrow().parameter_names.clone()
    }

    pub fn output_types(&self) -> &[TensorType] {
        &self.output_types
    }

    /// Donates parameter `parameter` to output `output`: the caller's buffer is reused for the
    /// result (and deleted on the caller's side). Types must match; each side at most once.
    #[track_caller]
    pub fn donate(&mut self, parameter: usize, output: usize) -> Result<()> {
        let types = self.parameter_types();
        let Some(parameter_type) = types.get(parameter) else {
            return Err(HloError::new(
                "donate",
                format!("parameter {parameter} out of range ({} parameters)", types.len()),
            ));
        };
        let Some(output_type) = self.output_types.get(output) else {
            return Err(HloError::new(
                "donate",
                format!("output {output} out of range ({} outputs)", self.output_types.len()),
            ));
        };
        if parameter_type != output_type {
            return Err(HloError::new(
                "donate",
                format!("parameter {parameter} is {parameter_type:?} but output {output} is {output_type:?}"),
            ));
        }
        if self.donations.iter().any(|&(p, o)| p == parameter || o == output) {
            return Err(HloError::new(
                "donate",
                format!("parameter {parameter} or output {output} is already part of a donation"),
            ));
        }
        self.donations.push((parameter, output));
        Ok(())
    }

    /// Donates every parameter to the first output of the same type not yet aliased, in order.
    /// Handy for `step(state) -> state` functions.
    pub fn donate_matching(
        &mut self,
        parameters: std::ops::Range<usize>,
        outputs: std::ops::Range<usize>,
    ) -> Result<()> {
        for (parameter, output) in parameters.zip(outputs) {
            self.donate(parameter, output)?;
        }
        Ok(())
    }

    pub fn donations(&self) -> &[(usize, usize)] {
        &self.donations
    }

    /// Places the function on `mesh`: shardings name its axes.
    pub fn set_mesh(&mut self, mesh: Mesh) {
        self.mesh = Some(mesh);
    }

    pub fn mesh(&self) -> Option<&Mesh> {
        self.mesh.as_ref()
    }

    /// Lays parameter `parameter` out on the mesh as `sharding`. On a mesh, parameters and
    /// outputs without a sharding are replicated.
    #[track_caller]
    pub fn shard_parameter(&mut self, parameter: usize, sharding: Sharding) -> Result<()> {
        let types = self.parameter_types();
        let Some(ty) = types.get(parameter) else {
            return Err(HloError::new(
                "shard_parameter",
                format!("parameter {parameter} out of range ({} parameters)", types.len()),
            ));
        };
        sharding.check(ty, self.mesh.as_ref(), "shard_parameter")?;
        self.parameter_shardings[parameter] = Some(sharding);
        Ok(())
    }

    /// Lays output `output` out on the mesh as `sharding` (replicated when not given).
    #[track_caller]
    pub fn shard_output(&mut self, output: usize, sharding: Sharding) -> Result<()> {
        let Some(ty) = self.output_types.get(output) else {
            return Err(HloError::new(
                "shard_output",
                format!("output {output} out of range ({} outputs)", self.output_types.len()),
            ));
        };
        sharding.check(ty, self.mesh.as_ref(), "shard_output")?;
        self.output_shardings[output] = Some(sharding);
        Ok(())
    }

    pub fn parameter_sharding(&self, parameter: usize) -> Option<&Sharding> {
        self.parameter_shardings.get(parameter).and_then(Option::as_ref)
    }

    pub fn output_sharding(&self, output: usize) -> Option<&Sharding> {
        self.output_shardings.get(output).and_then(Option::as_ref)
    }

    /// Number of nodes that emission would write (live nodes, parameters excluded).
    pub fn live_node_count(&self) -> usize {
        let graph = self.graph.borrow();
        let live = graph.live_nodes(&self.outputs);
        let parameters = graph.parameters.iter().filter(|id| live[id.node as usize]).count();
        live.iter().filter(|&&live| live).count() - parameters
    }
}
