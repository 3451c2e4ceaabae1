//! Weight-decay masks with Levanter's rules (`OptimizerConfig.build_weight_decay_mask`).
//!
//! A parameter is decayed when its dotted path matches `weight_decay_modules` (a regex
//! anchored at the start, as Python's `re.match`, or any of a list of substrings). With the
//! default mask (used when no modules are given, or when `default_weight_decay_mask: true`),
//! parameters that match nothing are decayed unless their path names a norm or an embedding,
//! or ends in `bias`.

use serde::{Deserialize, Serialize};

use crate::combinators::Mask;
use crate::error::{OptimError, Result};
use crate::transform::ParamSpec;

/// `weight_decay_modules`: a regex or a list of substrings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WeightDecayModules {
    Regex(String),
    Substrings(Vec<String>),
}

type PathMatcher = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Levanter's "reasonable default": no decay for norms, embeddings and biases. Levanter
/// matches module class names (`LayerNorm`, `RMSNorm`, `Embedding`); sirocco matches the
/// dotted path: a component naming a norm (`norm`, or `ln_*` as GPT-2's `ln_1`, `ln_f`) or an
/// embedding (`embed`, or GPT-2's `wte`/`wpe`), or a path ending in `bias`.
pub fn default_excludes(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let names_norm_or_embedding = |component: &str| {
        component.contains("norm")
            || component.contains("embed")
            || component.starts_with("ln_")
            || component == "wte"
            || component == "wpe"
    };
    lower.split('.').any(names_norm_or_embedding) || path.ends_with("bias")
}

/// The decay mask for `modules` and `default_weight_decay_mask`, or `None` when nothing is
/// decayed by mask rules (Levanter returns no mask: everything decays).
pub fn weight_decay_mask(
    modules: Option<&WeightDecayModules>,
    default_mask: Option<bool>,
    path: &str,
) -> Result<Option<Mask>> {
    if modules.is_none() && default_mask == Some(false) {
        return Ok(None);
    }
    let use_default = default_mask == Some(true) || (default_mask.is_none() && modules.is_none());
    let matcher: Option<PathMatcher> = match modules {
        None => None,
        Some(WeightDecayModules::Regex(pattern)) => {
            let regex = regex::Regex::new(&format!("^(?:{pattern})")).map_err(|error| {
                OptimError::config(format!("{path}.weight_decay_modules"), error.to_string())
            })?;
            Some(Box::new(move |name: &str| regex.is_match(name)))
        }
        Some(WeightDecayModules::Substrings(targets)) => {
            let targets = targets.clone();
            Some(Box::new(move |name: &str| targets.iter().any(|target| name.contains(target.as_str()))))
        }
    };
    let description = match modules {
        None => "default: not norms, embeddings or biases".to_string(),
        Some(modules) => format!("{modules:?} (default rules: {use_default})"),
    };
    Ok(Some(Mask::new(description, move |param: &ParamSpec| {
        let matched = matcher.as_ref().is_some_and(|matches| matches(&param.name));
        if matched {
            return true;
        }
        if use_default {
            return !default_excludes(&param.name);
        }
        false
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sirocco::DType;

    fn decays(mask: &Option<Mask>, name: &str) -> bool {
        mask.as_ref().is_none_or(|mask| mask.includes(&ParamSpec::new(name, DType::F32, &[2])))
    }

    #[test]
    fn default_mask_skips_norms_embeddings_and_biases() {
        let mask = weight_decay_mask(None, None, "optimizer").unwrap();
        assert!(decays(&mask, "layers.0.mlp.gate_proj.weight"));
        assert!(!decays(&mask, "layers.0.attention_norm.weight"));
        assert!(!decays(&mask, "embed_tokens.weight"));
        assert!(!decays(&mask, "layers.0.mlp.up.bias"));
        // GPT-2's names: embeddings and LayerNorm gains are not decayed, matrices are.
        for name in ["wte.weight", "wpe.weight", "h.ln_1.weight", "ln_f.weight"] {
            assert!(!decays(&mask, name), "{name}");
        }
        assert!(decays(&mask, "h.attn.c_attn.weight"));
        assert!(decays(&mask, "h.mlp.c_fc.weight"));
    }

    #[test]
    fn modules_select_by_regex_or_substring() {
        let regex = WeightDecayModules::Regex(r".*attn.*weight|.*mlp.*weight".into());
        let mask = weight_decay_mask(Some(&regex), None, "optimizer").unwrap();
        assert!(decays(&mask, "h.0.attn.c_attn.weight"));
        assert!(!decays(&mask, "h.0.ln_1.weight"));
        assert!(!decays(&mask, "wte.weight"));
        let list = WeightDecayModules::Substrings(vec!["mlp".into()]);
        let with_default = weight_decay_mask(Some(&list), Some(true), "optimizer").unwrap();
        assert!(decays(&with_default, "attn.weight"));
        assert!(!decays(&with_default, "norm.weight"));
        assert!(decays(&weight_decay_mask(None, Some(false), "optimizer").unwrap(), "norm.weight"));
        let error =
            weight_decay_mask(Some(&WeightDecayModules::Regex("(".into())), None, "optimizer").err().unwrap();
        assert!(error.to_string().starts_with("optimizer.weight_decay_modules"), "{error}");
    }
}
