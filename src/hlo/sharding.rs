//! Device meshes and shardings, written as GSPMD strings or Shardy attributes.
//!
//! A [`Mesh`] names axes over the devices of a computation (`data=2, model=2`); device `i`
//! sits at the row-major coordinate `i` of the mesh. A [`Sharding`] says, per tensor
//! dimension, which mesh axes split it; mesh axes it does not name replicate the tensor.

use super::error::{HloError, Result};
use super::types::TensorType;

/// Which SPMD partitioner the emitted shardings are written for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Partitioner {
    /// `mhlo.sharding` strings (XLA's GSPMD partitioner).
    #[default]
    Gspmd,
    /// `sdy.sharding` attributes (compile with `use_shardy_partitioner`).
    Shardy,
}

/// Named axes over the devices of a computation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mesh {
    axes: Vec<(String, usize)>,
}

impl Mesh {
    /// A mesh with `axes` (name, size), major to minor. Names are unique, sizes >= 1.
    #[track_caller]
    pub fn new(axes: &[(&str, usize)]) -> Result<Mesh> {
        for (index, (name, size)) in axes.iter().enumerate() {
            if *size == 0 {
                return Err(HloError::new("mesh", format!("axis `{name}` has size 0")));
            }
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(HloError::new(
                    "mesh",
                    format!("axis name `{name}` must be letters, digits or _"),
                ));
            }
            if axes[..index].iter().any(|(other, _)| other == name) {
                return Err(HloError::new("mesh", format!("axis `{name}` appears twice")));
            }
        }
        Ok(Mesh { axes: axes.iter().map(|(name, size)| (name.to_string(), *size)).collect() })
    }

    pub fn axes(&self) -> &[(String, usize)] {
        &self.axes
    }

    pub fn device_count(&self) -> usize {
        self.axes.iter().map(|(_, size)| size).product()
    }

    pub fn axis_size(&self, name: &str) -> Option<usize> {
        self.axes.iter().find(|(axis, _)| axis == name).map(|(_, size)| *size)
    }

    fn axis_index(&self, name: &str) -> Option<usize> {
        self.axes.iter().position(|(axis, _)| axis == name)
    }

    /// `<["data"=2, "model"=2]>`
    pub fn shardy(&self) -> String {
        let axes: Vec<String> = self.axes.iter().map(|(name, size)| format!("\"{name}\"={size}")).collect();
        format!("<[{}]>", axes.join(", "))
    }
}

/// How a tensor is laid out over a mesh.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sharding {
    /// A full copy on every device.
    Replicated,
    /// For each tensor dimension, the mesh axes that split it (major first); an empty list
    /// keeps the dimension whole.
    Split(Vec<Vec<String>>),
}

impl Sharding {
    /// Splits dimensions by at most one axis each: `Sharding::axes(&[Some("data"), None])`.
    pub fn axes(per_dimension: &[Option<&str>]) -> Sharding {
        Sharding::Split(
            per_dimension.iter().map(|axis| axis.iter().map(|a| a.to_string()).collect()).collect(),
        )
    }

    /// Checks the sharding against a tensor type and mesh: one entry per dimension, known
    /// axes used once, and dimensions divisible by their number of shards.
    #[track_caller]
    pub fn check(&self, ty: &TensorType, mesh: Option<&Mesh>, op: &'static str) -> Result<()> {
        let Sharding::Split(per_dimension) = self else { return Ok(()) };
        let Some(mesh) = mesh else {
            return Err(HloError::new(op, "a split sharding needs a mesh: call Function::set_mesh first"));
        };
        if per_dimension.len() != ty.rank() {
            return Err(HloError::new(
                op,
                format!(
                    "sharding {per_dimension:?} has {} entries for a {:?} tensor",
                    per_dimension.len(),
                    ty
                ),
            ));
        }
        let mut used = Vec::new();
        for (dimension, axes) in per_dimension.iter().enumerate() {
            let mut shards = 1;
            for axis in axes {
                let Some(size) = mesh.axis_size(axis) else {
                    return Err(HloError::new(op, format!("mesh {:?} has no axis `{axis}`", mesh.axes)));
                };
                if used.contains(axis) {
                    return Err(HloError::new(op, format!("mesh axis `{axis}` splits two dimensions")));
                }
                used.push(axis.clone());
                shards *= size as i64;
            }
            if ty.dims[dimension] % shards != 0 {
                return Err(HloError::new(
                    op,
                    format!(
                        "dimension {dimension} of {:?} is not divisible into {shards} shards over {axes:?}",
                        ty
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Number of pieces each dimension is cut into.
    pub fn shard_counts(&self, rank: usize, mesh: Option<&Mesh>) -> Vec<usize> {
        match (self, mesh) {
            (Sharding::Split(per_dimension), Some(mesh)) => per_dimension
                .iter()
                .map(|axes| axes.iter().filter_map(|axis| mesh.axis_size(axis)).product())
                .collect(),
            _ => vec![1; rank],
        }
    }

    /// The GSPMD string (`{devices=[2,1]<=[2]}`, `{replicated}`, ...). Tile assignment in
    /// iota form: the devices of the mesh, transposed so that the axes splitting dimension 0
    /// come first, then dimension 1, ..., then the replicating axes.
    pub fn gspmd(&self, mesh: Option<&Mesh>) -> String {
        let (Sharding::Split(per_dimension), Some(mesh)) = (self, mesh) else {
            return "{replicated}".to_string();
        };
        let mut order = Vec::new();
        let mut tiles = Vec::new();
        for axes in per_dimension {
            let mut tile = 1;
            for axis in axes {
                if let Some(index) = mesh.axis_index(axis) {
                    order.push(index);
                    tile *= mesh.axes[index].1;
                }
            }
            tiles.push(tile);
        }
        if tiles.iter().all(|&tile| tile == 1) {
            return "{replicated}".to_string();
        }
        let replicated: Vec<usize> = (0..mesh.axes.len()).filter(|index| !order.contains(index)).collect();
        let replication: usize = replicated.iter().map(|&index| mesh.axes[index].1).product();
        order.extend(&replicated);
        let mut tile_dims: Vec<String> = tiles.iter().map(ToString::to_string).collect();
        if replication > 1 {
            tile_dims.push(replication.to_string());
        }
        let identity = order.iter().enumerate().all(|(position, &index)| position == index);
        let assignment = if identity {
            format!("<=[{}]", mesh.device_count())
        } else {
            let sizes: Vec<String> = mesh.axes.iter().map(|(_, size)| size.to_string()).collect();
            let permutation: Vec<String> = order.iter().map(ToString::to_string).collect();
            format!("<=[{}]T({})", sizes.join(","), permutation.join(","))
        };
        let suffix = if replication > 1 { " last_tile_dim_replicate" } else { "" };
        format!("{{devices=[{}]{assignment}{suffix}}}", tile_dims.join(","))
    }

    /// The Shardy attribute `#sdy.sharding<@mesh, [{"data"}, {}]>` for a tensor of `rank`.
    pub fn shardy_for_rank(&self, rank: usize) -> String {
        format!("#sdy.sharding<@mesh, {}>", self.shardy_dims(rank))
    }

    /// `[{"data"}, {}]`: the per-dimension part of the Shardy attribute.
    pub fn shardy_dims(&self, rank: usize) -> String {
        let dims: Vec<String> = match self {
            Sharding::Replicated => vec!["{}".to_string(); rank],
            Sharding::Split(per_dimension) => per_dimension
                .iter()
                .map(|axes| {
                    let names: Vec<String> = axes.iter().map(|axis| format!("\"{axis}\"")).collect();
                    format!("{{{}}}", names.join(", "))
                })
                .collect(),
        };
        format!("[{}]", dims.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn writes_gspmd_tile_assignments() {
        let mesh = Mesh::new(&[("data", 2), ("model", 2)]).unwrap();
        let rows = Sharding::axes(&[Some("data"), None]);
        assert_eq!(rows.gspmd(Some(&mesh)), "{devices=[2,1,2]<=[4] last_tile_dim_replicate}");
        let columns = Sharding::axes(&[None, Some("data")]);
        assert_eq!(columns.gspmd(Some(&mesh)), "{devices=[1,2,2]<=[4] last_tile_dim_replicate}");
        let by_model = Sharding::axes(&[Some("model"), None]);
        assert_eq!(by_model.gspmd(Some(&mesh)), "{devices=[2,1,2]<=[2,2]T(1,0) last_tile_dim_replicate}");
        let both = Sharding::axes(&[Some("model"), Some("data")]);
        assert_eq!(both.gspmd(Some(&mesh)), "{devices=[2,2]<=[2,2]T(1,0)}");
        let flat = Mesh::new(&[("data", 4)]).unwrap();
        assert_eq!(Sharding::axes(&[Some("data")]).gspmd(Some(&flat)), "{devices=[4]<=[4]}");
        assert_eq!(Sharding::Replicated.gspmd(Some(&flat)), "{replicated}");
        assert_eq!(rows.shardy_for_rank(2), "#sdy.sharding<@mesh, [{\"data\"}, {}]>");
        assert_eq!(Sharding::Replicated.shardy_for_rank(2), "#sdy.sharding<@mesh, [{}, {}]>");
        assert_eq!(mesh.shardy(), "<[\"data\"=2, \"model\"=2]>");
    }

    #[test]
    fn rejects_bad_shardings() {
        let mesh = Mesh::new(&[("data", 4)]).unwrap();
        let ty = TensorType::new(DType::F32, &[6, 2]);
        let error = Sharding::axes(&[Some("data"), None]).check(&ty, Some(&mesh), "shard").unwrap_err();
        assert!(error.message.contains("not divisible into 4 shards"), "{error}");
        let error = Sharding::axes(&[Some("model"), None]).check(&ty, Some(&mesh), "shard").unwrap_err();
        assert!(error.message.contains("no axis `model`"), "{error}");
        let error = Sharding::axes(&[Some("data")]).check(&ty, Some(&mesh), "shard").unwrap_err();
        assert!(error.message.contains("1 entries"), "{error}");
        assert!(Mesh::new(&[("data", 2), ("data", 2)]).is_err());
    }
}
