//! `dot_general`: batched, multi-axis contraction (matmul and friends).

use std::panic::Location;

use crate::hlo::emit::Emitter;
use crate::hlo::graph::Value;
use crate::hlo::op::{check, single_result, EmitNode, Operation, VjpNode};
use crate::hlo::Result;

/// Which dimensions of the two operands are batch and contracting dimensions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DotDimensions {
    pub lhs_batch: Vec<usize>,
    pub rhs_batch: Vec<usize>,
    pub lhs_contracting: Vec<usize>,
    pub rhs_contracting: Vec<usize>,
}

impl DotDimensions {
    /// Plain matrix product of the last dimension of lhs with the first of rhs.
    pub fn matmul(lhs_rank: usize) -> Self {
        DotDimensions { lhs_contracting: vec![lhs_rank - 1], rhs_contracting: vec![0], ..Default::default() }
    }

    /// Dimensions of an operand that are neither batch nor contracting, in order.
    fn free(rank: usize, batch: &[usize], contracting: &[usize]) -> Vec<usize> {
        (0..rank).filter(|d| !batch.contains(d) && !contracting.contains(d)).collect()
    }
}

#[derive(Debug)]
pub(crate) struct DotGeneral {
    dimensions: DotDimensions,
}

fn list(values: &[usize]) -> String {
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

impl Operation for DotGeneral {
    fn name(&self) -> &'static str {
        "dot_general"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        let d = &self.dimensions;
        let mut fields = Vec::new();
        if !d.lhs_batch.is_empty() {
            fields.push(format!("lhs_batching_dimensions = {}", list(&d.lhs_batch)));
            fields.push(format!("rhs_batching_dimensions = {}", list(&d.rhs_batch)));
        }
        if !d.lhs_contracting.is_empty() {
            fields.push(format!("lhs_contracting_dimensions = {}", list(&d.lhs_contracting)));
            fields.push(format!("rhs_contracting_dimensions = {}", list(&d.rhs_contracting)));
        }
        emitter.line(&format!(
            "{} = \"stablehlo.dot_general\"({}) {{dot_dimension_numbers = #stablehlo.dot<{}>}} : {}",
            node.result,
            node.operands(),
            fields.join(", "),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None, None]) };
        let (lhs, rhs) = (&node.inputs[0], &node.inputs[1]);
        let d = &self.dimensions;
        let batch = d.lhs_batch.len();
        let lhs_free = DotDimensions::free(lhs.rank(), &d.lhs_batch, &d.lhs_contracting);
        let rhs_free = DotDimensions::free(rhs.rank(), &d.rhs_batch, &d.rhs_contracting);
        let ct_batch: Vec<usize> = (0..batch).collect();
        let ct_lhs_free: Vec<usize> = (batch..batch + lhs_free.len()).collect();
        let ct_rhs_free: Vec<usize> = (batch + lhs_free.len()..ct.rank()).collect();

        // d lhs = ct . rhs over rhs's free dims: [batch, lhs free, rhs contracting (rhs order)].
        let lhs_ct = ct.dot_general(
            rhs,
            &DotDimensions {
                lhs_batch: ct_batch.clone(),
                rhs_batch: d.rhs_batch.clone(),
                lhs_contracting: ct_rhs_free,
                rhs_contracting: rhs_free.clone(),
            },
        );
        let mut sorted_rhs_contracting = d.rhs_contracting.clone();
        sorted_rhs_contracting.sort_unstable();
        let mut lhs_position = vec![0; lhs.rank()];
        for (i, &dim) in d.lhs_batch.iter().enumerate() {
            lhs_position[dim] = i;
        }
        for (j, &dim) in lhs_free.iter().enumerate() {
            lhs_position[dim] = batch + j;
        }
        for (k, &dim) in d.lhs_contracting.iter().enumerate() {
            let partner = d.rhs_contracting[k];
            let rank =
                sorted_rhs_contracting.iter().position(|&c| c == partner).expect("partner is contracting");
            lhs_position[dim] = batch + lhs_free.len() + rank;
        }

        // d rhs = lhs . ct over lhs's free dims: [batch, lhs contracting (lhs order), rhs free].
        let rhs_ct = lhs.dot_general(
            ct,
            &DotDimensions {
                lhs_batch: d.lhs_batch.clone(),
                rhs_batch: ct_batch,
                lhs_contracting: lhs_free,
                rhs_contracting: ct_lhs_free,
            },
        );
        let mut sorted_lhs_contracting = d.lhs_contracting.clone();
        sorted_lhs_contracting.sort_unstable();
        let mut rhs_position = vec![0; rhs.rank()];
        for (i, &dim) in d.rhs_batch.iter().enumerate() {
            rhs_position[dim] = i;
        }
        for (k, &dim) in d.rhs_contracting.iter().enumerate() {
            let partner = d.lhs_contracting[k];
            let rank =
                sorted_lhs_contracting.iter().position(|&c| c == partner).expect("partner is contracting");
            rhs_position[dim] = batch + rank;
        }
        for (j, &dim) in rhs_free.iter().enumerate() {
            rhs_position[dim] = batch + d.lhs_contracting.len() + j;
        }
        Ok(vec![Some(lhs_ct.transpose(&lhs_position)), Some(rhs_ct.transpose(&rhs_position))])
    }
}

impl Value {
    /// General contraction: output dimensions are the batch dimensions, then lhs's free
    /// dimensions, then rhs's free dimensions.
    #[track_caller]
    pub fn dot_general(&self, rhs: &Value, dimensions: &DotDimensions) -> Value {
        self.dot_general_at(rhs, dimensions, Location::caller())
    }

    /// Matrix product contracting the last dimension of `self` with the first of `rhs`
    /// (`[.., k] x [k, n]`).
    #[track_caller]
    pub fn matmul(&self, rhs: &Value) -> Value {
        let location = Location::caller();
        if !check(self, self.rank() >= 1 && rhs.rank() >= 1, "matmul", location, || {
            format!("cannot multiply {:?} by {:?}", self.ty(), rhs.ty())
        }) {
            return self.clone();
        }
        self.dot_general_at(rhs, &DotDimensions::matmul(self.rank()), location)
    }

    fn dot_general_at(&self, rhs: &Value, d: &DotDimensions, location: &'static Location<'static>) -> Value {
        let distinct = |dims: &[usize], more: &[usize], rank: usize| {
            let mut seen = vec![false; rank];
            dims.iter().chain(more).all(|&dim| dim < rank && !std::mem::replace(&mut seen[dim], true))
        };
        let valid = self.dtype() == rhs.dtype()
            && d.lhs_batch.len() == d.rhs_batch.len()
            && d.lhs_contracting.len() == d.rhs_contracting.len()
            && distinct(&d.lhs_batch, &d.lhs_contracting, self.rank())
            && distinct(&d.rhs_batch, &d.rhs_contracting, rhs.rank())
            && d.lhs_batch.iter().zip(&d.rhs_batch).all(|(&l, &r)| self.dims()[l] == rhs.dims()[r])
            && d.lhs_contracting
                .iter()
                .zip(&d.rhs_contracting)
                .all(|(&l, &r)| self.dims()[l] == rhs.dims()[r]);
        if !check(self, valid, "dot_general", location, || {
            format!("cannot contract {:?} with {:?} using {d:?}", self.ty(), rhs.ty())
        }) {
            return self.clone();
        }
        let mut dims: Vec<i64> = d.lhs_batch.iter().map(|&b| self.dims()[b]).collect();
        dims.extend(
            DotDimensions::free(self.rank(), &d.lhs_batch, &d.lhs_contracting)
                .iter()
                .map(|&f| self.dims()[f]),
        );
        dims.extend(
            DotDimensions::free(rhs.rank(), &d.rhs_batch, &d.rhs_contracting).iter().map(|&f| rhs.dims()[f]),
        );
        single_result(
            DotGeneral { dimensions: d.clone() },
            &[self, rhs],
            self.ty().with_dims(&dims),
            location,
        )
    }
}
