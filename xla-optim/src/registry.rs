//! Optimizer types by YAML `type:` name.
//!
//! A type is a plain serde struct of its own fields (the shared fields live in
//! [`BaseConfig`]) that implements [`OptimizerType`]. Any crate can [`register`] one; the
//! built-in types are registered on first use. Registering a name again with the same Rust
//! type is harmless (as re-running a notebook cell should be); with another type it is an
//! error.
//!
//! YAML: `type:` picks the type (`adam` when absent); `lr` is accepted for `learning_rate`;
//! every other key must be a base field or a field of the type, or the error names it
//! (`optimizer.beta3`).

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{OnceLock, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml::{Mapping, Value as Yaml};

use crate::config::BaseConfig;
use crate::error::{OptimError, Result};
use crate::optimizer::Optimizer;

/// An optimizer type: its own fields (serde, with defaults) and how to build it.
pub trait OptimizerType: Serialize + DeserializeOwned + Default + Debug + Send + Sync + 'static {
    /// One line for `sirocco optimizers`.
    const DOC: &'static str;

    /// Documentation of the type's own fields: (name, doc).
    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Range checks of the type's fields (`path` is the optimizer's config path).
    fn validate(&self, base: &BaseConfig, path: &str) -> Result<()> {
        let _ = (base, path);
        Ok(())
    }

    /// The optimizer for a run of `num_train_steps` (used by the learning-rate schedule).
    fn build(&self, base: &BaseConfig, num_train_steps: u64) -> Result<Optimizer>;
}

/// A parsed type-specific config behind a trait object.
trait DynConfig: Debug + Send + Sync {
    fn validate(&self, base: &BaseConfig, path: &str) -> Result<()>;
    fn build(&self, base: &BaseConfig, num_train_steps: u64) -> Result<Optimizer>;
    fn to_yaml(&self) -> Yaml;
}

impl<T: OptimizerType> DynConfig for T {
    fn validate(&self, base: &BaseConfig, path: &str) -> Result<()> {
        OptimizerType::validate(self, base, path)
    }
    fn build(&self, base: &BaseConfig, num_train_steps: u64) -> Result<Optimizer> {
        OptimizerType::build(self, base, num_train_steps)
    }
    fn to_yaml(&self) -> Yaml {
        serde_yaml::to_value(self).unwrap_or(Yaml::Null)
    }
}

type Parse = fn(Mapping, &str) -> Result<Box<dyn DynConfig>>;

#[derive(Clone)]
pub(crate) struct RegistryEntry {
    type_id: TypeId,
    type_name: &'static str,
    doc: &'static str,
    defaults: fn() -> Yaml,
    field_docs: fn() -> &'static [(&'static str, &'static str)],
    parse: Parse,
}

/// What `sirocco optimizers` prints about a type.
#[derive(Clone, Debug)]
pub struct TypeInfo {
    pub name: String,
    pub doc: &'static str,
    /// (field, default value as YAML, doc): the type's own fields.
    pub fields: Vec<(String, String, String)>,
}

fn registry() -> &'static RwLock<BTreeMap<String, RegistryEntry>> {
    static REGISTRY: OnceLock<RwLock<BTreeMap<String, RegistryEntry>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let lock = RwLock::new(BTreeMap::new());
        crate::optimizers::register_builtins(&mut lock.write().expect("fresh lock"));
        lock
    })
}

fn entry_for<T: OptimizerType>() -> RegistryEntry {
    RegistryEntry {
        type_id: TypeId::of::<T>(),
        type_name: std::any::type_name::<T>(),
        doc: T::DOC,
        defaults: || serde_yaml::to_value(T::default()).unwrap_or(Yaml::Null),
        field_docs: T::field_docs,
        parse: parse_as::<T>,
    }
}

pub(crate) fn insert<T: OptimizerType>(map: &mut BTreeMap<String, RegistryEntry>, name: &str) -> Result<()> {
    if let Some(existing) = map.get(name) {
        if existing.type_id == TypeId::of::<T>() {
            return Ok(());
        }
        return Err(OptimError::Registry(format!(
            "optimizer type `{name}` is already registered as {}; cannot register {} under the same name",
            existing.type_name,
            std::any::type_name::<T>()
        )));
    }
    // YAML keys go to the type's fields first: one named like a base field would make the
    // base field unreachable for this type.
    let mut reserved = key_names(&serde_yaml::to_value(BaseConfig::default()).unwrap_or(Yaml::Null));
    reserved.extend(["type".to_string(), "lr".to_string()]);
    let own = key_names(&serde_yaml::to_value(T::default()).unwrap_or(Yaml::Null));
    if let Some(field) = own.iter().find(|field| reserved.contains(field)) {
        return Err(OptimError::Registry(format!(
            "optimizer type `{name}` ({}): field `{field}` has the name of a field every optimizer \
             config has (or of `type`/`lr`); rename it",
            std::any::type_name::<T>()
        )));
    }
    map.insert(name.to_string(), entry_for::<T>());
    Ok(())
}

/// Registers `T` under `name` for YAML `type: name`.
pub fn register<T: OptimizerType>(name: &str) -> Result<()> {
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(OptimError::Registry(format!(
            "`{name}` is not a valid type name (letters, digits, _ and -)"
        )));
    }
    let mut map = registry().write().map_err(|_| OptimError::Registry("registry lock poisoned".into()))?;
    insert::<T>(&mut map, name)
}

/// The registered type names, sorted.
pub fn registered_types() -> Vec<String> {
    registry().read().map(|map| map.keys().cloned().collect()).unwrap_or_default()
}

/// Every registered type with its fields and defaults.
pub fn describe_types() -> Vec<TypeInfo> {
    let map = match registry().read() {
        Ok(map) => map.clone(),
        Err(_) => return Vec::new(),
    };
    map.into_iter()
        .map(|(name, entry)| {
            let docs = (entry.field_docs)();
            let fields = match (entry.defaults)() {
                Yaml::Mapping(defaults) => defaults
                    .into_iter()
                    .map(|(key, value)| {
                        let key = key.as_str().unwrap_or_default().to_string();
                        let doc =
                            docs.iter().find(|(field, _)| *field == key).map(|(_, doc)| doc.to_string());
                        (key, yaml_inline(&value), doc.unwrap_or_default())
                    })
                    .collect(),
                _ => Vec::new(),
            };
            TypeInfo { name, doc: entry.doc, fields }
        })
        .collect()
}

/// A YAML value on one line.
pub fn yaml_inline(value: &Yaml) -> String {
    match value {
        Yaml::Null => "null".into(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().replace('\n', " "),
    }
}

fn key_names(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Mapping(mapping) => mapping.keys().filter_map(|k| k.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Deserializes `fields` as `T`; on failure finds the field at fault by trying each alone.
fn deserialize_fields<T: DeserializeOwned + Serialize + Default>(fields: &Mapping, path: &str) -> Result<T> {
    match serde_yaml::from_value::<T>(Yaml::Mapping(fields.clone())) {
        Ok(value) => Ok(value),
        Err(error) => {
            for (key, value) in fields {
                let mut single = Mapping::new();
                single.insert(key.clone(), value.clone());
                if let Err(field_error) = serde_yaml::from_value::<T>(Yaml::Mapping(single)) {
                    let name = key.as_str().unwrap_or("?");
                    return Err(OptimError::config(
                        format!("{path}.{name}"),
                        format!("{field_error} (got {})", yaml_inline(value)),
                    ));
                }
            }
            Err(OptimError::config(path, error.to_string()))
        }
    }
}

fn parse_as<T: OptimizerType>(fields: Mapping, path: &str) -> Result<Box<dyn DynConfig>> {
    let config: T = deserialize_fields(&fields, path)?;
    Ok(Box::new(config))
}

/// An optimizer config read from YAML: the type, the shared fields and the type's fields.
#[derive(Debug)]
pub struct OptimizerConfig {
    type_name: String,
    base: BaseConfig,
    specific: Box<dyn DynConfig>,
    /// The key the YAML gave the learning rate under (`learning_rate` or its alias `lr`), so
    /// that errors name what the user wrote.
    learning_rate_key: &'static str,
}

/// `error`, with a `learning_rate` path renamed to `key`.
fn name_learning_rate(error: OptimError, path: &str, key: &str) -> OptimError {
    match error {
        OptimError::Config { path: field, message } if field == format!("{path}.learning_rate") => {
            OptimError::Config { path: format!("{path}.{key}"), message }
        }
        other => other,
    }
}

impl OptimizerConfig {
    /// Reads the `optimizer` section. `path` names it in errors (`optimizer`, or
    /// `job.yaml: optimizer`).
    pub fn from_yaml(value: &Yaml, path: &str) -> Result<OptimizerConfig> {
        let mut mapping = match value {
            Yaml::Mapping(mapping) => mapping.clone(),
            Yaml::Null => Mapping::new(),
            other => {
                return Err(OptimError::config(
                    path,
                    format!("expected a mapping of optimizer fields, got {}", yaml_inline(other)),
                ))
            }
        };
        let type_name = match mapping.remove("type") {
            None => "adam".to_string(),
            Some(Yaml::String(name)) => name,
            Some(other) => {
                return Err(OptimError::config(
                    format!("{path}.type"),
                    format!("expected a type name, got {}", yaml_inline(&other)),
                ))
            }
        };
        let entry = registry()
            .read()
            .map_err(|_| OptimError::Registry("registry lock poisoned".into()))?
            .get(&type_name)
            .cloned()
            .ok_or_else(|| OptimError::UnknownType {
                path: format!("{path}.type"),
                name: type_name.clone(),
                registered: registered_types(),
            })?;
        let mut learning_rate_key = "learning_rate";
        if let Some(lr) = mapping.remove("lr") {
            learning_rate_key = "lr";
            if mapping.contains_key("learning_rate") {
                return Err(OptimError::config(
                    format!("{path}.lr"),
                    "both `lr` and `learning_rate` are given; `lr` is an alias, keep one",
                ));
            }
            mapping.insert(Yaml::from("learning_rate"), lr);
        }
        let base_keys = key_names(&serde_yaml::to_value(BaseConfig::default()).unwrap_or(Yaml::Null));
        let own_keys = key_names(&(entry.defaults)());
        let mut base_fields = Mapping::new();
        let mut own_fields = Mapping::new();
        for (key, value) in mapping {
            let name = key.as_str().map(str::to_string).ok_or_else(|| {
                OptimError::config(path, format!("field names must be strings, got {}", yaml_inline(&key)))
            })?;
            if own_keys.contains(&name) {
                own_fields.insert(key, value);
            } else if base_keys.contains(&name) {
                base_fields.insert(key, value);
            } else {
                let mut allowed = own_keys.clone();
                allowed.extend(base_keys.iter().cloned());
                allowed.push("lr".into());
                return Err(OptimError::config(
                    format!("{path}.{name}"),
                    format!(
                        "unknown field for optimizer type `{type_name}`; allowed: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let base: BaseConfig = deserialize_fields(&base_fields, path)
            .map_err(|error| name_learning_rate(error, path, learning_rate_key))?;
        let specific = (entry.parse)(own_fields, path)?;
        Ok(OptimizerConfig { type_name, base, specific, learning_rate_key })
    }

    /// Reads a YAML document holding the optimizer fields (as `sirocco optim replay` takes).
    pub fn from_yaml_str(text: &str, path: &str) -> Result<OptimizerConfig> {
        let value: Yaml =
            serde_yaml::from_str(text).map_err(|error| OptimError::config(path, error.to_string()))?;
        Self::from_yaml(&value, path)
    }

    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    pub fn base(&self) -> &BaseConfig {
        &self.base
    }

    /// Checks every field and the schedule against the run length, before anything compiles.
    pub fn validate(&self, num_train_steps: u64, path: &str) -> Result<()> {
        self.base
            .validate(num_train_steps, path)
            .map_err(|error| name_learning_rate(error, path, self.learning_rate_key))?;
        self.specific.validate(&self.base, path)
    }

    /// Validates, then builds the optimizer for a run of `num_train_steps`.
    pub fn build(&self, num_train_steps: u64, path: &str) -> Result<Optimizer> {
        self.validate(num_train_steps, path)?;
        self.specific.build(&self.base, num_train_steps)
    }

    /// The resolved config (every field, defaults included), as saved with checkpoints.
    pub fn to_yaml(&self) -> Yaml {
        let mut mapping = Mapping::new();
        mapping.insert("type".into(), Yaml::from(self.type_name.clone()));
        for source in [serde_yaml::to_value(&self.base).unwrap_or(Yaml::Null), self.specific.to_yaml()] {
            if let Yaml::Mapping(fields) = source {
                mapping.extend(fields);
            }
        }
        Yaml::Mapping(mapping)
    }
}

/// Checks a beta in [0, 1).
pub fn check_beta(value: f64, path: &str, name: &str) -> Result<()> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(OptimError::config(format!("{path}.{name}"), format!("must be in [0, 1), got {value}")))
    }
}

/// Checks a finite value > 0.
pub fn check_positive(value: f64, path: &str, name: &str) -> Result<()> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(OptimError::config(format!("{path}.{name}"), format!("must be a number > 0, got {value}")))
    }
}
