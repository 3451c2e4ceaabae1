//! Compile options, checked against the client and encoded as the `xla.CompileOptionsProto` that
//! `PJRT_Client_Compile` takes.
//!
//! XLA CHECK-fails (aborts the process) on some malformed options, e.g. empty options or build
//! options without `num_replicas`, so options are validated and always encoded complete here.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use super::client::Client;
use super::error::{PjrtError, Result};

/// How to compile a program: replication, SPMD partitioning and device placement.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileOptions {
    /// Data-parallel copies of the program (at least 1).
    pub num_replicas: usize,
    /// Pieces the program is partitioned into (at least 1; more than 1 needs SPMD).
    pub num_partitions: usize,
    /// Partition with XLA's SPMD partitioner, from `mhlo.sharding` annotations.
    pub use_spmd_partitioning: bool,
    /// Partition with Shardy (`sdy.*` annotations) instead of the GSPMD partitioner.
    pub use_shardy_partitioner: bool,
    /// `[replica][partition]` -> device id; `None` takes the client's addressable devices in
    /// order (see [`CompileOptions::resolve`]).
    pub device_assignment: Option<Vec<Vec<i64>>>,
    /// `DebugOptions` overrides by flag name, e.g. `xla_cpu_enable_fast_math`.
    pub env_option_overrides: BTreeMap<String, OptionOverride>,
}

/// The value of one `env_option_overrides` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionOverride {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            num_replicas: 1,
            num_partitions: 1,
            use_spmd_partitioning: false,
            use_shardy_partitioner: false,
            device_assignment: None,
            env_option_overrides: BTreeMap::new(),
        }
    }
}

impl CompileOptions {
    /// Checks the options against `client` (see [`CompileOptions::resolve`]).
    pub fn validate(&self, client: &Client) -> Result<()> {
        self.resolve(client).map(drop)
    }

    /// The options checked against `client`, with the device assignment filled in: replica `r`
    /// of partition `p` runs on addressable device `p * num_replicas + r`, XLA's default order.
    ///
    /// Checks: at least one replica and partition; no more replicas x partitions than
    /// addressable devices; an explicit assignment is `num_replicas x num_partitions` distinct,
    /// existing device ids; several partitions require SPMD partitioning (MPMD is not supported).
    pub fn resolve(&self, client: &Client) -> Result<CompileOptions> {
        let invalid = |message: String| Err(PjrtError::InvalidOptions(message));
        if self.num_replicas == 0 || self.num_partitions == 0 {
            return invalid(format!(
                "num_replicas ({}) and num_partitions ({}) must be at least 1",
                self.num_replicas, self.num_partitions
            ));
        }
        if self.num_partitions > 1 && !self.use_spmd_partitioning {
            return invalid(format!(
                "num_partitions = {} needs use_spmd_partitioning = true (MPMD programs are not supported)",
                self.num_partitions
            ));
        }
        let addressable = client.addressable_devices();
        let needed = self.num_replicas.saturating_mul(self.num_partitions);
        if needed > addressable.len() {
            return invalid(format!(
                "{} replicas x {} partitions need {needed} devices, but the {} client has {} addressable devices",
                self.num_replicas,
                self.num_partitions,
                client.platform_name(),
                addressable.len()
            ));
        }
        let device_assignment = match &self.device_assignment {
            Some(assignment) => {
                self.check_assignment(assignment, client)?;
                Some(assignment.clone())
            }
            None if needed > 1 => Some(
                (0..self.num_replicas)
                    .map(|replica| {
                        (0..self.num_partitions)
                            .map(|partition| addressable[partition * self.num_replicas + replica].id())
                            .collect()
                    })
                    .collect(),
            ),
            None => None,
        };
        Ok(CompileOptions { device_assignment, ..self.clone() })
    }

    fn check_assignment(&self, assignment: &[Vec<i64>], client: &Client) -> Result<()> {
        let shape_ok = assignment.len() == self.num_replicas
            && assignment.iter().all(|row| row.len() == self.num_partitions);
        if !shape_ok {
            let shape: Vec<usize> = assignment.iter().map(Vec::len).collect();
            return Err(PjrtError::InvalidOptions(format!(
                "device_assignment must be {} replicas x {} partitions, got {} rows of lengths {shape:?}",
                self.num_replicas,
                self.num_partitions,
                assignment.len()
            )));
        }
        let existing: BTreeSet<i64> = client.devices().iter().map(|device| device.id()).collect();
        let mut seen = BTreeSet::new();
        for (replica, row) in assignment.iter().enumerate() {
            for (partition, &id) in row.iter().enumerate() {
                let place = format!("device_assignment[{replica}][{partition}] = {id}");
                if !existing.contains(&id) {
                    return Err(PjrtError::InvalidOptions(format!(
                        "{place}: no such device (the client's device ids are {existing:?})"
                    )));
                }
                if !seen.insert(id) {
                    return Err(PjrtError::InvalidOptions(format!("{place}: device {id} is assigned twice")));
                }
            }
        }
        Ok(())
    }

    /// The serialized `xla.CompileOptionsProto`. Never empty: it always carries the build
    /// options with `num_replicas` (XLA aborts without them).
    pub fn encode(&self) -> Vec<u8> {
        let device_assignment = self.device_assignment.as_ref().map(|assignment| DeviceAssignmentProto {
            replica_count: proto_int(self.num_replicas),
            computation_count: proto_int(self.num_partitions),
            // One entry per partition ("computation"), listing its device for every replica.
            computation_devices: (0..self.num_partitions)
                .map(|partition| ComputationDevice {
                    replica_device_ids: assignment
                        .iter()
                        .filter_map(|row| row.get(partition).copied())
                        .collect(),
                })
                .collect(),
        });
        let proto = CompileOptionsProto {
            executable_build_options: Some(ExecutableBuildOptionsProto {
                // -1: no single device, the device assignment (or XLA's default) places the program.
                device_ordinal: -1,
                num_replicas: proto_int(self.num_replicas).into(),
                num_partitions: proto_int(self.num_partitions).into(),
                use_spmd_partitioning: self.use_spmd_partitioning,
                device_assignment,
                use_shardy_partitioner: self.use_shardy_partitioner,
            }),
            env_option_overrides: self
                .env_option_overrides
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        OptionOverride::Str(text) => option_override::Value::String(text.clone()),
                        OptionOverride::Bool(flag) => option_override::Value::Bool(*flag),
                        OptionOverride::Int(number) => option_override::Value::Int(*number),
                        OptionOverride::Double(number) => option_override::Value::Double(*number),
                    };
                    (name.clone(), OptionOverrideProto { value: Some(value) })
                })
                .collect(),
        };
        proto.encode_to_vec()
    }
}

/// Counts are validated against the device count long before they could overflow an i32.
fn proto_int(count: usize) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

// The subset of xla/pjrt/proto/compile_options.proto and xla/xla_data.proto that sirocco sets,
// with the upstream field numbers.

/// `xla.CompileOptionsProto`.
#[derive(Clone, PartialEq, Message)]
struct CompileOptionsProto {
    #[prost(message, optional, tag = "3")]
    executable_build_options: Option<ExecutableBuildOptionsProto>,
    #[prost(btree_map = "string, message", tag = "7")]
    env_option_overrides: BTreeMap<String, OptionOverrideProto>,
}

/// `xla.ExecutableBuildOptionsProto`.
#[derive(Clone, PartialEq, Message)]
struct ExecutableBuildOptionsProto {
    #[prost(int64, tag = "1")]
    device_ordinal: i64,
    #[prost(int64, tag = "4")]
    num_replicas: i64,
    #[prost(int64, tag = "5")]
    num_partitions: i64,
    #[prost(bool, tag = "6")]
    use_spmd_partitioning: bool,
    #[prost(message, optional, tag = "9")]
    device_assignment: Option<DeviceAssignmentProto>,
    #[prost(bool, tag = "19")]
    use_shardy_partitioner: bool,
}

/// `xla.DeviceAssignmentProto`.
#[derive(Clone, PartialEq, Message)]
struct DeviceAssignmentProto {
    #[prost(int32, tag = "1")]
    replica_count: i32,
    #[prost(int32, tag = "2")]
    computation_count: i32,
    #[prost(message, repeated, tag = "3")]
    computation_devices: Vec<ComputationDevice>,
}

/// `xla.DeviceAssignmentProto.ComputationDevice`.
#[derive(Clone, PartialEq, Message)]
struct ComputationDevice {
    #[prost(int64, repeated, tag = "1")]
    replica_device_ids: Vec<i64>,
}

/// `xla.OptionOverrideProto`.
#[derive(Clone, PartialEq, Message)]
struct OptionOverrideProto {
    #[prost(oneof = "option_override::Value", tags = "1, 2, 3, 4")]
    value: Option<option_override::Value>,
}

mod option_override {
    /// The `value` oneof of `xla.OptionOverrideProto`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(options: &CompileOptions) -> ExecutableBuildOptionsProto {
        let bytes = options.encode();
        assert!(!bytes.is_empty());
        CompileOptionsProto::decode(bytes.as_slice()).unwrap().executable_build_options.unwrap()
    }

    #[test]
    fn default_options_carry_one_replica() {
        let build = decode(&CompileOptions::default());
        assert_eq!((build.num_replicas, build.num_partitions, build.device_ordinal), (1, 1, -1));
        assert!(!build.use_spmd_partitioning && !build.use_shardy_partitioner);
        assert_eq!(build.device_assignment, None);
    }

    #[test]
    fn device_assignment_is_listed_per_partition() {
        let options = CompileOptions {
            num_replicas: 2,
            num_partitions: 3,
            use_spmd_partitioning: true,
            use_shardy_partitioner: true,
            // [replica][partition]
            device_assignment: Some(vec![vec![0, 1, 2], vec![3, 4, 5]]),
            ..CompileOptions::default()
        };
        let build = decode(&options);
        assert_eq!((build.num_replicas, build.num_partitions), (2, 3));
        assert!(build.use_spmd_partitioning && build.use_shardy_partitioner);
        let assignment = build.device_assignment.unwrap();
        assert_eq!((assignment.replica_count, assignment.computation_count), (2, 3));
        let per_partition: Vec<Vec<i64>> =
            assignment.computation_devices.into_iter().map(|devices| devices.replica_device_ids).collect();
        assert_eq!(per_partition, vec![vec![0, 3], vec![1, 4], vec![2, 5]]);
    }

    #[test]
    fn env_option_overrides_round_trip() {
        let mut options = CompileOptions::default();
        options.env_option_overrides.insert("xla_a".into(), OptionOverride::Str("x".into()));
        options.env_option_overrides.insert("xla_b".into(), OptionOverride::Bool(true));
        options.env_option_overrides.insert("xla_c".into(), OptionOverride::Int(-3));
        options.env_option_overrides.insert("xla_d".into(), OptionOverride::Double(0.5));
        let proto = CompileOptionsProto::decode(options.encode().as_slice()).unwrap();
        let values: Vec<(String, option_override::Value)> = proto
            .env_option_overrides
            .into_iter()
            .map(|(name, value)| (name, value.value.unwrap()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("xla_a".into(), option_override::Value::String("x".into())),
                ("xla_b".into(), option_override::Value::Bool(true)),
                ("xla_c".into(), option_override::Value::Int(-3)),
                ("xla_d".into(), option_override::Value::Double(0.5)),
            ]
        );
        assert_eq!(proto.executable_build_options.unwrap().num_replicas, 1);
    }
}
