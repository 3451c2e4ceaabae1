//! Learning-rate schedules with optax's shapes, evaluated on the host (f64) or in the graph
//! (f32) from the same description, so a logged or precomputed value is the value the step
//! uses.

use sirocco::hlo::Value;
use sirocco::DType;

/// A schedule `step -> value`.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// `optax.constant_schedule`.
    Constant(f64),
    /// `optax.linear_schedule(init, end, steps)`: from `init` to `end` over `steps`, then `end`.
    Linear { init: f64, end: f64, steps: i64 },
    /// `optax.cosine_decay_schedule(init, decay_steps, alpha, exponent)`.
    Cosine { init: f64, decay_steps: i64, alpha: f64, exponent: f64 },
    /// Levanter's `inv_sqrt`: `max(lr * min(1, 1/sqrt(max(t + warmup, 1) / timescale)), min_lr)`.
    InvSqrt { learning_rate: f64, min_lr: f64, warmup_steps: i64, timescale: f64 },
    /// Levanter's `inv`: `max(lr * min(1, 1/((lr/min_lr - 1) max(t, 1)/decay_steps + 1)), min_lr)`.
    Inv { learning_rate: f64, min_lr: f64, decay_steps: i64 },
    /// `optax.join_schedules`: schedule `i + 1` starts (at its own step 0) at `boundaries[i]`.
    Join { schedules: Vec<Schedule>, boundaries: Vec<i64> },
}

impl Schedule {
    /// The value at `step`, in f64.
    pub fn at(&self, step: i64) -> f64 {
        let t = step as f64;
        match self {
            Schedule::Constant(value) => *value,
            Schedule::Linear { init, end, steps } => {
                if *steps <= 0 {
                    return *init;
                }
                let count = t.clamp(0.0, *steps as f64);
                (init - end) * (1.0 - count / *steps as f64) + end
            }
            Schedule::Cosine { init, decay_steps, alpha, exponent } => {
                if *decay_steps <= 0 {
                    return *init;
                }
                let count = t.min(*decay_steps as f64);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * count / *decay_steps as f64).cos());
                init * ((1.0 - alpha) * cosine.powf(*exponent) + alpha)
            }
            Schedule::InvSqrt { learning_rate, min_lr, warmup_steps, timescale } => {
                let decay = (1.0 / ((t + *warmup_steps as f64).max(1.0) / timescale).sqrt()).min(1.0);
                (learning_rate * decay).max(*min_lr)
            }
            Schedule::Inv { learning_rate, min_lr, decay_steps } => {
                let decay = (1.0 / ((learning_rate / min_lr - 1.0) * t.max(1.0) / *decay_steps as f64 + 1.0))
                    .min(1.0);
                (learning_rate * decay).max(*min_lr)
            }
            Schedule::Join { schedules, boundaries } => {
                let mut value = schedules[0].at(step);
                for (boundary, schedule) in boundaries.iter().zip(&schedules[1..]) {
                    if step >= *boundary {
                        value = schedule.at(step - boundary);
                    }
                }
                value
            }
        }
    }

    /// The value at `step` (an integer scalar) as an f32 scalar built in the graph.
    pub fn build(&self, step: &Value) -> Value {
        let t = step.convert(DType::F32);
        let constant = |value: f64| t.scalar_like(value);
        match self {
            Schedule::Constant(value) => constant(*value),
            Schedule::Linear { init, end, steps } => {
                if *steps <= 0 {
                    return constant(*init);
                }
                let count = t.max(&constant(0.0)).min(&constant(*steps as f64));
                (1.0 - count / *steps as f64) * (init - end) + *end
            }
            Schedule::Cosine { init, decay_steps, alpha, exponent } => {
                if *decay_steps <= 0 {
                    return constant(*init);
                }
                let count = t.min(&constant(*decay_steps as f64));
                let cosine = ((count * (std::f64::consts::PI / *decay_steps as f64)).cos() + 1.0) * 0.5;
                let shaped = if *exponent == 1.0 { cosine } else { cosine.pow(&constant(*exponent)) };
                (shaped * (1.0 - alpha) + *alpha) * *init
            }
            Schedule::InvSqrt { learning_rate, min_lr, warmup_steps, timescale } => {
                let shifted = (&t + *warmup_steps as f64).max(&constant(1.0)) / *timescale;
                let decay = shifted.rsqrt().min(&constant(1.0));
                (decay * *learning_rate).max(&constant(*min_lr))
            }
            Schedule::Inv { learning_rate, min_lr, decay_steps } => {
                let denominator =
                    t.max(&constant(1.0)) * ((learning_rate / min_lr - 1.0) / *decay_steps as f64) + 1.0;
                let decay = denominator.reciprocal().min(&constant(1.0));
                (decay * *learning_rate).max(&constant(*min_lr))
            }
            Schedule::Join { schedules, boundaries } => {
                let mut value = schedules[0].build(step);
                for (boundary, schedule) in boundaries.iter().zip(&schedules[1..]) {
                    let start = step.scalar_like(*boundary as f64);
                    let later = schedule.build(&(step - &start));
                    value = step.lt(&start).select(&value, &later);
                }
                value
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_follow_optax() {
        let linear = Schedule::Linear { init: 0.0, end: 1e-2, steps: 100 };
        assert_eq!(linear.at(50), 5e-3);
        assert_eq!(linear.at(150), 1e-2);
        let cosine = Schedule::Cosine { init: 1.0, decay_steps: 10, alpha: 0.1, exponent: 1.0 };
        assert!((cosine.at(5) - 0.55).abs() < 1e-12);
        assert!((cosine.at(20) - 0.1).abs() < 1e-12);
        let joined = Schedule::Join { schedules: vec![linear, cosine], boundaries: vec![100] };
        assert!((joined.at(99) - 9.9e-3).abs() < 1e-15);
        assert_eq!(joined.at(100), 1.0);
    }
}
