//! Compiled functions and sharded arrays: the bridge between the builder ([`crate::hlo`]) and
//! the runtime ([`crate::pjrt`]).
//!
//! A [`Program`] is a [`Function`] compiled for a client, over the function's mesh (one
//! partition per mesh device; device `i` of the mesh is the client's addressable device `i`).
//! A [`ShardedArray`] is a global array held as one buffer per mesh device, laid out by a
//! [`Sharding`]; host tensors are split into shards and reassembled here.

use std::sync::Arc;

use crate::hlo::{Function, HloError, Mesh, Partitioner, Sharding, TensorType};
use crate::pjrt::{Buffer, Client, CompileOptions, Device, Executable, ExecuteOptions, PjrtError};
use crate::tensor::{HostTensor, TensorError};

/// What can go wrong between a built function and its results.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(transparent)]
    Build(#[from] HloError),
    #[error(transparent)]
    Runtime(#[from] PjrtError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("{what}: expected {expected}, got {actual}")]
    Mismatch { what: String, expected: String, actual: String },
}

pub type Result<T> = std::result::Result<T, ProgramError>;

fn mismatch(what: impl Into<String>, expected: impl ToString, actual: impl ToString) -> ProgramError {
    ProgramError::Mismatch { what: what.into(), expected: expected.to_string(), actual: actual.to_string() }
}

/// A global array stored as one shard per mesh device.
#[derive(Clone)]
pub struct ShardedArray {
    ty: TensorType,
    sharding: Sharding,
    mesh: Option<Mesh>,
    shards: Vec<Arc<Buffer>>,
}

impl std::fmt::Debug for ShardedArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardedArray({:?}, {:?}, {} shards)", self.ty, self.sharding, self.shards.len())
    }
}

impl ShardedArray {
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    pub fn sharding(&self) -> &Sharding {
        &self.sharding
    }

    /// One buffer per mesh device, in mesh order.
    pub fn shards(&self) -> &[Arc<Buffer>] {
        &self.shards
    }

    /// Splits `tensor` by `sharding` and copies each shard to its device.
    pub fn from_host(
        client: &Client,
        tensor: &HostTensor,
        sharding: &Sharding,
        mesh: Option<&Mesh>,
        devices: &[Device],
    ) -> Result<ShardedArray> {
        let ty = TensorType::new(tensor.dtype(), tensor.dims());
        sharding.check(&ty, mesh, "shard")?;
        let layout = ShardLayout::new(&ty, sharding, mesh, devices.len());
        let mut shards = Vec::with_capacity(devices.len());
        for (index, device) in devices.iter().enumerate() {
            let (starts, sizes) = layout.block(index);
            let block = extract_block(tensor, &starts, &sizes)?;
            shards.push(Arc::new(client.buffer_from_host(&block, device)?));
        }
        Ok(ShardedArray { ty, sharding: sharding.clone(), mesh: mesh.cloned(), shards })
    }

    /// Wraps device buffers (one per mesh device) as a global array of type `ty`.
    pub fn from_shards(
        ty: TensorType,
        sharding: Sharding,
        mesh: Option<Mesh>,
        shards: Vec<Buffer>,
    ) -> ShardedArray {
        ShardedArray { ty, sharding, mesh, shards: shards.into_iter().map(Arc::new).collect() }
    }

    /// Copies the shards back and reassembles the global array.
    pub fn to_host(&self) -> Result<HostTensor> {
        let layout = ShardLayout::new(&self.ty, &self.sharding, self.mesh.as_ref(), self.shards.len());
        if layout.is_replicated() {
            return Ok(self.shards[0].to_host()?);
        }
        let mut global = HostTensor::zeros(self.ty.dtype, &self.ty.dims)?;
        let mut written = std::collections::HashSet::new();
        for (index, shard) in self.shards.iter().enumerate() {
            let (starts, _) = layout.block(index);
            if written.insert(starts.clone()) {
                insert_block(&mut global, &shard.to_host()?, &starts)?;
            }
        }
        Ok(global)
    }

    /// Whether any shard was donated to (and deleted by) an execution.
    pub fn is_deleted(&self) -> bool {
        self.shards.iter().any(|shard| shard.is_deleted().unwrap_or(true))
    }
}

/// Where each mesh device's shard sits in the global array.
struct ShardLayout {
    dims: Vec<i64>,
    /// Per dimension: the mesh axes splitting it, as (axis position, axis size).
    split_axes: Vec<Vec<(usize, usize)>>,
    mesh_sizes: Vec<usize>,
}

impl ShardLayout {
    fn new(ty: &TensorType, sharding: &Sharding, mesh: Option<&Mesh>, devices: usize) -> Self {
        let (split_axes, mesh_sizes) = match (sharding, mesh) {
            (Sharding::Split(per_dimension), Some(mesh)) => {
                let axes = mesh.axes();
                let split = per_dimension
                    .iter()
                    .map(|names| {
                        names
                            .iter()
                            .filter_map(|name| {
                                axes.iter().position(|(axis, _)| axis == name).map(|p| (p, axes[p].1))
                            })
                            .collect()
                    })
                    .collect();
                (split, axes.iter().map(|(_, size)| *size).collect())
            }
            _ => (vec![Vec::new(); ty.rank()], vec![devices]),
        };
        ShardLayout { dims: ty.dims.to_vec(), split_axes, mesh_sizes }
    }

    fn is_replicated(&self) -> bool {
        self.split_axes.iter().all(Vec::is_empty)
    }

    /// Start and size of device `device`'s block.
    fn block(&self, device: usize) -> (Vec<i64>, Vec<i64>) {
        // Row-major mesh coordinates of the device.
        let mut coordinates = vec![0; self.mesh_sizes.len()];
        let mut rest = device;
        for (axis, &size) in self.mesh_sizes.iter().enumerate().rev() {
            coordinates[axis] = rest % size;
            rest /= size;
        }
        let mut starts = Vec::with_capacity(self.dims.len());
        let mut sizes = Vec::with_capacity(self.dims.len());
        for (dim, axes) in self.split_axes.iter().enumerate() {
            let (mut index, mut count) = (0usize, 1usize);
            for &(axis, size) in axes {
                index = index * size + coordinates[axis];
                count *= size;
            }
            let size = self.dims[dim] / count as i64;
            starts.push(index as i64 * size);
            sizes.push(size);
        }
        (starts, sizes)
    }
}

/// Row-major strides in elements.
fn strides(dims: &[i64]) -> Vec<usize> {
    let mut strides = vec![1usize; dims.len()];
    for d in (0..dims.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * dims[d + 1] as usize;
    }
    strides
}

/// Calls `copy(source_offset, target_offset, run)` for each contiguous run (in elements) of the
/// block at `starts` of size `sizes` inside an array of `dims`; target offsets are in the block.
fn for_each_run(dims: &[i64], starts: &[i64], sizes: &[i64], mut copy: impl FnMut(usize, usize, usize)) {
    let rank = dims.len();
    if rank == 0 {
        copy(0, 0, 1);
        return;
    }
    if sizes.contains(&0) {
        return;
    }
    let outer = strides(dims);
    let run = sizes[rank - 1] as usize;
    let mut index = vec![0i64; rank - 1];
    let mut target = 0;
    loop {
        let source: usize = (0..rank)
            .map(|d| (starts[d] + if d < rank - 1 { index[d] } else { 0 }) as usize * outer[d])
            .sum();
        copy(source, target, run);
        target += run;
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < sizes[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

fn extract_block(tensor: &HostTensor, starts: &[i64], sizes: &[i64]) -> Result<HostTensor> {
    if starts.iter().all(|&s| s == 0) && sizes == tensor.dims() {
        return Ok(tensor.clone());
    }
    let width = tensor.dtype().size_in_bytes();
    let bytes = tensor.bytes();
    let mut out = vec![0u8; sizes.iter().product::<i64>() as usize * width];
    for_each_run(tensor.dims(), starts, sizes, |source, target, run| {
        out[target * width..(target + run) * width]
            .copy_from_slice(&bytes[source * width..(source + run) * width]);
    });
    Ok(HostTensor::from_bytes(tensor.dtype(), sizes, out)?)
}

fn insert_block(global: &mut HostTensor, block: &HostTensor, starts: &[i64]) -> Result<()> {
    let width = global.dtype().size_in_bytes();
    let dims = global.dims().to_vec();
    let dtype = global.dtype();
    let mut bytes = std::mem::replace(global, HostTensor::scalar(0u8)).into_bytes();
    let source = block.bytes();
    for_each_run(&dims, starts, block.dims(), |global_offset, block_offset, run| {
        bytes[global_offset * width..(global_offset + run) * width]
            .copy_from_slice(&source[block_offset * width..(block_offset + run) * width]);
    });
    *global = HostTensor::from_bytes(dtype, &dims, bytes)?;
    Ok(())
}

/// A function compiled for a client: runs on sharded arrays or host tensors.
pub struct Program {
    client: Client,
    executable: Executable,
    parameter_types: Vec<TensorType>,
    output_types: Vec<TensorType>,
    parameter_shardings: Vec<Sharding>,
    output_shardings: Vec<Sharding>,
    donations: Vec<(usize, usize)>,
    mesh: Option<Mesh>,
    devices: Vec<Device>,
    text: String,
}

impl Program {
    /// Emits `function` with Shardy shardings (XLA's default partitioner; GSPMD is
    /// deprecated) and compiles it for `client`.
    pub fn compile(client: &Client, function: &Function) -> Result<Program> {
        Self::compile_with(client, function, Partitioner::Shardy)
    }

    /// Emits `function` for `partitioner` and compiles it with matching options.
    pub fn compile_with(client: &Client, function: &Function, partitioner: Partitioner) -> Result<Program> {
        let mesh = function.mesh().cloned();
        let partitions = mesh.as_ref().map_or(1, Mesh::device_count);
        let available = client.addressable_devices();
        if partitions > available.len() {
            return Err(mismatch(
                format!("devices for the mesh of `{}`", function.name()),
                format!("{partitions} devices"),
                format!("{} addressable devices", available.len()),
            ));
        }
        let text = function.to_stablehlo_with(crate::hlo::EmitOptions { partitioner });
        let mut options = CompileOptions {
            num_partitions: partitions,
            use_spmd_partitioning: partitions > 1,
            use_shardy_partitioner: partitioner == Partitioner::Shardy,
            ..CompileOptions::default()
        };
        if client.platform_name() == "cpu" {
            // As JAX does: XLA:CPU's concurrency-optimized scheduler runs independent ops side
            // by side, which on a memory-bound step (an optimizer update over many tensors)
            // streams every tensor through memory once per op instead of finishing one tensor
            // while it is in cache: a reduction over 400 MB of gradients takes 2.5x longer.
            options.env_option_overrides.insert(
                "xla_cpu_enable_concurrency_optimized_scheduler".into(),
                crate::pjrt::OptionOverride::Bool(false),
            );
        }
        let executable = client.compile(&text, &options)?;
        let devices = executable.addressable_devices();
        let sharding_or_replicated =
            |sharding: Option<&Sharding>| sharding.cloned().unwrap_or(Sharding::Replicated);
        let parameter_types = function.parameter_types();
        Ok(Program {
            client: client.clone(),
            parameter_shardings: (0..parameter_types.len())
                .map(|i| sharding_or_replicated(function.parameter_sharding(i)))
                .collect(),
            output_shardings: (0..function.output_types().len())
                .map(|i| sharding_or_replicated(function.output_sharding(i)))
                .collect(),
            parameter_types,
            output_types: function.output_types().to_vec(),
            donations: function.donations().to_vec(),
            mesh,
            devices,
            executable,
            text,
        })
    }

    pub fn executable(&self) -> &Executable {
        &self.executable
    }

    /// The StableHLO text that was compiled.
    pub fn stablehlo(&self) -> &str {
        &self.text
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub fn parameter_types(&self) -> &[TensorType] {
        &self.parameter_types
    }

    pub fn output_types(&self) -> &[TensorType] {
        &self.output_types
    }

    /// Copies `tensor` to the devices laid out as parameter `index` expects.
    pub fn put(&self, index: usize, tensor: &HostTensor) -> Result<ShardedArray> {
        let expected = self
            .parameter_types
            .get(index)
            .ok_or_else(|| mismatch("parameter index", format!("< {}", self.parameter_types.len()), index))?;
        let actual = TensorType::new(tensor.dtype(), tensor.dims());
        if &actual != expected {
            return Err(mismatch(
                format!("type of parameter {index}"),
                format!("{expected:?}"),
                format!("{actual:?}"),
            ));
        }
        ShardedArray::from_host(
            &self.client,
            tensor,
            &self.parameter_shardings[index],
            self.mesh.as_ref(),
            &self.devices,
        )
    }

    /// Runs on device arrays (donated parameters are consumed); returns the outputs as arrays.
    pub fn execute(&self, arguments: &[&ShardedArray]) -> Result<Vec<ShardedArray>> {
        if arguments.len() != self.parameter_types.len() {
            return Err(mismatch("number of arguments", self.parameter_types.len(), arguments.len()));
        }
        for (index, (argument, expected)) in arguments.iter().zip(&self.parameter_types).enumerate() {
            if argument.ty() != expected || argument.shards.len() != self.devices.len() {
                return Err(mismatch(
                    format!("argument {index}"),
                    format!("{expected:?} on {} devices", self.devices.len()),
                    format!("{:?} on {} devices", argument.ty(), argument.shards.len()),
                ));
            }
        }
        let per_device: Vec<Vec<&Buffer>> = (0..self.devices.len())
            .map(|device| arguments.iter().map(|argument| argument.shards[device].as_ref()).collect())
            .collect();
        let outputs = self.executable.execute(&per_device, &ExecuteOptions::default())?;
        let mut by_output: Vec<Vec<Buffer>> = (0..self.output_types.len()).map(|_| Vec::new()).collect();
        for device_outputs in outputs {
            for (index, buffer) in device_outputs.into_iter().enumerate() {
                by_output[index].push(buffer);
            }
        }
        Ok(by_output
            .into_iter()
            .enumerate()
            .map(|(index, shards)| {
                ShardedArray::from_shards(
                    self.output_types[index].clone(),
                    self.output_shardings[index].clone(),
                    self.mesh.clone(),
                    shards,
                )
            })
            .collect())
    }

    /// Copies host inputs in, runs, and copies the outputs back.
    pub fn run(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        let arrays = inputs.iter().enumerate().map(|(i, t)| self.put(i, t)).collect::<Result<Vec<_>>>()?;
        let references: Vec<&ShardedArray> = arrays.iter().collect();
        self.execute(&references)?.iter().map(ShardedArray::to_host).collect()
    }

    /// (parameter, output) pairs whose buffers are donated.
    pub fn donations(&self) -> &[(usize, usize)] {
        &self.donations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_joins_blocks() {
        let values: Vec<i32> = (0..24).collect();
        let tensor = HostTensor::from_slice(&[4, 6], &values).unwrap();
        let block = extract_block(&tensor, &[2, 3], &[2, 3]).unwrap();
        assert_eq!(block.to_vec::<i32>().unwrap(), vec![15, 16, 17, 21, 22, 23]);
        let mut global = HostTensor::zeros(crate::DType::I32, &[4, 6]).unwrap();
        insert_block(&mut global, &block, &[2, 3]).unwrap();
        let joined = global.to_vec::<i32>().unwrap();
        assert_eq!(joined[15], 15);
        assert_eq!(joined[0], 0);
        assert_eq!(joined[23], 23);
    }

    #[test]
    fn lays_out_shards_on_a_two_axis_mesh() {
        let mesh = Mesh::new(&[("data", 2), ("model", 2)]).unwrap();
        let ty = TensorType::new(crate::DType::F32, &[4, 6]);
        let by_model = ShardLayout::new(&ty, &Sharding::axes(&[Some("model"), None]), Some(&mesh), 4);
        // Device 1 is (data 0, model 1): the second row block.
        assert_eq!(by_model.block(1), (vec![2, 0], vec![2, 6]));
        assert_eq!(by_model.block(2), (vec![0, 0], vec![2, 6]));
        let both = ShardLayout::new(&ty, &Sharding::axes(&[Some("data"), Some("model")]), Some(&mesh), 4);
        assert_eq!(both.block(3), (vec![2, 3], vec![2, 3]));
    }
}
