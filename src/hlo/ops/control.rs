//! Control flow: `while_loop`, `scan` (and `fori_loop` on it), `cond`, and `checkpoint`
//! (rematerialization).
//!
//! Loop and branch bodies are regions: sub-graphs built by closures. Values of the enclosing
//! function that a body uses are captured automatically; loops carry them as extra loop
//! values, branches read them directly.
//!
//! `scan` is differentiable: the forward loop saves each step's incoming carry, and the
//! backward pass is a reverse scan that recomputes the step from the saved carry and applies
//! the step's VJP, so memory grows with the carries (e.g. one activation per layer), not with
//! every intermediate of the body. `checkpoint` does the same for a straight-line function.

use std::panic::Location;
use std::rc::Rc;

use smallvec::SmallVec;

use crate::dtype::DType;
use crate::hlo::autodiff::vjp_at;
use crate::hlo::emit::{Emitter, ParameterSource};
use crate::hlo::graph::{add_node, innermost_builder, Builder, Region, Value, ValueId};
use crate::hlo::op::{check, EmitNode, Operation, VjpNode};
use crate::hlo::ops::misc::optimization_barrier;
use crate::hlo::types::TensorType;
use crate::hlo::{HloError, Result};

/// Rebuilds the live nodes of `region` in `builder`'s graph with the region's parameters bound
/// to `arguments` (values of `builder` or of graphs enclosing it).
pub(crate) fn replay(region: &Region, builder: &Builder, arguments: &[Value]) -> Vec<Value> {
    let source = region.graph.borrow();
    let live = source.live_nodes(&region.outputs);
    let mut mapped: Vec<SmallVec<[Value; 1]>> = vec![SmallVec::new(); source.nodes.len()];
    for (index, &parameter) in source.parameters.iter().enumerate() {
        mapped[parameter.node as usize] = SmallVec::from_elem(arguments[index].clone(), 1);
    }
    for (index, node) in source.nodes.iter().enumerate() {
        if !live[index] || !mapped[index].is_empty() {
            continue;
        }
        let inputs: Vec<Value> =
            node.inputs.iter().map(|id| mapped[id.node as usize][id.output as usize].clone()).collect();
        let input_refs: Vec<&Value> = inputs.iter().collect();
        let outputs =
            add_node(&builder.graph, Rc::clone(&node.op), &input_refs, node.outputs.to_vec(), node.location);
        mapped[index] = outputs.into_iter().collect();
    }
    region.outputs.iter().map(|id| mapped[id.node as usize][id.output as usize].clone()).collect()
}

fn types_of(values: &[Value]) -> Vec<TensorType> {
    values.iter().map(|v| v.ty().clone()).collect()
}

/// A general while loop. Carries are the declared loop values followed by the values the
/// regions captured; each region's parameters map onto carries.
#[derive(Debug)]
pub(crate) struct While {
    cond: Region,
    body: Region,
    cond_sources: Vec<usize>,
    body_sources: Vec<usize>,
}

impl Operation for While {
    fn name(&self) -> &'static str {
        "while_loop"
    }

    fn cse_key(&self) -> Option<String> {
        None
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        let cond_sources: Vec<ParameterSource> =
            self.cond_sources.iter().map(|&i| ParameterSource::Argument(i)).collect();
        let body_sources: Vec<ParameterSource> =
            self.body_sources.iter().map(|&i| ParameterSource::Argument(i)).collect();
        emitter.begin_line(&format!("{} = \"stablehlo.while\"({}) (", node.result, node.operands()));
        emitter.region(&self.cond, node.input_types, &cond_sources);
        emitter.raw(", ");
        emitter.region(&self.body, node.input_types, &body_sources);
        emitter.end_line(&format!(") : {}", node.signature()));
    }
}

/// Loops while `cond(carry)` is true, replacing the carry by `body(carry)`. Returns the final
/// carry. Not differentiable (its trip count is dynamic): use [`scan`] or [`fori_loop`].
#[track_caller]
pub fn while_loop(
    init: &[Value],
    cond: impl FnOnce(&[Value]) -> Value,
    body: impl FnOnce(&[Value]) -> Vec<Value>,
) -> Vec<Value> {
    while_loop_at(init, cond, body, Location::caller())
}

fn while_loop_at(
    init: &[Value],
    cond: impl FnOnce(&[Value]) -> Value,
    body: impl FnOnce(&[Value]) -> Vec<Value>,
    location: &'static Location<'static>,
) -> Vec<Value> {
    let Some(first) = init.first() else {
        return Vec::new();
    };
    let builder = innermost_builder(init);
    let types = types_of(init);
    let cond_region = builder.region_at("while_cond", &types, |_, carry| vec![cond(carry)], location);
    let body_region = builder.region_at("while_body", &types, |_, carry| body(carry), location);
    let cond_ok =
        cond_region.output_types.len() == 1 && cond_region.output_types[0] == TensorType::scalar(DType::Pred);
    check(first, cond_ok, "while_loop", location, || {
        format!("the condition must return one pred scalar, got {:?}", cond_region.output_types)
    });
    check(first, body_region.output_types == types, "while_loop", location, || {
        format!("the body returns {:?} for a carry of {types:?}", body_region.output_types)
    });

    // Carries: declared values, then the union of both regions' captures.
    let mut captured: Vec<Value> = Vec::new();
    for value in cond_region.captures().into_iter().chain(body_region.captures()) {
        if !captured.iter().any(|c| c.id == value.id) {
            captured.push(value);
        }
    }
    let sources = |region: &Region| -> Vec<usize> {
        let mut sources: Vec<usize> = (0..init.len()).collect();
        for capture in region.captures() {
            let position = captured.iter().position(|c| c.id == capture.id).expect("capture is in the union");
            sources.push(init.len() + position);
        }
        sources
    };
    let cond_sources = sources(&cond_region);
    // The body returns the captured carries unchanged: capture every one of them.
    let body_region = {
        let body_builder = Builder { graph: body_region.graph.clone() };
        let mut outputs = body_region.outputs.clone();
        let mut output_types = body_region.output_types.clone();
        for value in &captured {
            let local = body_builder.local(value);
            outputs.push(local.id);
            output_types.push(local.ty().clone());
        }
        Region { outputs, output_types, ..body_region }
    };
    let body_sources = sources(&body_region);
    let mut inputs: Vec<&Value> = init.iter().collect();
    inputs.extend(&captured);
    let mut output_types = types.clone();
    output_types.extend(types_of(&captured));
    let op = While { cond: cond_region, body: body_region, cond_sources, body_sources };
    let mut results = add_node(&builder.graph, Rc::new(op), &inputs, output_types, location);
    results.truncate(init.len());
    results
}

/// Options of [`scan`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Number of steps; needed when there are no `xs`, else it must equal their leading
    /// dimension.
    pub length: Option<i64>,
    /// Iterate from the last slice to the first.
    pub reverse: bool,
}

/// A scan: carries, per-step slices of `xs`, and stacked per-step outputs `ys`. Outputs of
/// the node: final carries, stacked ys, then each carry as it entered every step (stacked;
/// only computed when the gradient reads them).
#[derive(Debug)]
pub(crate) struct Scan {
    body: Region,
    length: i64,
    reverse: bool,
    carries: usize,
    xs: usize,
}

impl Scan {
    fn ys(&self) -> usize {
        self.body.output_types.len() - self.carries
    }
}

impl Operation for Scan {
    fn name(&self) -> &'static str {
        "scan"
    }

    fn cse_key(&self) -> Option<String> {
        None
    }

    fn emit(&self, _: &mut Emitter, _: &EmitNode) {
        unreachable!("scan is written in place by emit_inline")
    }

    fn emit_inline(&self, emitter: &mut Emitter, node: &EmitNode) -> Option<Vec<String>> {
        let save = node.used[self.carries + self.ys()..].iter().any(|&used| used);
        let lowered = Builder::new("scan");
        let inputs: Vec<Value> = node
            .input_types
            .iter()
            .enumerate()
            .map(|(i, ty)| lowered.parameter(format!("in{i}"), ty.clone()))
            .collect();
        let outputs = self.lower(&lowered, &inputs, save);
        let ids: Vec<ValueId> = outputs.iter().map(|v| v.id).collect();
        let mut names = emitter.inline(&lowered.graph, node.inputs, &ids);
        if !save {
            names.extend(std::iter::repeat_n(String::new(), self.carries));
        }
        Some(names)
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let ys = self.ys();
        if cotangents[self.carries + ys..].iter().any(Option::is_some) {
            return Err(HloError::at(
                "scan",
                "second-order gradients through scan are not supported",
                node.location,
            ));
        }
        let init = &node.inputs[..self.carries];
        let xs = &node.inputs[self.carries..self.carries + self.xs];
        let captures = &node.inputs[self.carries + self.xs..];
        let saved = &node.outputs[self.carries + ys..];
        let final_carry_ct: Vec<Value> = init
            .iter()
            .zip(&cotangents[..self.carries])
            .map(|(v, ct)| ct.clone().unwrap_or_else(|| v.zeros_like()))
            .collect();
        let ys_ct: Vec<Value> = node.outputs[self.carries..self.carries + ys]
            .iter()
            .zip(&cotangents[self.carries..self.carries + ys])
            .map(|(v, ct)| ct.clone().unwrap_or_else(|| v.zeros_like()))
            .collect();

        // Backward scan: carry = (carry cotangents, capture cotangent sums); per step it
        // reads the saved carry, the step's xs and the ys cotangent.
        let mut backward_init = final_carry_ct;
        backward_init.extend(captures.iter().map(Value::zeros_like));
        let mut backward_xs: Vec<Value> = saved.to_vec();
        backward_xs.extend(xs.iter().cloned());
        backward_xs.extend(ys_ct);
        let carries = self.carries;
        let xs_count = self.xs;
        let body = &self.body;
        let (backward_carry, backward_ys) = scan_at(
            &backward_init,
            &backward_xs,
            ScanOptions { length: Some(self.length), reverse: !self.reverse },
            |carry, slices| {
                let builder = slices.first().or(carry.first()).expect("scan has values").builder();
                let carry_in = &slices[..carries];
                let x = &slices[carries..carries + xs_count];
                let y_ct = &slices[carries + xs_count..];
                let local_captures: Vec<Value> = captures.iter().map(|c| builder.local(c)).collect();
                let mut arguments: Vec<Value> = carry_in.to_vec();
                arguments.extend(x.iter().cloned());
                arguments.extend(local_captures.iter().cloned());
                let outputs = replay(body, &builder, &arguments);
                let mut output_cts: Vec<Value> = carry[..carries].to_vec();
                output_cts.extend(y_ct.iter().cloned());
                match vjp_at(&outputs, &output_cts, &arguments, node.location) {
                    Ok(input_cts) => {
                        let mut new_carry: Vec<Value> = input_cts[..carries].to_vec();
                        for (sum, ct) in carry[carries..].iter().zip(&input_cts[carries + xs_count..]) {
                            new_carry.push(sum + ct);
                        }
                        (new_carry, input_cts[carries..carries + xs_count].to_vec())
                    }
                    Err(error) => {
                        builder.record_error(error);
                        (carry.to_vec(), x.to_vec())
                    }
                }
            },
            node.location,
        );
        if let Some(error) = node.builder().error() {
            return Err(error);
        }
        let mut input_cts: Vec<Option<Value>> = backward_carry[..carries].iter().cloned().map(Some).collect();
        input_cts.extend(backward_ys.into_iter().map(Some));
        input_cts.extend(backward_carry[carries..].iter().cloned().map(Some));
        Ok(input_cts)
    }
}

impl Scan {
    /// The scan as a while loop built in `builder` from `inputs` = (init, xs, captures).
    fn lower(&self, builder: &Builder, inputs: &[Value], save: bool) -> Vec<Value> {
        let n = self.length;
        let ys = self.ys();
        let init = &inputs[..self.carries];
        let xs = &inputs[self.carries..self.carries + self.xs];
        let captures = &inputs[self.carries + self.xs..];
        let y_types = &self.body.output_types[self.carries..];
        let stacked = |ty: &TensorType| {
            let mut dims = vec![n];
            dims.extend_from_slice(&ty.dims);
            builder.zeros(&ty.with_dims(&dims))
        };
        let mut loop_init = vec![builder.scalar_of(DType::I64, 0.0)];
        loop_init.extend(init.iter().cloned());
        loop_init.extend(y_types.iter().map(stacked));
        if save {
            loop_init.extend(init.iter().map(|v| stacked(v.ty())));
        }
        loop_init.extend(xs.iter().cloned());
        loop_init.extend(captures.iter().cloned());
        let carries = self.carries;
        let saved = if save { carries } else { 0 };
        let results = while_loop(
            &loop_init,
            |v| v[0].lt(&v[0].scalar_like(n as f64)),
            |v| {
                let step = &v[0];
                let index =
                    if self.reverse { &step.scalar_like((n - 1) as f64) - step } else { step.clone() };
                let carry = &v[1..1 + carries];
                let ys_acc = &v[1 + carries..1 + carries + ys];
                let saved_acc = &v[1 + carries + ys..1 + carries + ys + saved];
                let rest = &v[1 + carries + ys + saved..];
                let (xs, captures) = rest.split_at(self.xs);
                let mut arguments: Vec<Value> = carry.to_vec();
                arguments.extend(xs.iter().map(|x| x.index_axis0(&index)));
                arguments.extend(captures.iter().cloned());
                let outputs = replay(&self.body, &step.builder(), &arguments);
                let mut next = vec![step + 1.0];
                next.extend(outputs[..carries].iter().cloned());
                for (acc, y) in ys_acc.iter().zip(&outputs[carries..]) {
                    next.push(acc.update_axis0(y, &index));
                }
                for (acc, c) in saved_acc.iter().zip(carry) {
                    next.push(acc.update_axis0(c, &index));
                }
                next.extend(rest.iter().cloned());
                next
            },
        );
        let mut outputs: Vec<Value> = results[1..1 + carries + ys].to_vec();
        outputs.extend(results[1 + carries + ys..1 + carries + ys + saved].iter().cloned());
        outputs
    }
}

/// Scans `body` over the leading dimension of `xs`: `body(carry, x_slices)` returns the next
/// carry and this step's outputs; `scan` returns the final carry and the outputs stacked on a
/// new leading dimension. Differentiable (see the module docs).
#[track_caller]
pub fn scan(
    init: &[Value],
    xs: &[Value],
    options: ScanOptions,
    body: impl FnOnce(&[Value], &[Value]) -> (Vec<Value>, Vec<Value>),
) -> (Vec<Value>, Vec<Value>) {
    scan_at(init, xs, options, body, Location::caller())
}

fn scan_at(
    init: &[Value],
    xs: &[Value],
    options: ScanOptions,
    body: impl FnOnce(&[Value], &[Value]) -> (Vec<Value>, Vec<Value>),
    location: &'static Location<'static>,
) -> (Vec<Value>, Vec<Value>) {
    let Some(anchor) = init.first().or(xs.first()) else {
        return (Vec::new(), Vec::new());
    };
    let all: Vec<Value> = init.iter().chain(xs).cloned().collect();
    let builder = innermost_builder(&all);
    let length = options.length.or_else(|| xs.first().and_then(|x| x.dims().first().copied()));
    let valid_length = match length {
        Some(length) => length >= 0 && xs.iter().all(|x| x.rank() >= 1 && x.dims()[0] == length),
        None => false,
    };
    // After a mistake the body is still built (with placeholder types) so that the caller gets
    // as many results as it expects; the graph holds the error and builds nothing more.
    check(anchor, valid_length, "scan", location, || {
        let x_types = types_of(xs);
        format!("length {length:?} does not match the leading dimension of xs {x_types:?}")
    });
    let length = length.unwrap_or(0);
    let mut parameter_types = types_of(init);
    parameter_types.extend(xs.iter().map(|x| x.ty().with_dims(x.dims().get(1..).unwrap_or_default())));
    let mut ys_count = 0;
    let region = builder.region_at(
        "scan_body",
        &parameter_types,
        |_, parameters| {
            let (carry, ys) = body(&parameters[..init.len()], &parameters[init.len()..]);
            ys_count = ys.len();
            let mut outputs = carry;
            outputs.extend(ys);
            outputs
        },
        location,
    );
    let (carry_types, y_types) = region.output_types.split_at(region.output_types.len() - ys_count);
    check(anchor, carry_types == types_of(init).as_slice(), "scan", location, || {
        format!("the body returns a carry of {carry_types:?} for an initial carry of {:?}", types_of(init))
    });
    let stacked = |ty: &TensorType| {
        let mut dims = vec![length];
        dims.extend_from_slice(&ty.dims);
        ty.with_dims(&dims)
    };
    let mut output_types = types_of(init);
    output_types.extend(y_types.iter().map(stacked));
    output_types.extend(init.iter().map(|value| stacked(value.ty())));
    let captures = region.captures();
    let mut inputs: Vec<&Value> = init.iter().collect();
    inputs.extend(xs);
    inputs.extend(&captures);
    let op = Scan { body: region, length, reverse: options.reverse, carries: init.len(), xs: xs.len() };
    let results = add_node(&builder.graph, Rc::new(op), &inputs, output_types, location);
    let carry = results[..init.len()].to_vec();
    let ys = results[init.len()..init.len() + ys_count].to_vec();
    (carry, ys)
}

/// Runs `body(i, carry)` for `i` in `0..n` (an i32 index); differentiable.
#[track_caller]
pub fn fori_loop(n: i64, init: &[Value], body: impl FnOnce(&Value, &[Value]) -> Vec<Value>) -> Vec<Value> {
    let location = Location::caller();
    let Some(anchor) = init.first() else {
        return Vec::new();
    };
    let indices = anchor.builder().iota(&TensorType::new(DType::I32, &[n]), 0);
    let (carry, _) = scan_at(
        init,
        &[indices],
        ScanOptions::default(),
        |carry, x| (body(&x[0], carry), Vec::new()),
        location,
    );
    carry
}

/// `stablehlo.if`. Branch regions have no block arguments: their parameters (the operands,
/// then their captures) read values of the enclosing scope directly, as JAX's lowering does.
#[derive(Debug)]
pub(crate) struct Cond {
    branches: [Region; 2],
    /// For each branch, the node input (after the predicate) each of its parameters reads.
    sources: [Vec<usize>; 2],
}

impl Operation for Cond {
    fn name(&self) -> &'static str {
        "cond"
    }

    fn cse_key(&self) -> Option<String> {
        None
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.begin_line(&format!("{} = \"stablehlo.if\"({}) (", node.result, node.inputs[0]));
        for (index, branch) in self.branches.iter().enumerate() {
            if index > 0 {
                emitter.raw(", ");
            }
            let sources: Vec<ParameterSource> = self.sources[index]
                .iter()
                .map(|&i| ParameterSource::Outer(node.inputs[1 + i].clone()))
                .collect();
            emitter.region(branch, &[], &sources);
        }
        let outputs: Vec<String> = node.outputs.iter().map(ToString::to_string).collect();
        emitter.end_line(&format!(") : ({}) -> ({})", node.input_types[0], outputs.join(", ")));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let predicate = &node.inputs[0];
        let operand_count = node.inputs.len() - 1;
        // Backward cond over (forward operands, output cotangents): each branch replays its
        // forward branch and returns the cotangents of every forward operand.
        let mut backward_operands: Vec<Value> = node.inputs[1..].to_vec();
        backward_operands.extend(
            node.outputs
                .iter()
                .zip(cotangents)
                .map(|(output, ct)| ct.clone().unwrap_or_else(|| output.zeros_like())),
        );
        let branch = |index: usize| {
            let region = &self.branches[index];
            let sources = &self.sources[index];
            move |locals: &[Value]| -> Vec<Value> {
                let (operands, cts) = locals.split_at(operand_count);
                let arguments: Vec<Value> = sources.iter().map(|&i| operands[i].clone()).collect();
                let outputs = replay(region, &locals[0].builder(), &arguments);
                let mut gradients: Vec<Value> = operands.iter().map(Value::zeros_like).collect();
                match vjp_at(&outputs, cts, &arguments, node.location) {
                    Ok(argument_cts) => {
                        for (&source, ct) in sources.iter().zip(argument_cts) {
                            gradients[source] = &gradients[source] + &ct;
                        }
                    }
                    Err(error) => locals[0].builder().record_error(error),
                }
                gradients
            }
        };
        let results = cond_at(predicate, &backward_operands, branch(0), branch(1), node.location);
        if let Some(error) = node.builder().error() {
            return Err(error);
        }
        let mut input_cts = vec![None];
        input_cts.extend(results.into_iter().map(Some));
        Ok(input_cts)
    }
}

/// `if predicate { on_true(operands) } else { on_false(operands) }` for a pred scalar, like
/// `jax.lax.cond`: each branch receives the operands as its own values and both return values
/// of the same types. Only the taken branch runs. Differentiable with respect to the
/// operands and to enclosing values the branches read.
#[track_caller]
pub fn cond(
    predicate: &Value,
    operands: &[Value],
    on_true: impl FnOnce(&[Value]) -> Vec<Value>,
    on_false: impl FnOnce(&[Value]) -> Vec<Value>,
) -> Vec<Value> {
    cond_at(predicate, operands, on_true, on_false, Location::caller())
}

fn cond_at(
    predicate: &Value,
    operands: &[Value],
    on_true: impl FnOnce(&[Value]) -> Vec<Value>,
    on_false: impl FnOnce(&[Value]) -> Vec<Value>,
    location: &'static Location<'static>,
) -> Vec<Value> {
    let mut all = vec![predicate.clone()];
    all.extend(operands.iter().cloned());
    let builder = innermost_builder(&all);
    check(predicate, predicate.ty() == &TensorType::scalar(DType::Pred), "cond", location, || {
        format!("the predicate must be a pred scalar, got {:?}", predicate.ty())
    });
    let types = types_of(operands);
    let true_region = builder.region_at("cond_true", &types, |_, locals| on_true(locals), location);
    let false_region = builder.region_at("cond_false", &types, |_, locals| on_false(locals), location);
    check(predicate, true_region.output_types == false_region.output_types, "cond", location, || {
        format!("branches return {:?} and {:?}", true_region.output_types, false_region.output_types)
    });
    let mut inputs_after_predicate: Vec<Value> = operands.to_vec();
    let mut sources = [Vec::new(), Vec::new()];
    for (index, region) in [&true_region, &false_region].into_iter().enumerate() {
        sources[index].extend(0..operands.len());
        for capture in region.captures() {
            let position =
                match inputs_after_predicate[operands.len()..].iter().position(|o| o.id == capture.id) {
                    Some(position) => operands.len() + position,
                    None => {
                        inputs_after_predicate.push(capture);
                        inputs_after_predicate.len() - 1
                    }
                };
            sources[index].push(position);
        }
    }
    let output_types = true_region.output_types.clone();
    let mut inputs: Vec<&Value> = vec![predicate];
    inputs.extend(&inputs_after_predicate);
    let op = Cond { branches: [true_region, false_region], sources };
    add_node(&builder.graph, Rc::new(op), &inputs, output_types, location)
}

/// A function whose intermediates are not kept for the backward pass: the gradient recomputes
/// them from the inputs (rematerialization), trading compute for memory.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    body: Region,
}

impl Operation for Checkpoint {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn cse_key(&self) -> Option<String> {
        None
    }

    fn emit(&self, _: &mut Emitter, _: &EmitNode) {
        unreachable!("checkpoint is written in place by emit_inline")
    }

    fn emit_inline(&self, emitter: &mut Emitter, node: &EmitNode) -> Option<Vec<String>> {
        Some(emitter.inline(&self.body.graph, node.inputs, &self.body.outputs))
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        // The barrier gives the recomputation fresh inputs, so neither our sharing of identical
        // nodes nor XLA's CSE merges it back into the forward pass.
        let inputs = optimization_barrier(&node.inputs);
        let outputs = replay(&self.body, &node.builder(), &inputs);
        let cts: Vec<Value> = node
            .outputs
            .iter()
            .zip(cotangents)
            .map(|(output, ct)| ct.clone().unwrap_or_else(|| output.zeros_like()))
            .collect();
        let input_cts = vjp_at(&outputs, &cts, &inputs, node.location)?;
        Ok(input_cts.into_iter().map(Some).collect())
    }
}

/// Calls `f(arguments)` so that its intermediates are recomputed in the backward pass instead
/// of being kept alive (`jax.checkpoint`).
#[track_caller]
pub fn checkpoint(arguments: &[Value], f: impl FnOnce(&[Value]) -> Vec<Value>) -> Vec<Value> {
    let location = Location::caller();
    if arguments.is_empty() {
        return f(arguments);
    }
    let builder = innermost_builder(arguments);
    let region =
        builder.region_at("checkpoint", &types_of(arguments), |_, parameters| f(parameters), location);
    let mut inputs: Vec<Value> = arguments.to_vec();
    inputs.extend(region.captures());
    let input_refs: Vec<&Value> = inputs.iter().collect();
    let output_types = region.output_types.clone();
    add_node(&builder.graph, Rc::new(Checkpoint { body: region }), &input_refs, output_types, location)
}
