//! StableHLO text emission.
//!
//! Emission walks the nodes a function's outputs need, in creation order, so the same graph
//! always gives byte-identical text (which is what lets the compile cache hit). It is linear
//! in the number of nodes: one pass to mark live nodes, one to write them.

use std::fmt::Write as _;

use super::graph::{Function, Graph, GraphRef, Region, ValueId};
use super::op::EmitNode;
use super::sharding::{Mesh, Partitioner, Sharding};
use super::types::TensorType;
use crate::dtype::DType;

/// Options of one emission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmitOptions {
    /// Which partitioner the shardings are written for (compile options must agree).
    pub partitioner: Partitioner,
}

/// What a region parameter is bound to when the region is written.
#[derive(Clone, Debug)]
pub(crate) enum ParameterSource {
    /// The block argument with this index.
    Argument(usize),
    /// A value of the enclosing scope, read directly (implicit capture, as `stablehlo.if`
    /// branches do).
    Outer(String),
}

pub(crate) struct Emitter {
    out: String,
    next_value: usize,
    indent: usize,
    pub options: EmitOptions,
    pub mesh: Option<Mesh>,
}

impl Emitter {
    fn new(options: EmitOptions, mesh: Option<Mesh>) -> Self {
        Emitter { out: String::with_capacity(1 << 16), next_value: 0, indent: 0, options, mesh }
    }

    /// Writes one line at the current indentation.
    pub fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn fresh(&mut self, prefix: &str) -> String {
        let name = format!("%{prefix}{}", self.next_value);
        self.next_value += 1;
        name
    }

    /// Emits the live nodes of `graph` with parameters named `parameter_names`; returns the
    /// names of `outputs` (empty for results nothing reads).
    pub(crate) fn body(
        &mut self,
        graph: &Graph,
        parameter_names: &[String],
        outputs: &[ValueId],
    ) -> Vec<String> {
        let live = graph.live_nodes(outputs);
        let mut used: Vec<Vec<bool>> =
            graph.nodes.iter().map(|node| vec![false; node.outputs.len()]).collect();
        for output in outputs {
            used[output.node as usize][output.output as usize] = true;
        }
        for (index, node) in graph.nodes.iter().enumerate() {
            if live[index] {
                for input in &node.inputs {
                    used[input.node as usize][input.output as usize] = true;
                }
            }
        }
        let mut names: Vec<Vec<String>> = vec![Vec::new(); graph.nodes.len()];
        for (index, &parameter) in graph.parameters.iter().enumerate() {
            names[parameter.node as usize] = vec![parameter_names[index].clone()];
        }
        let mut input_names: Vec<String> = Vec::new();
        let mut input_types: Vec<TensorType> = Vec::new();
        for (index, node) in graph.nodes.iter().enumerate() {
            if !live[index] || !names[index].is_empty() {
                continue;
            }
            input_names.clear();
            input_types.clear();
            for input in &node.inputs {
                input_names.push(names[input.node as usize][input.output as usize].clone());
                input_types.push(graph.ty(*input).clone());
            }
            if let Some(forwarded) = node.op.forwards_input() {
                names[index] = vec![input_names[forwarded].clone()];
                continue;
            }
            let mut emit_node = EmitNode {
                inputs: &input_names,
                input_types: &input_types,
                outputs: &node.outputs,
                result: "",
                used: &used[index],
            };
            if let Some(inline_names) = node.op.emit_inline(self, &emit_node) {
                names[index] = inline_names;
                continue;
            }
            let base = self.fresh("v");
            let (result, result_names) = if node.outputs.len() == 1 {
                (base.clone(), vec![base])
            } else {
                let names = (0..node.outputs.len()).map(|i| format!("{base}#{i}")).collect();
                (format!("{base}:{}", node.outputs.len()), names)
            };
            emit_node.result = &result;
            node.op.emit(self, &emit_node);
            names[index] = result_names;
        }
        outputs.iter().map(|id| names[id.node as usize][id.output as usize].clone()).collect()
    }

    /// Writes a whole graph in place with its parameters bound to `parameter_names`; returns
    /// the names of `outputs`.
    pub(crate) fn inline(
        &mut self,
        graph: &GraphRef,
        parameter_names: &[String],
        outputs: &[ValueId],
    ) -> Vec<String> {
        let graph = graph.borrow();
        self.body(&graph, parameter_names, outputs)
    }

    /// Writes a region `{ ^bb0(args): ... stablehlo.return ... }` whose block arguments have
    /// `argument_types`; each region parameter is bound as `sources` says.
    pub fn region(&mut self, region: &Region, argument_types: &[TensorType], sources: &[ParameterSource]) {
        let graph = region.graph.borrow();
        let arguments: Vec<String> = argument_types.iter().map(|_| self.fresh("a")).collect();
        self.out.push_str("{\n");
        self.indent += 1;
        if !arguments.is_empty() {
            let header: Vec<String> =
                arguments.iter().zip(argument_types).map(|(name, ty)| format!("{name}: {ty}")).collect();
            self.line(&format!("^bb0({}):", header.join(", ")));
        }
        self.indent += 1;
        let parameter_names: Vec<String> = sources
            .iter()
            .map(|source| match source {
                ParameterSource::Argument(index) => arguments[*index].clone(),
                ParameterSource::Outer(name) => name.clone(),
            })
            .collect();
        let results = self.body(&graph, &parameter_names, &region.outputs);
        let types: Vec<String> = region.output_types.iter().map(ToString::to_string).collect();
        self.line(&format!("stablehlo.return {} : {}", results.join(", "), types.join(", ")));
        self.indent -= 2;
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.push('}');
    }

    /// Writes a region whose parameters are exactly its block arguments.
    pub fn simple_region(&mut self, region: &Region) {
        let types = region.parameter_types();
        let sources: Vec<ParameterSource> = (0..types.len()).map(ParameterSource::Argument).collect();
        self.region(region, &types, &sources);
    }

    /// Appends raw text (between the regions of a multi-region op).
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// Starts a line without ending it (for ops followed by regions).
    pub fn begin_line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
    }

    pub fn end_line(&mut self, text: &str) {
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// The attribute that places a value of type `ty`: GSPMD `mhlo.sharding` or Shardy
    /// `sdy.sharding` (which spells out every dimension, replicated ones too).
    pub fn sharding_attribute(&self, sharding: &Sharding, ty: &TensorType) -> String {
        match self.options.partitioner {
            Partitioner::Gspmd => format!("mhlo.sharding = \"{}\"", sharding.gspmd(self.mesh.as_ref())),
            Partitioner::Shardy => format!("sdy.sharding = {}", sharding.shardy_for_rank(ty.rank())),
        }
    }
}

fn symbol(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if cleaned.is_empty() || cleaned.starts_with(|c: char| c.is_ascii_digit()) {
        format!("m_{cleaned}")
    } else {
        cleaned
    }
}

impl Function {
    /// The function as a StableHLO module (GSPMD shardings), ready for `Client::compile`.
    pub fn to_stablehlo(&self) -> String {
        self.to_stablehlo_with(EmitOptions::default())
    }

    pub fn to_stablehlo_with(&self, options: EmitOptions) -> String {
        let graph = self.graph.borrow();
        let mut emitter = Emitter::new(options, self.mesh.clone());
        let partitions = self.mesh.as_ref().map_or(1, Mesh::device_count);
        let mut module = String::new();
        writeln!(
            module,
            "module @{} attributes {{mhlo.num_partitions = {partitions} : i32, mhlo.num_replicas = 1 : i32}} {{",
            symbol(&graph.name)
        )
        .expect("writing to a String cannot fail");
        if options.partitioner == Partitioner::Shardy {
            if let Some(mesh) = &self.mesh {
                writeln!(module, "  sdy.mesh @mesh = {}", mesh.shardy())
                    .expect("writing to a String cannot fail");
            }
        }

        // On a mesh, a parameter or output without a sharding is written as replicated: left
        // out, the partitioner may choose to split it (Shardy does for outputs), and callers
        // would get shards where they expect whole arrays.
        let placement = |sharding: &Option<Sharding>, ty: &TensorType| -> Option<String> {
            let sharding = sharding.clone().or_else(|| self.mesh.as_ref().map(|_| Sharding::Replicated))?;
            Some(emitter.sharding_attribute(&sharding, ty))
        };
        let parameter_names: Vec<String> = (0..graph.parameters.len()).map(|i| format!("%arg{i}")).collect();
        let mut arguments = Vec::with_capacity(graph.parameters.len());
        for (index, &parameter) in graph.parameters.iter().enumerate() {
            let mut attributes: Vec<String> =
                placement(&self.parameter_shardings[index], graph.ty(parameter)).into_iter().collect();
            if let Some(&(_, output)) = self.donations.iter().find(|&&(p, _)| p == index) {
                attributes.push(format!("tf.aliasing_output = {output} : i32"));
            }
            arguments.push(with_attributes(
                &format!("{}: {}", parameter_names[index], graph.ty(parameter)),
                &attributes,
            ));
        }
        let results: Vec<String> = self
            .output_types
            .iter()
            .zip(&self.output_shardings)
            .map(|(ty, sharding)| {
                let attributes: Vec<String> = placement(sharding, ty).into_iter().collect();
                with_attributes(&ty.to_string(), &attributes)
            })
            .collect();

        emitter.indent = 2;
        let output_names = emitter.body(&graph, &parameter_names, &self.outputs);
        let output_types: Vec<String> = self.output_types.iter().map(ToString::to_string).collect();
        if output_names.is_empty() {
            emitter.line("return");
        } else {
            emitter.line(&format!("return {} : {}", output_names.join(", "), output_types.join(", ")));
        }
        writeln!(module, "  func.func public @main({}) -> ({}) {{", arguments.join(", "), results.join(", "))
            .expect("writing to a String cannot fail");
        module.push_str(&emitter.out);
        module.push_str("  }\n}\n");
        module
    }
}

fn with_attributes(text: &str, attributes: &[String]) -> String {
    if attributes.is_empty() {
        text.to_string()
    } else {
        format!("{text} {{{}}}", attributes.join(", "))
    }
}

/// Formats the elements of a dense constant (native-endian `bytes` of `ty`) as the body of a
/// `dense<...>` attribute: one value when all elements are equal, exact hex for floats,
/// nested lists otherwise.
pub(crate) fn dense_literal(ty: &TensorType, bytes: &[u8]) -> String {
    let size = ty.dtype.size_in_bytes();
    let elements: Vec<&[u8]> = bytes.chunks_exact(size).collect();
    if elements.is_empty() {
        return "[]".repeat(usize::from(!ty.dims.is_empty()));
    }
    if elements.iter().all(|element| *element == elements[0]) {
        return scalar_literal(ty.dtype, elements[0]);
    }
    if ty.dtype.is_float() {
        let mut hex = String::with_capacity(2 + 2 * bytes.len() + 2);
        hex.push_str("\"0x");
        // MLIR reads hex dense data as little-endian raw storage.
        for element in &elements {
            let mut little = element.to_vec();
            if cfg!(target_endian = "big") {
                little.reverse();
            }
            for byte in little {
                write!(hex, "{byte:02X}").expect("writing to a String cannot fail");
            }
        }
        hex.push('"');
        return hex;
    }
    let mut text = String::new();
    nested_list(ty.dtype, &ty.dims, &elements, &mut text);
    text
}

fn nested_list(dtype: DType, dims: &[i64], elements: &[&[u8]], out: &mut String) {
    out.push('[');
    if dims.len() <= 1 {
        for (index, element) in elements.iter().enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            out.push_str(&scalar_literal(dtype, element));
        }
    } else {
        let stride = elements.len() / dims[0].max(1) as usize;
        for (index, chunk) in elements.chunks(stride.max(1)).enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            nested_list(dtype, &dims[1..], chunk, out);
        }
    }
    out.push(']');
}

/// One element in MLIR syntax: hex bit patterns for floats (exact, covers inf and NaN).
pub(crate) fn scalar_literal(dtype: DType, bytes: &[u8]) -> String {
    use crate::dtype::Element;
    match dtype {
        DType::Pred => (if bytes[0] != 0 { "true" } else { "false" }).to_string(),
        DType::U8 => u8::read_bytes(bytes).to_string(),
        DType::U32 => u32::read_bytes(bytes).to_string(),
        DType::U64 => u64::read_bytes(bytes).to_string(),
        DType::I32 => i32::read_bytes(bytes).to_string(),
        DType::I64 => i64::read_bytes(bytes).to_string(),
        DType::F16 => format!("0x{:04X}", half::f16::read_bytes(bytes).to_bits()),
        DType::BF16 => format!("0x{:04X}", half::bf16::read_bytes(bytes).to_bits()),
        DType::F32 => format!("0x{:08X}", f32::read_bytes(bytes).to_bits()),
        DType::F64 => format!("0x{:016X}", f64::read_bytes(bytes).to_bits()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::HostTensor;

    fn literal(tensor: &HostTensor) -> String {
        dense_literal(&TensorType::new(tensor.dtype(), tensor.dims()), tensor.bytes())
    }

    #[test]
    fn formats_constants_exactly() {
        assert_eq!(literal(&HostTensor::scalar(1.0f32)), "0x3F800000");
        assert_eq!(literal(&HostTensor::from_slice(&[3], &[2.0f32, 2.0, 2.0]).unwrap()), "0x40000000");
        assert_eq!(literal(&HostTensor::from_slice(&[2], &[1.0f32, 2.0]).unwrap()), "\"0x0000803F00000040\"");
        assert_eq!(literal(&HostTensor::from_slice(&[2, 2], &[1i32, 2, 3, 4]).unwrap()), "[[1, 2], [3, 4]]");
        assert_eq!(literal(&HostTensor::from_slice(&[2], &[true, false]).unwrap()), "[true, false]");
        assert_eq!(literal(&HostTensor::scalar(f32::NEG_INFINITY)), "0xFF800000");
        assert_eq!(literal(&HostTensor::scalar(half::bf16::from_f32(1.0))), "0x3F80");
    }
}
