//! The fields every optimizer config shares, with Levanter's names, defaults and learning-rate
//! schedule (`levanter.optim.config.OptimizerConfig`).
//!
//! The schedule runs in cycles (one unless `cycles`/`cycle_length` say otherwise); each cycle
//! is `[warmup] - [stable] - [decay]`: a linear warmup from the previous cycle's final value
//! (0 for the first), a constant stretch, and the `lr_schedule` decay over `decay` steps (the
//! rest of the cycle when `decay` is unset). `warmup`, `decay`, `rewarmup` and `cycle_length`
//! are fractions of the cycle (or run) when <= 1 and step counts when > 1. WSD schedules are
//! `decay: 0.2` (say) with `lr_schedule: linear`.

use serde::{Deserialize, Serialize};

use crate::combinators::{masked, Mask};
use crate::error::{OptimError, Result};
use crate::mask::{weight_decay_mask, WeightDecayModules};
use crate::optimizer::Optimizer;
use crate::schedule::Schedule;
use crate::transform::{Hyper, Transform};
use crate::transforms::add_decayed_weights;

/// `cycle_length`: a fraction or step count, or a list of cycle lengths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CycleLength {
    Length(f64),
    Lengths(Vec<i64>),
}

/// `cycles`: a number of equal cycles, or the list of cycle end points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cycles {
    Count(i64),
    Ends(Vec<i64>),
}

/// The base fields of every optimizer type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaseConfig {
    /// Peak learning rate (alias `lr`).
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// Warmup: fraction of the first cycle (<= 1) or steps (> 1).
    pub warmup: f64,
    /// Decay length: fraction of each cycle or steps; unset = the rest of the cycle.
    pub decay: Option<f64>,
    /// Warmup of later cycles (from the previous cycle's final rate).
    pub rewarmup: f64,
    /// Deprecated in Levanter: a final linear ramp to the minimum over this many steps.
    pub cooldown: Option<f64>,
    pub cycle_length: Option<CycleLength>,
    pub cycles: Option<Cycles>,
    /// `constant`, `cosine`, `linear`, `inv_sqrt` or `inv`.
    pub lr_schedule: String,
    /// Deprecated in Levanter: cycle end points.
    pub haps: Option<Vec<i64>>,
    /// Which parameters get weight decay: a regex (matched at the start of the dotted path) or
    /// a list of substrings.
    pub weight_decay_modules: Option<WeightDecayModules>,
    /// Apply the default rules (no decay for norms, embeddings, biases) to parameters the
    /// modules do not match; unset = only when no modules are given.
    pub default_weight_decay_mask: Option<bool>,
}

impl Default for BaseConfig {
    fn default() -> Self {
        BaseConfig {
            learning_rate: 6e-4,
            weight_decay: 0.1,
            min_lr_ratio: 0.1,
            warmup: 0.01,
            decay: None,
            rewarmup: 0.0,
            cooldown: None,
            cycle_length: None,
            cycles: None,
            lr_schedule: "cosine".into(),
            haps: None,
            weight_decay_modules: None,
            default_weight_decay_mask: None,
        }
    }
}

/// The schedule names `lr_schedule` accepts.
pub const LR_SCHEDULES: [&str; 5] = ["constant", "cosine", "linear", "inv_sqrt", "inv"];

/// Levanter's `_convert_frac_or_steps`: a fraction of `total` when <= 1, whole steps when > 1.
pub fn fraction_or_steps(value: f64, total: i64, path: &str) -> Result<i64> {
    if value.is_nan() || value < 0.0 || (value > 1.0 && value.fract() != 0.0) {
        return Err(OptimError::config(
            path,
            format!("{value} is neither a fraction in [0, 1] nor a whole number of steps"),
        ));
    }
    Ok(if value <= 1.0 { (value * total as f64) as i64 } else { value as i64 })
}

impl BaseConfig {
    /// Checks ranges and the schedule against the run length; `path` is the config path of
    /// the optimizer (`optimizer`).
    pub fn validate(&self, num_train_steps: u64, path: &str) -> Result<()> {
        let field = |name: &str| format!("{path}.{name}");
        if !(self.learning_rate >= 0.0 && self.learning_rate.is_finite()) {
            return Err(OptimError::config(
                field("learning_rate"),
                format!("must be a number >= 0, got {}", self.learning_rate),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(OptimError::config(
                field("weight_decay"),
                format!("must be a number >= 0, got {}", self.weight_decay),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(OptimError::config(
                field("min_lr_ratio"),
                format!("must be in [0, 1], got {}", self.min_lr_ratio),
            ));
        }
        if !LR_SCHEDULES.contains(&self.lr_schedule.as_str()) {
            return Err(OptimError::config(
                field("lr_schedule"),
                format!("unknown schedule `{}`; one of {}", self.lr_schedule, LR_SCHEDULES.join(", ")),
            ));
        }
        if self.lr_schedule == "inv" && self.min_lr_ratio == 0.0 {
            return Err(OptimError::config(
                field("min_lr_ratio"),
                "the `inv` schedule needs min_lr_ratio > 0",
            ));
        }
        // The regex of weight_decay_modules, checked here under the caller's path: `build`
        // compiles it again under the fixed path `optimizer`.
        self.weight_decay_mask(path)?;
        self.learning_rate_schedule(num_train_steps, path).map(drop)
    }

    /// Levanter's `_get_cycle_minima`: cycle boundaries from 0 to `total`.
    fn cycle_points(&self, total: i64, path: &str) -> Result<Vec<i64>> {
        let mut points = match (&self.cycle_length, &self.cycles, &self.haps) {
            (Some(_), Some(_), _) => {
                return Err(OptimError::config(
                    format!("{path}.cycles"),
                    "use either cycle_length or cycles, not both",
                ));
            }
            (Some(_), _, Some(_)) => {
                return Err(OptimError::config(
                    format!("{path}.haps"),
                    "use either cycle_length or haps, not both",
                ));
            }
            (Some(CycleLength::Length(length)), None, None) => {
                let length = fraction_or_steps(*length, total, &format!("{path}.cycle_length"))?;
                if length <= 0 {
                    return Err(OptimError::config(
                        format!("{path}.cycle_length"),
                        "must be at least one step",
                    ));
                }
                (1..total / length).map(|i| i * length).collect()
            }
            (Some(CycleLength::Lengths(lengths)), None, None) => {
                let mut end = 0;
                let mut points = Vec::new();
                for length in lengths {
                    end += length;
                    points.push(end);
                }
                if end > total {
                    return Err(OptimError::config(
                        format!("{path}.cycle_length"),
                        format!("cycle lengths add up to {end}, more than the {total} training steps"),
                    ));
                }
                points
            }
            (None, _, Some(haps)) => haps.clone(),
            (None, Some(Cycles::Count(count)), None) => {
                if *count < 1 {
                    return Err(OptimError::config(format!("{path}.cycles"), "must be at least 1"));
                }
                (0..count - 1).map(|i| (total as f64 / *count as f64 * (i + 1) as f64) as i64).collect()
            }
            (None, Some(Cycles::Ends(ends)), None) => ends.clone(),
            (None, None, None) => Vec::new(),
        };
        points.insert(0, 0);
        if points.last() != Some(&total) {
            points.push(total);
        }
        if points.windows(2).any(|pair| pair[0] >= pair[1]) || points.last() != Some(&total) {
            let field = if self.haps.is_some() { "haps" } else { "cycles" };
            return Err(OptimError::config(
                format!("{path}.{field}"),
                format!("cycle end points {points:?} must increase and end at the run's {total} steps"),
            ));
        }
        Ok(points)
    }

    /// The learning-rate schedule for a run of `num_train_steps` (Levanter's `lr_scheduler`).
    pub fn learning_rate_schedule(&self, num_train_steps: u64, path: &str) -> Result<Schedule> {
        let steps =
            i64::try_from(num_train_steps).ok().filter(|&steps| steps <= 1 << 53).ok_or_else(|| {
                OptimError::config(
                    path,
                    format!("a run of {num_train_steps} steps is longer than 2^53 steps"),
                )
            })?;
        let cooldown_steps = match self.cooldown {
            Some(cooldown) => fraction_or_steps(cooldown, steps, &format!("{path}.cooldown"))?,
            None => 0,
        };
        if cooldown_steps >= steps && cooldown_steps > 0 {
            return Err(OptimError::config(
                format!("{path}.cooldown"),
                format!("{cooldown_steps} steps of cooldown leave nothing of the run's {steps} steps"),
            ));
        }
        let main_steps = steps - cooldown_steps;
        let points = self.cycle_points(main_steps, path)?;
        let learning_rate = self.learning_rate;
        let min_lr = learning_rate * self.min_lr_ratio;
        let mut schedules = Vec::new();
        let mut boundaries = Vec::new();
        let mut previous_end = 0.0;
        let mut last: Option<(Schedule, i64)> = None;
        for (cycle, pair) in points.windows(2).enumerate() {
            let (start, end) = (pair[0], pair[1]);
            let cycle_steps = end - start;
            let warmup_steps = if cycle == 0 {
                fraction_or_steps(self.warmup, cycle_steps, &format!("{path}.warmup"))?
            } else {
                fraction_or_steps(self.rewarmup, cycle_steps, &format!("{path}.rewarmup"))?
            };
            if warmup_steps != 0 {
                schedules.push(Schedule::Linear {
                    init: previous_end,
                    end: learning_rate,
                    steps: warmup_steps,
                });
                boundaries.push(start + warmup_steps);
            }
            let decay_steps = match self.decay {
                Some(decay) => fraction_or_steps(decay, cycle_steps, &format!("{path}.decay"))?,
                None => cycle_steps - warmup_steps,
            };
            let stable_steps = cycle_steps - warmup_steps - decay_steps;
            if stable_steps < 0 {
                return Err(OptimError::config(
                    format!("{path}.decay"),
                    format!(
                        "warmup ({warmup_steps} steps) + decay ({decay_steps} steps) is longer than the cycle of {cycle_steps} steps"
                    ),
                ));
            }
            if stable_steps != 0 {
                schedules.push(Schedule::Constant(learning_rate));
                boundaries.push(start + warmup_steps + stable_steps);
            }
            if self.lr_schedule == "cosine" && decay_steps <= 0 {
                // optax's cosine_decay_schedule raises on this (Levanter fails to build).
                let field = match (self.decay, cycle) {
                    (Some(_), _) => "decay",
                    (None, 0) => "warmup",
                    (None, _) => "rewarmup",
                };
                return Err(OptimError::config(
                    format!("{path}.{field}"),
                    format!(
                        "the cosine decay needs at least one step, and {field} leaves none of the cycle's \
                         {cycle_steps} steps (warmup {warmup_steps} steps); shorten it, or use lr_schedule: \
                         constant for a warmup and no decay"
                    ),
                ));
            }
            let schedule = match self.lr_schedule.as_str() {
                "constant" => Schedule::Constant(learning_rate),
                "cosine" => Schedule::Cosine {
                    init: learning_rate,
                    decay_steps,
                    alpha: self.min_lr_ratio,
                    exponent: 1.0,
                },
                "linear" => Schedule::Linear { init: learning_rate, end: min_lr, steps: decay_steps },
                "inv_sqrt" => Schedule::InvSqrt { learning_rate, min_lr, warmup_steps, timescale: 10000.0 },
                "inv" => Schedule::Inv { learning_rate, min_lr, decay_steps },
                other => {
                    return Err(OptimError::config(
                        format!("{path}.lr_schedule"),
                        format!("unknown schedule `{other}`; one of {}", LR_SCHEDULES.join(", ")),
                    ))
                }
            };
            previous_end = schedule.at(decay_steps);
            schedules.push(schedule.clone());
            boundaries.push(end);
            last = Some((schedule, decay_steps));
        }
        if cooldown_steps != 0 {
            let (schedule, decay_steps) = last.expect("at least one cycle");
            schedules.push(Schedule::Linear {
                init: schedule.at(decay_steps),
                end: min_lr,
                steps: cooldown_steps,
            });
        }
        Ok(if schedules.len() == 1 {
            schedules.pop().expect("one schedule")
        } else {
            Schedule::Join { schedules, boundaries }
        })
    }

    /// The weight-decay mask (`None`: every parameter decays).
    pub fn weight_decay_mask(&self, path: &str) -> Result<Option<Mask>> {
        weight_decay_mask(self.weight_decay_modules.as_ref(), self.default_weight_decay_mask, path)
    }

    /// `add_decayed_weights(weight_decay)` on the masked parameters, or `None` when the
    /// config's `weight_decay` is 0 (as Levanter's `if self.weight_decay > 0`).
    pub fn decayed_weights(&self, weight_decay: Hyper, path: &str) -> Result<Option<Transform>> {
        if self.weight_decay <= 0.0 {
            return Ok(None);
        }
        let decay = add_decayed_weights(weight_decay);
        Ok(Some(match self.weight_decay_mask(path)? {
            Some(mask) => masked(decay, mask),
            None => decay,
        }))
    }

    /// Wraps `inner` in `inject_hyperparams` with `learning_rate` following this config's
    /// schedule (what Levanter's `build` returns). Inner transforms read it as
    /// `Hyper::injected("learning_rate")`.
    pub fn with_learning_rate_schedule(&self, inner: Transform, num_train_steps: u64) -> Result<Optimizer> {
        let schedule = self.learning_rate_schedule(num_train_steps, "optimizer")?;
        Ok(Optimizer::new(inner).with_schedule("learning_rate", schedule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from DESIGN.md (Levanter): lr 1e-2, warmup 0.1, 1000 steps, cosine.
    #[test]
    fn matches_levanter_golden_schedule() {
        let config = BaseConfig { learning_rate: 1e-2, warmup: 0.1, ..BaseConfig::default() };
        let schedule = config.learning_rate_schedule(1000, "optimizer").unwrap();
        assert_eq!(schedule.at(0), 0.0);
        assert!((schedule.at(50) - 5e-3).abs() < 1e-15);
        assert!((schedule.at(100) - 1e-2).abs() < 1e-15);
        assert!((schedule.at(999) - 1e-3).abs() < 1e-7, "{}", schedule.at(999));
    }

    #[test]
    fn wsd_and_cycles() {
        let wsd = BaseConfig {
            learning_rate: 1.0,
            warmup: 10.0,
            decay: Some(0.2),
            lr_schedule: "linear".into(),
            ..BaseConfig::default()
        };
        let schedule = wsd.learning_rate_schedule(100, "optimizer").unwrap();
        assert_eq!(schedule.at(5), 0.5);
        assert_eq!(schedule.at(50), 1.0);
        assert!((schedule.at(90) - 0.55).abs() < 1e-12);
        let cycles = BaseConfig {
            learning_rate: 1.0,
            warmup: 0.0,
            cycles: Some(Cycles::Count(2)),
            ..BaseConfig::default()
        };
        let schedule = cycles.learning_rate_schedule(100, "optimizer").unwrap();
        assert_eq!(schedule.at(0), 1.0);
        assert_eq!(schedule.at(50), 1.0);
        assert!(schedule.at(49) < 0.11);
    }

    #[test]
    fn rejects_schedules_longer_than_the_run() {
        let config = BaseConfig { warmup: 60.0, decay: Some(50.0), ..BaseConfig::default() };
        let error = config.validate(100, "optimizer").unwrap_err();
        assert!(
            error.to_string().starts_with("optimizer.decay: warmup (60 steps) + decay (50 steps)"),
            "{error}"
        );
        let error =
            BaseConfig { warmup: 1.5, ..BaseConfig::default() }.validate(100, "optimizer").unwrap_err();
        assert!(error.to_string().starts_with("optimizer.warmup"), "{error}");
        let error = BaseConfig { learning_rate: -1.0, ..BaseConfig::default() }
            .validate(100, "optimizer")
            .unwrap_err();
        assert!(error.to_string().starts_with("optimizer.learning_rate"), "{error}");
    }

    #[test]
    fn validation_names_a_bad_weight_decay_regex_under_the_callers_path() {
        let config = BaseConfig {
            weight_decay_modules: Some(WeightDecayModules::Regex("(".into())),
            ..BaseConfig::default()
        };
        let error = config.validate(100, "job.yaml: optimizer").unwrap_err();
        assert!(error.to_string().starts_with("job.yaml: optimizer.weight_decay_modules: "), "{error}");
    }
}
