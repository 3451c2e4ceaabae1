//! An independent f64 host implementation of the optimizers, written from the equations of
//! optax and Levanter and never calling xla-optim, to compare trajectories number by number.
//!
//! Sources: optax `_src/transform.py` (trace, ema, scale_by_adam, scale_by_adamax,
//! scale_by_lion, scale_by_rms, scale), `_src/clipping.py` (clip_by_global_norm,
//! clip_by_block_rms), `_src/factorized.py` (scale_by_factored_rms), `transforms/_adding.py`
//! (add_decayed_weights), `transforms/_masking.py` (masked), `transforms/_conditionality.py`
//! (apply_if_finite), `_src/alias.py` (sgd; rmsprop, whose momentum trace follows the
//! learning-rate scale), `_src/schedule.py`; Levanter `optim/config.py` (the learning-rate
//! schedule, AdamConfig, LionConfig, the defaults) and `optim/skipstep.py`; Marin's
//! add-optimizer tutorial (AdamaxConfig). A transform keeps its state inside and creates it on
//! first use.

use std::f64::consts::PI;
use std::rc::Rc;

use serde_yaml::Value as Yaml;

/// A dense row-major f64 array.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<i64>,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn new(dims: &[i64], data: Vec<f64>) -> Tensor {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{dims:?}");
        Tensor { dims: dims.to_vec(), data }
    }

    pub fn full(dims: &[i64], value: f64) -> Tensor {
        Tensor::new(dims, vec![value; dims.iter().product::<i64>() as usize])
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Tensor {
        Tensor::new(&self.dims, self.data.iter().map(|&x| f(x)).collect())
    }

    pub fn zip(&self, other: &Tensor, f: impl Fn(f64, f64) -> f64) -> Tensor {
        assert_eq!(self.dims, other.dims);
        Tensor::new(&self.dims, self.data.iter().zip(&other.data).map(|(&a, &b)| f(a, b)).collect())
    }

    pub fn sum_of_squares(&self) -> f64 {
        self.data.iter().map(|x| x * x).sum()
    }

    pub fn mean(&self) -> f64 {
        self.data.iter().sum::<f64>() / self.data.len() as f64
    }

    /// The mean over `axis`, which is removed.
    pub fn mean_axis(&self, axis: usize) -> Tensor {
        let dims = without(&self.dims, axis);
        let mut sums = vec![0.0; dims.iter().product::<i64>() as usize];
        for (flat, &x) in self.data.iter().enumerate() {
            sums[offset(&dims, &without(&unravel(flat, &self.dims), axis))] += x;
        }
        let size = self.dims[axis] as f64;
        Tensor::new(&dims, sums.into_iter().map(|s| s / size).collect())
    }

    /// The element at the full `index` of a tensor whose `axis` was removed to give `self`.
    fn at_without(&self, index: &[i64], axis: usize) -> f64 {
        self.data[offset(&self.dims, &without(index, axis))]
    }
}

fn without(values: &[i64], removed: usize) -> Vec<i64> {
    values.iter().enumerate().filter(|&(i, _)| i != removed).map(|(_, &v)| v).collect()
}

fn unravel(mut flat: usize, dims: &[i64]) -> Vec<i64> {
    let mut index = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        index[d] = (flat % dims[d] as usize) as i64;
        flat /= dims[d] as usize;
    }
    index
}

fn offset(dims: &[i64], index: &[i64]) -> usize {
    index.iter().zip(dims).fold(0, |offset, (&i, &d)| offset * d as usize + i as usize)
}

/// `jnp.sign`: 0 at 0 (unlike `f64::signum`).
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// optax's `global_norm`.
pub fn global_norm(values: &[Tensor]) -> f64 {
    values.iter().map(Tensor::sum_of_squares).sum::<f64>().sqrt()
}

fn zeros_like(values: &[Tensor]) -> Vec<Tensor> {
    values.iter().map(|v| Tensor::full(&v.dims, 0.0)).collect()
}

/// What an update reads besides the updates and its own state.
pub struct Context<'a> {
    pub names: &'a [String],
    pub params: &'a [Tensor],
    /// The injected learning rate of this step.
    pub learning_rate: f64,
    /// The loss of this step (skip_bad_steps).
    pub loss: f64,
}

/// A scalar hyperparameter: a constant or a multiple of the injected learning rate.
#[derive(Clone, Copy, Debug)]
pub enum Rate {
    Constant(f64),
    LearningRateTimes(f64),
}

impl Rate {
    fn value(self, ctx: &Context) -> f64 {
        match self {
            Rate::Constant(value) => value,
            Rate::LearningRateTimes(factor) => ctx.learning_rate * factor,
        }
    }
}

/// An optax gradient transformation with its state inside.
pub trait Transform: CloneTransform {
    fn update(&mut self, updates: Vec<Tensor>, ctx: &Context) -> Vec<Tensor>;
}

pub trait CloneTransform {
    fn clone_box(&self) -> Box<dyn Transform>;
}

impl<T: Transform + Clone + 'static> CloneTransform for T {
    fn clone_box(&self) -> Box<dyn Transform> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn Transform> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// `optax.clip_by_global_norm`: `u / norm * max_norm` when `norm >= max_norm`.
#[derive(Clone)]
pub struct ClipByGlobalNorm(pub f64);

impl Transform for ClipByGlobalNorm {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        let norm = global_norm(&updates);
        if norm < self.0 {
            return updates;
        }
        updates.iter().map(|u| u.map(|x| x / norm * self.0)).collect()
    }
}

/// `f` elementwise over two lists of tensors.
fn zip_each(a: &[Tensor], b: &[Tensor], f: impl Fn(f64, f64) -> f64 + Copy) -> Vec<Tensor> {
    a.iter().zip(b).map(|(a, b)| a.zip(b, f)).collect()
}

/// optax's `tree_update_moment`: `(1 - decay) g^order + decay m`.
fn update_moment(updates: &[Tensor], moments: &[Tensor], decay: f64, order: i32) -> Vec<Tensor> {
    zip_each(updates, moments, |g, m| (1.0 - decay) * g.powi(order) + decay * m)
}

/// optax's `tree_bias_correction`: `m / (1 - decay^count)`.
fn bias_correction(moments: &[Tensor], decay: f64, count: i32) -> Vec<Tensor> {
    let correction = 1.0 - decay.powi(count);
    moments.iter().map(|m| m.map(|x| x / correction)).collect()
}

/// State created on first use: tensors like `updates`, filled with `value`.
fn init(state: &mut Vec<Tensor>, updates: &[Tensor], value: f64) {
    if state.is_empty() {
        *state = updates.iter().map(|u| Tensor::full(&u.dims, value)).collect();
    }
}

/// `optax.trace`: `t = g + decay t`; outputs `t`, or `g + decay t` with Nesterov.
#[derive(Clone)]
pub struct Trace {
    pub decay: f64,
    pub nesterov: bool,
    trace: Vec<Tensor>,
}

pub fn trace(decay: f64, nesterov: bool) -> Box<dyn Transform> {
    Box::new(Trace { decay, nesterov, trace: Vec::new() })
}

impl Transform for Trace {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        init(&mut self.trace, &updates, 0.0);
        let decay = self.decay;
        self.trace = zip_each(&updates, &self.trace, |g, t| g + decay * t);
        if self.nesterov {
            zip_each(&updates, &self.trace, |g, t| g + decay * t)
        } else {
            self.trace.clone()
        }
    }
}

/// `optax.ema`: `e = (1 - decay) g + decay e`, debiased by `1 - decay^t` if asked.
#[derive(Clone)]
pub struct Ema {
    pub decay: f64,
    pub debias: bool,
    /// The average is stored rounded to f32 (`accumulator_dtype=float32`).
    pub f32_accumulator: bool,
    count: i32,
    ema: Vec<Tensor>,
}

pub fn ema(decay: f64, debias: bool) -> Box<dyn Transform> {
    Box::new(Ema { decay, debias, f32_accumulator: false, count: 0, ema: Vec::new() })
}

/// `optax.ema(decay, debias, accumulator_dtype=float32)` on f64 updates: `decay * t` is an f32
/// product, the average is computed in f64 and stored rounded to f32.
pub fn ema_f32(decay: f64, debias: bool) -> Box<dyn Transform> {
    Box::new(Ema { decay, debias, f32_accumulator: true, count: 0, ema: Vec::new() })
}

impl Transform for Ema {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        init(&mut self.ema, &updates, 0.0);
        self.count += 1;
        let average = if self.f32_accumulator {
            // `decay * t` in f32 (a Python float times an f32 array), the sum in f64.
            let decay = self.decay as f32;
            updates
                .iter()
                .zip(&self.ema)
                .map(|(g, t)| g.zip(t, |g, t| (1.0 - self.decay) * g + f64::from(decay * t as f32)))
                .collect()
        } else {
            update_moment(&updates, &self.ema, self.decay, 1)
        };
        self.ema = if self.f32_accumulator {
            average.iter().map(|t| t.map(|x| x as f32 as f64)).collect()
        } else {
            average.clone()
        };
        if self.debias {
            bias_correction(&average, self.decay, self.count)
        } else {
            average
        }
    }
}

/// `optax.scale_by_adam` (eps_root 0): `m̂ / (sqrt(v̂) + eps)`; with Nesterov,
/// `m̂ = b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t)`.
#[derive(Clone)]
pub struct Adam {
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
    pub nesterov: bool,
    count: i32,
    mu: Vec<Tensor>,
    nu: Vec<Tensor>,
}

pub fn scale_by_adam(b1: f64, b2: f64, eps: f64, nesterov: bool) -> Box<dyn Transform> {
    Box::new(Adam { b1, b2, eps, nesterov, count: 0, mu: Vec::new(), nu: Vec::new() })
}

impl Transform for Adam {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        init(&mut self.mu, &updates, 0.0);
        init(&mut self.nu, &updates, 0.0);
        let (b1, eps, t) = (self.b1, self.eps, self.count + 1);
        self.count = t;
        self.mu = update_moment(&updates, &self.mu, b1, 1);
        self.nu = update_moment(&updates, &self.nu, self.b2, 2);
        let mu_hat = if self.nesterov {
            let (momentum, gradient) =
                (bias_correction(&self.mu, b1, t + 1), bias_correction(&updates, b1, t));
            zip_each(&momentum, &gradient, |m, g| b1 * m + (1.0 - b1) * g)
        } else {
            bias_correction(&self.mu, b1, t)
        };
        zip_each(&mu_hat, &bias_correction(&self.nu, self.b2, t), |m, v| m / (v.sqrt() + eps))
    }
}

/// `optax.scale_by_adamax`: `m / (1 - b1^t) / v` with `v = max(|g| + eps, b2 v)`.
#[derive(Clone)]
pub struct Adamax {
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
    count: i32,
    mu: Vec<Tensor>,
    nu: Vec<Tensor>,
}

pub fn scale_by_adamax(b1: f64, b2: f64, eps: f64) -> Box<dyn Transform> {
    Box::new(Adamax { b1, b2, eps, count: 0, mu: Vec::new(), nu: Vec::new() })
}

impl Transform for Adamax {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        init(&mut self.mu, &updates, 0.0);
        init(&mut self.nu, &updates, 0.0);
        let (b2, eps) = (self.b2, self.eps);
        self.count += 1;
        self.mu = update_moment(&updates, &self.mu, self.b1, 1);
        self.nu = zip_each(&updates, &self.nu, |g, v| (g.abs() + eps).max(b2 * v));
        zip_each(&bias_correction(&self.mu, self.b1, self.count), &self.nu, |m, v| m / v)
    }
}

/// `optax.scale_by_lion`: `sign((1 - b1) g + b1 m)`, then `m = (1 - b2) g + b2 m`.
#[derive(Clone)]
pub struct Lion {
    pub b1: f64,
    pub b2: f64,
    mu: Vec<Tensor>,
}

pub fn scale_by_lion(b1: f64, b2: f64) -> Box<dyn Transform> {
    Box::new(Lion { b1, b2, mu: Vec::new() })
}

impl Transform for Lion {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        init(&mut self.mu, &updates, 0.0);
        let b1 = self.b1;
        let outputs = zip_each(&updates, &self.mu, |g, m| sign((1.0 - b1) * g + b1 * m));
        self.mu = update_moment(&updates, &self.mu, self.b2, 1);
        outputs
    }
}

/// `optax.scale_by_rms`: `v = (1 - decay) g² + decay v` from `initial_scale`, debiased if
/// asked; `g / sqrt(v + eps)` (eps_in_sqrt) or `g / (sqrt(v) + eps)`.
#[derive(Clone)]
pub struct Rms {
    pub decay: f64,
    pub eps: f64,
    pub initial_scale: f64,
    pub eps_in_sqrt: bool,
    pub bias_correction: bool,
    count: i32,
    nu: Vec<Tensor>,
}

pub fn scale_by_rms(
    decay: f64,
    eps: f64,
    initial_scale: f64,
    eps_in_sqrt: bool,
    bias_correction: bool,
) -> Box<dyn Transform> {
    Box::new(Rms { decay, eps, initial_scale, eps_in_sqrt, bias_correction, count: 0, nu: Vec::new() })
}

impl Transform for Rms {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        init(&mut self.nu, &updates, self.initial_scale);
        let eps = self.eps;
        self.nu = update_moment(&updates, &self.nu, self.decay, 2);
        let nu_hat = if self.bias_correction {
            self.count += 1;
            bias_correction(&self.nu, self.decay, self.count)
        } else {
            self.nu.clone()
        };
        if self.eps_in_sqrt {
            zip_each(&nu_hat, &updates, |v, g| 1.0 / (v + eps).sqrt() * g)
        } else {
            zip_each(&nu_hat, &updates, |v, g| 1.0 / (v.sqrt() + eps) * g)
        }
    }
}

/// `optax.scale_by_factored_rms`: row and column second moments for parameters whose two
/// largest dimensions reach `min_dim_size_to_factor` (when `factored`), a full one otherwise;
/// `ρ = 1 - (step - step_offset + 1)^-decay_rate` (in f32) at the pre-increment step.
#[derive(Clone)]
pub struct FactoredRms {
    pub factored: bool,
    pub decay_rate: f64,
    pub min_dim_size_to_factor: i64,
    pub epsilon: f64,
    /// The step minus the offset.
    step: i32,
    /// Per parameter: (v_row, v_col) or (v, unused).
    moments: Vec<(Tensor, Tensor)>,
}

pub fn scale_by_factored_rms(
    factored: bool,
    decay_rate: f64,
    step_offset: i32,
    min_dim_size_to_factor: i64,
    epsilon: f64,
) -> Box<dyn Transform> {
    let step = -step_offset;
    Box::new(FactoredRms { factored, decay_rate, min_dim_size_to_factor, epsilon, step, moments: Vec::new() })
}

impl FactoredRms {
    /// `(d1, d0)`: the second-largest and the largest dimension (numpy's argsort, stable on
    /// these small shapes), when both are large enough.
    pub fn factored_dims(&self, dims: &[i64]) -> Option<(usize, usize)> {
        if !self.factored || dims.len() < 2 {
            return None;
        }
        let mut order: Vec<usize> = (0..dims.len()).collect();
        order.sort_by_key(|&d| (dims[d], d));
        let (d1, d0) = (order[dims.len() - 2], order[dims.len() - 1]);
        (dims[d1] >= self.min_dim_size_to_factor).then_some((d1, d0))
    }
}

impl Transform for FactoredRms {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        if self.moments.is_empty() {
            self.moments = updates
                .iter()
                .map(|g| match self.factored_dims(&g.dims) {
                    Some((d1, d0)) => {
                        (Tensor::full(&without(&g.dims, d0), 0.0), Tensor::full(&without(&g.dims, d1), 0.0))
                    }
                    None => (Tensor::full(&g.dims, 0.0), Tensor::full(&[], 0.0)),
                })
                .collect();
        }
        // optax's `_decay_rate_pow` computes in f32, whatever the parameters' type.
        let rho = f64::from(1.0 - (self.step as f32 + 1.0).powf(-self.decay_rate as f32));
        self.step += 1;
        let mut outputs = Vec::new();
        for (index, g) in updates.iter().enumerate() {
            let g_sq = g.map(|x| x * x + self.epsilon);
            let factored = self.factored_dims(&g.dims);
            let (first, second) = &mut self.moments[index];
            match factored {
                Some((d1, d0)) => {
                    *first = first.zip(&g_sq.mean_axis(d0), |v, s| rho * v + (1.0 - rho) * s);
                    *second = second.zip(&g_sq.mean_axis(d1), |v, s| rho * v + (1.0 - rho) * s);
                    let reduced_d1 = if d1 > d0 { d1 - 1 } else { d1 };
                    let row_col_mean = first.mean_axis(reduced_d1);
                    let mut update = g.clone();
                    for (flat, u) in update.data.iter_mut().enumerate() {
                        let full = unravel(flat, &g.dims);
                        let row = without(&full, d0);
                        let row_factor = (first.at_without(&full, d0)
                            / row_col_mean.at_without(&row, reduced_d1))
                        .powf(-0.5);
                        let col_factor = second.at_without(&full, d1).powf(-0.5);
                        *u = *u * row_factor * col_factor;
                    }
                    outputs.push(update);
                }
                None => {
                    *first = first.zip(&g_sq, |v, s| rho * v + (1.0 - rho) * s);
                    outputs.push(g.zip(first, |g, v| g * v.powf(-0.5)));
                }
            }
        }
        outputs
    }
}

/// `optax.clip_by_block_rms`: `u / max(1, rms(u) / threshold)` per tensor.
#[derive(Clone)]
pub struct ClipByBlockRms(pub f64);

impl Transform for ClipByBlockRms {
    fn update(&mut self, updates: Vec<Tensor>, _: &Context) -> Vec<Tensor> {
        updates
            .iter()
            .map(|u| {
                let denominator = ((u.sum_of_squares() / u.data.len() as f64).sqrt() / self.0).max(1.0);
                u.map(|x| x / denominator)
            })
            .collect()
    }
}

/// `optax.add_decayed_weights`: `u + weight_decay p`.
#[derive(Clone)]
pub struct AddDecayedWeights(pub Rate);

impl Transform for AddDecayedWeights {
    fn update(&mut self, updates: Vec<Tensor>, ctx: &Context) -> Vec<Tensor> {
        let weight_decay = self.0.value(ctx);
        updates.iter().zip(ctx.params).map(|(u, p)| u.zip(p, |u, p| u + weight_decay * p)).collect()
    }
}

/// `optax.scale`: `u * factor`.
#[derive(Clone)]
pub struct Scale(pub Rate);

impl Transform for Scale {
    fn update(&mut self, updates: Vec<Tensor>, ctx: &Context) -> Vec<Tensor> {
        let factor = self.0.value(ctx);
        updates.iter().map(|u| u.map(|x| x * factor)).collect()
    }
}

/// `optax.scale_by_param_block_rms`: `u * max(rms(p), min_scale)` per tensor (optax's
/// `safe_root_mean_squares`).
#[derive(Clone)]
pub struct ScaleByParamBlockRms(pub f64);

impl Transform for ScaleByParamBlockRms {
    fn update(&mut self, updates: Vec<Tensor>, ctx: &Context) -> Vec<Tensor> {
        updates
            .iter()
            .zip(ctx.params)
            .map(|(u, p)| {
                let rms = (p.sum_of_squares() / p.data.len() as f64).sqrt();
                let factor = if rms <= self.0 { self.0 } else { rms };
                u.map(|x| x * factor)
            })
            .collect()
    }
}

/// `optax.scale(-learning_rate)` with the injected learning rate.
pub fn descend() -> Box<dyn Transform> {
    Box::new(Scale(Rate::LearningRateTimes(-1.0)))
}

/// `optax.chain`.
#[derive(Clone)]
pub struct Chain(pub Vec<Box<dyn Transform>>);

impl Transform for Chain {
    fn update(&mut self, mut updates: Vec<Tensor>, ctx: &Context) -> Vec<Tensor> {
        for transform in &mut self.0 {
            updates = transform.update(updates, ctx);
        }
        updates
    }
}

pub fn chain(transforms: Vec<Box<dyn Transform>>) -> Box<dyn Transform> {
    Box::new(Chain(transforms))
}

/// `optax.masked`: the inner transform sees the selected parameters; the others' updates pass
/// through unchanged.
#[derive(Clone)]
pub struct Masked {
    pub inner: Box<dyn Transform>,
    pub selects: Rc<dyn Fn(&str) -> bool>,
}

pub fn masked(inner: Box<dyn Transform>, selects: impl Fn(&str) -> bool + 'static) -> Box<dyn Transform> {
    Box::new(Masked { inner, selects: Rc::new(selects) })
}

impl Transform for Masked {
    fn update(&mut self, mut updates: Vec<Tensor>, ctx: &Context) -> Vec<Tensor> {
        let indices: Vec<usize> = (0..ctx.names.len()).filter(|&i| (self.selects)(&ctx.names[i])).collect();
        let names: Vec<String> = indices.iter().map(|&i| ctx.names[i].clone()).collect();
        let params: Vec<Tensor> = indices.iter().map(|&i| ctx.params[i].clone()).collect();
        let selected = indices.iter().map(|&i| updates[i].clone()).collect();
        let sub =
            Context { names: &names, params: &params, learning_rate: ctx.learning_rate, loss: ctx.loss };
        for (&i, update) in indices.iter().zip(self.inner.update(selected, &sub)) {
            updates[i] = update;
        }
        updates
    }
}

/// `optax.apply_if_finite`: a step whose updates are not all finite outputs zeros and leaves
/// the inner state alone, unless more than `max_consecutive_errors` came in a row.
#[derive(Clone)]
pub struct ApplyIfFinite {
    pub inner: Box<dyn Transform>,
    pub max_consecutive_errors: i32,
    pub notfinite_count: i32,
    pub total_notfinite: i32,
}

impl Transform for ApplyIfFinite {
    fn update(&mut self, updates: Vec<Tensor>, ctx: &Context) -> Vec<Tensor> {
        let finite = updates.iter().all(|u| u.data.iter().all(|x| x.is_finite()));
        self.notfinite_count = if finite { 0 } else { self.notfinite_count + 1 };
        self.total_notfinite += i32::from(!finite);
        if finite || self.notfinite_count > self.max_consecutive_errors {
            self.inner.update(updates, ctx)
        } else {
            zeros_like(&updates)
        }
    }
}

/// Levanter's `SkipStepConfig.wrap`: skip (zero updates, inner state kept) when the loss or
/// the gradient norm exceeds the history's mean by `sigma_factor` standard deviations, once
/// `max(2, L / 2)` points are in the history of `L + 1`.
#[derive(Clone)]
pub struct SkipBadSteps {
    pub inner: Box<dyn Transform>,
    pub rolling_interval_length: usize,
    pub sigma_factor: f64,
    losses: Vec<f64>,
    grad_norms: Vec<f64>,
    current_idx: usize,
    count: usize,
    pub skipped: bool,
}

pub fn skip_bad_steps(
    inner: Box<dyn Transform>,
    rolling_interval_length: usize,
    sigma_factor: f64,
) -> SkipBadSteps {
    SkipBadSteps {
        inner,
        rolling_interval_length,
        sigma_factor,
        losses: vec![f64::NAN; rolling_interval_length + 1],
        grad_norms: vec![f64::NAN; rolling_interval_length + 1],
        current_idx: 0,
        count: 0,
        skipped: false,
    }
}

/// `nanmean` and `nanstd` of the first `count` entries, with Levanter's fallbacks (mean 0,
/// std at least 1e-6).
fn history_stats(history: &[f64], count: usize) -> (f64, f64) {
    let valid: Vec<f64> = history[..count].iter().copied().filter(|x| !x.is_nan()).collect();
    if valid.is_empty() {
        return (0.0, 1e-6);
    }
    let n = valid.len() as f64;
    let mean = valid.iter().sum::<f64>() / n;
    let variance = valid.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, variance.sqrt().max(1e-6))
}

impl Transform for SkipBadSteps {
    fn update(&mut self, updates: Vec<Tensor>, ctx: &Context) -> Vec<Tensor> {
        let norm = global_norm(&updates);
        let can_skip = self.count >= (self.rolling_interval_length / 2).max(2);
        let (loss_mean, loss_std) = history_stats(&self.losses, self.count);
        let (norm_mean, norm_std) = history_stats(&self.grad_norms, self.count);
        let ok = ctx.loss <= loss_mean + self.sigma_factor * loss_std
            && norm <= norm_mean + self.sigma_factor * norm_std;
        self.skipped = can_skip && !ok;
        self.losses[self.current_idx] = ctx.loss;
        self.grad_norms[self.current_idx] = norm;
        self.current_idx = (self.current_idx + 1) % (self.rolling_interval_length + 1);
        self.count = (self.count + 1).min(self.rolling_interval_length + 1);
        if self.skipped {
            zeros_like(&updates)
        } else {
            self.inner.update(updates, ctx)
        }
    }
}

/// `optax.linear_schedule(init, end, steps)`.
pub fn linear_schedule(init: f64, end: f64, steps: i64, count: i64) -> f64 {
    if steps <= 0 {
        return init;
    }
    let count = count.clamp(0, steps) as f64;
    (init - end) * (1.0 - count / steps as f64) + end
}

/// `optax.cosine_decay_schedule(init, decay_steps, alpha)`.
pub fn cosine_schedule(init: f64, decay_steps: i64, alpha: f64, count: i64) -> f64 {
    let count = count.min(decay_steps) as f64;
    let cosine = 0.5 * (1.0 + (PI * count / decay_steps as f64).cos());
    init * ((1.0 - alpha) * cosine + alpha)
}

/// Levanter's `_convert_frac_or_steps`.
fn fraction_or_steps(value: f64, total: i64) -> i64 {
    if value <= 1.0 {
        (value * total as f64) as i64
    } else {
        value as i64
    }
}

/// Levanter's `OptimizerConfig.lr_scheduler`: cycles of `[warmup] - [stable] - [decay]`,
/// each warmup rising linearly from the previous cycle's final value.
#[derive(Clone, Debug)]
pub struct LrSchedule {
    pub learning_rate: f64,
    pub min_lr_ratio: f64,
    pub warmup: f64,
    pub decay: Option<f64>,
    pub rewarmup: f64,
    pub cycles: Option<i64>,
    pub kind: String,
    pub num_train_steps: i64,
}

impl LrSchedule {
    /// The decay part of a cycle, `count` steps into it.
    fn decay_value(&self, count: i64, warmup_steps: i64, decay_steps: i64) -> f64 {
        let lr = self.learning_rate;
        let min_lr = lr * self.min_lr_ratio;
        let t = count as f64;
        match self.kind.as_str() {
            "constant" => lr,
            "cosine" => cosine_schedule(lr, decay_steps, self.min_lr_ratio, count),
            "linear" => linear_schedule(lr, min_lr, decay_steps, count),
            "inv_sqrt" => {
                let decay = (1.0 / ((t + warmup_steps as f64).max(1.0) / 10000.0).sqrt()).min(1.0);
                (lr * decay).max(min_lr)
            }
            "inv" => {
                let decay = (1.0 / ((lr / min_lr - 1.0) * t.max(1.0) / decay_steps as f64 + 1.0)).min(1.0);
                (lr * decay).max(min_lr)
            }
            other => panic!("no reference for lr_schedule {other}"),
        }
    }

    pub fn at(&self, step: i64) -> f64 {
        let total = self.num_train_steps;
        let mut points = vec![0];
        if let Some(cycles) = self.cycles {
            points.extend((0..cycles - 1).map(|i| (total as f64 / cycles as f64 * (i + 1) as f64) as i64));
        }
        points.push(total);
        let mut previous_end = 0.0;
        for (cycle, pair) in points.windows(2).enumerate() {
            let (start, end) = (pair[0], pair[1]);
            let cycle_steps = end - start;
            let warmup = fraction_or_steps(if cycle == 0 { self.warmup } else { self.rewarmup }, cycle_steps);
            let decay_steps =
                self.decay.map_or(cycle_steps - warmup, |decay| fraction_or_steps(decay, cycle_steps));
            let decay_start = end - decay_steps;
            if step < end || end == total {
                return if step < start + warmup {
                    linear_schedule(previous_end, self.learning_rate, warmup, step - start)
                } else if step < decay_start {
                    self.learning_rate
                } else {
                    self.decay_value(step - decay_start, warmup, decay_steps)
                };
            }
            previous_end = self.decay_value(decay_steps, warmup, decay_steps);
        }
        unreachable!("the last cycle ends the run")
    }
}

/// An optimizer of the reference: a transformation under an injected learning-rate
/// schedule (optax's `inject_hyperparams`, read at the pre-increment count).
pub struct Optimizer {
    pub transform: Box<dyn Transform>,
    pub schedule: LrSchedule,
    pub names: Vec<String>,
    pub count: i64,
}

impl Optimizer {
    /// `transform` without a schedule (the learning rate reads 0), for parameters `names`.
    pub fn unscheduled(transform: Box<dyn Transform>, names: &[&str]) -> Optimizer {
        let schedule = LrSchedule {
            learning_rate: 0.0,
            min_lr_ratio: 0.0,
            warmup: 0.0,
            decay: None,
            rewarmup: 0.0,
            cycles: None,
            kind: "constant".into(),
            num_train_steps: 1,
        };
        Optimizer {
            transform,
            schedule,
            names: names.iter().map(|name| name.to_string()).collect(),
            count: 0,
        }
    }

    /// One update of `params` with `grads`; returns the learning rate it used.
    pub fn step(&mut self, params: &mut [Tensor], grads: &[Tensor], loss: f64) -> f64 {
        let learning_rate = self.schedule.at(self.count);
        self.step_at(params, grads, loss, learning_rate);
        learning_rate
    }

    /// One update at a given learning rate (the f32 value a compiled step used, once checked
    /// against the schedule), so that trajectories compare the transforms alone.
    pub fn step_at(&mut self, params: &mut [Tensor], grads: &[Tensor], loss: f64, learning_rate: f64) {
        self.count += 1;
        apply(self.transform.as_mut(), &self.names, params, grads, learning_rate, loss);
    }
}

/// `params += transform(grads)` (optax's `apply_updates`), the transform reading `names`,
/// `learning_rate` and `loss`.
pub fn apply(
    transform: &mut dyn Transform,
    names: &[String],
    params: &mut [Tensor],
    grads: &[Tensor],
    learning_rate: f64,
    loss: f64,
) {
    let ctx = Context { names, params, learning_rate, loss };
    let updates = transform.update(grads.to_vec(), &ctx);
    for (p, u) in params.iter_mut().zip(&updates) {
        *p = p.zip(u, |p, u| p + u);
    }
}

/// Reads an optimizer section of YAML with Levanter's fields and defaults.
struct Fields(serde_yaml::Mapping);

impl Fields {
    fn get(&self, key: &str) -> Option<&Yaml> {
        self.0.get(key)
    }

    fn number(&self, key: &str, default: f64) -> f64 {
        self.optional(key, Some(default)).unwrap_or_else(|| panic!("{key} is null"))
    }

    /// A number, `null` (None) or the default when absent.
    fn optional(&self, key: &str, default: Option<f64>) -> Option<f64> {
        match self.get(key) {
            None => default,
            Some(Yaml::Null) => None,
            Some(value) => Some(value.as_f64().unwrap_or_else(|| panic!("{key}: not a number"))),
        }
    }

    fn flag(&self, key: &str, default: bool) -> bool {
        self.get(key).map_or(default, |value| value.as_bool().unwrap_or_else(|| panic!("{key}: not a bool")))
    }
}

/// The default weight-decay mask (DESIGN.md, after Levanter's `reasonable_default`): no decay
/// for paths naming a norm or an embedding, or ending in `bias`.
pub fn decays_by_default(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.contains("norm") || lower.contains("embed") || name.ends_with("bias"))
}

/// The reference of the built-in optimizer types for a YAML optimizer section, for a run of
/// `num_train_steps` updating parameters named `names`.
pub fn from_yaml(text: &str, num_train_steps: i64, names: &[&str]) -> Optimizer {
    let fields = match serde_yaml::from_str(text).unwrap() {
        Yaml::Mapping(mapping) => Fields(mapping),
        other => panic!("not a mapping: {other:?}"),
    };
    let kind = fields.get("type").map_or("adam", |t| t.as_str().unwrap()).to_string();
    let learning_rate = fields.optional("lr", None).unwrap_or_else(|| fields.number("learning_rate", 6e-4));
    let schedule = LrSchedule {
        learning_rate,
        min_lr_ratio: fields.number("min_lr_ratio", 0.1),
        warmup: fields.number("warmup", 0.01),
        decay: fields.optional("decay", None),
        rewarmup: fields.number("rewarmup", 0.0),
        cycles: fields.optional("cycles", None).map(|c| c as i64),
        kind: fields.get("lr_schedule").map_or("cosine", |s| s.as_str().unwrap()).to_string(),
        num_train_steps,
    };
    let weight_decay = fields.number("weight_decay", 0.1);
    let max_grad_norm = fields.optional("max_grad_norm", Some(1.0));
    let mut components: Vec<Box<dyn Transform>> = Vec::new();
    if let Some(max_norm) = max_grad_norm {
        components.push(Box::new(ClipByGlobalNorm(max_norm)));
    }
    // Levanter: `if self.weight_decay > 0: add_decayed_weights(rate, mask)`.
    let decayed = |rate: Rate| -> Option<Box<dyn Transform>> {
        (weight_decay > 0.0).then(|| masked(Box::new(AddDecayedWeights(rate)), decays_by_default))
    };
    let mut after_learning_rate: Vec<Box<dyn Transform>> = Vec::new();
    let mut last = descend();
    match kind.as_str() {
        "sgd" => {
            if let Some(momentum) = fields.optional("momentum", Some(0.9)) {
                components.push(trace(momentum, fields.flag("nesterov", false)));
            }
            components.extend(decayed(Rate::Constant(weight_decay)));
        }
        "adam" => {
            let (b1, b2) = (fields.number("beta1", 0.9), fields.number("beta2", 0.95));
            components.push(scale_by_adam(
                b1,
                b2,
                fields.number("epsilon", 1e-8),
                fields.flag("nesterov", false),
            ));
            let rate = if fields.flag("adamc_weight_decay", false) {
                Rate::LearningRateTimes(weight_decay / learning_rate)
            } else if fields.flag("decoupled_weight_decay", false) {
                Rate::Constant(weight_decay / learning_rate)
            } else {
                Rate::Constant(weight_decay)
            };
            components.extend(decayed(rate));
        }
        "adamax" => {
            let (b1, b2) = (fields.number("beta1", 0.9), fields.number("beta2", 0.95));
            components.push(scale_by_adamax(b1, b2, fields.number("epsilon", 1e-8)));
            components.extend(decayed(Rate::Constant(weight_decay)));
        }
        "lion" => {
            components.push(scale_by_lion(fields.number("beta1", 0.9), fields.number("beta2", 0.95)));
            components.extend(decayed(Rate::Constant(weight_decay)));
        }
        "adafactor" => {
            // optax.adafactor's chain; the learning rate comes before the parameter scale and
            // the momentum, and the decay is scaled by it like every type's.
            components.push(scale_by_factored_rms(
                fields.flag("factored", true),
                fields.number("decay_rate", 0.8),
                fields.number("decay_offset", 0.0) as i32,
                fields.number("min_dim_size_to_factor", 128.0) as i64,
                fields.number("epsilon", 1e-30),
            ));
            if let Some(threshold) = fields.optional("clipping_threshold", Some(1.0)) {
                components.push(Box::new(ClipByBlockRms(threshold)));
            }
            components.push(Box::new(Scale(Rate::LearningRateTimes(1.0))));
            if fields.flag("multiply_by_parameter_scale", true) {
                components.push(Box::new(ScaleByParamBlockRms(1e-3)));
            }
            if let Some(beta1) = fields.optional("beta1", None) {
                components.push(ema_f32(beta1, false));
            }
            components.extend(decayed(Rate::LearningRateTimes(weight_decay)));
            last = Box::new(Scale(Rate::Constant(-1.0)));
        }
        "rmsprop" => {
            components.push(scale_by_rms(
                fields.number("beta2", 0.9),
                fields.number("epsilon", 1e-8),
                fields.number("initial_scale", 0.0),
                fields.flag("eps_in_sqrt", true),
                fields.flag("bias_correction", false),
            ));
            components.extend(decayed(Rate::Constant(weight_decay)));
            // optax.rmsprop: the momentum trace comes after the learning-rate scale.
            if let Some(momentum) = fields.optional("momentum", None) {
                after_learning_rate.push(trace(momentum, fields.flag("nesterov", false)));
            }
        }
        other => panic!("no reference for optimizer type {other}"),
    }
    components.push(last);
    components.extend(after_learning_rate);
    Optimizer { schedule, ..Optimizer::unscheduled(chain(components), names) }
}
