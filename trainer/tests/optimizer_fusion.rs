//! The fused optimizer update as XLA compiles it: the Adamax chain (clip, moments, masked
//! decay, cosine learning rate) on two parameter tensors, inspected in XLA's optimized HLO
//! (dumped with XLA_FLAGS, which XLA reads once per process — hence the subprocess).
//!
//! What is asserted is what XLA's CPU backend can do: every elementwise op is inside a fusion,
//! no parameter-sized temporary is materialized, parameters and moments are read once, and the
//! gradients three times (the global norm, folded so its squares are summed in one pass without
//! a full-size temporary, then the two moment fusions: this backend has no multi-output fusion,
//! so the moments are computed by sibling fusions). That is about 44.5 bytes of traffic per
//! parameter; optax's chain compiles to 60-68.

use std::collections::HashMap;
use std::process::Command;

const ROWS: i64 = 1000;
const COLUMNS: i64 = 1024;

/// One HLO instruction of the entry computation: name, result type text, opcode, operands.
struct Instruction {
    name: String,
    ty: String,
    opcode: String,
    operands: Vec<String>,
}

fn parse_entry(text: &str) -> Vec<Instruction> {
    let entry = text.split("\nENTRY ").nth(1).expect("an ENTRY computation");
    let body = entry.split("\n}").next().expect("the end of ENTRY");
    body.lines()
        .skip(1)
        .filter_map(|line| {
            let line = line.trim().trim_start_matches("ROOT ");
            let (name, rest) = line.split_once(" = ")?;
            // `f32[1000,1024]{1,0} fusion(%a, %b), kind=...`
            let open = rest.find('(')?;
            let head = &rest[..open];
            let (ty, opcode) = head.rsplit_once(' ')?;
            let close = rest[open..].find(')')? + open;
            let operands = rest[open + 1..close]
                .split(',')
                .map(|o| o.trim().rsplit(' ').next().unwrap_or("").to_string())
                .filter(|o| o.starts_with('%'))
                .collect();
            Some(Instruction {
                name: name.to_string(),
                ty: ty.to_string(),
                opcode: opcode.to_string(),
                operands,
            })
        })
        .collect()
}

#[test]
fn adamax_update_is_fused_and_reads_each_tensor_a_bounded_number_of_times() {
    let dump = tempfile::tempdir().unwrap();
    let config = dump.path().join("adamax.yaml");
    std::fs::write(
        &config,
        "type: adamax\nlr: 1e-3\nwarmup: 0.1\nweight_decay: 0.1\nlr_schedule: cosine\nmax_grad_norm: 1.0\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sirocco"))
        .args(["bench", "optimizer", "--optimizer"])
        .arg(&config)
        .args(["--params", &(2 * ROWS * COLUMNS).to_string(), "--tensors", "2", "--steps", "1", "--json"])
        .env(
            "XLA_FLAGS",
            format!("--xla_dump_to={} --xla_dump_hlo_as_text", dump.path().join("xla").display()),
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let optimized = std::fs::read_dir(dump.path().join("xla"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            name.contains("optimizer_update") && name.ends_with("after_optimizations.txt")
        })
        .expect("XLA dumped the optimized update");
    let instructions = parse_entry(&std::fs::read_to_string(&optimized).unwrap());
    let full = format!("f32[{ROWS},{COLUMNS}]");
    let is_full = |ty: &str| ty.starts_with(&full);

    // Everything that computes on full-size data is a fusion (or the dot of the norm).
    for instruction in &instructions {
        let allowed =
            ["parameter", "constant", "fusion", "bitcast", "tuple", "get-tuple-element", "dot", "copy"];
        assert!(
            allowed.contains(&instruction.opcode.as_str()),
            "{} is a standalone {} outside any fusion",
            instruction.name,
            instruction.opcode
        );
        if instruction.opcode == "copy" {
            assert!(!is_full(&instruction.ty), "{} copies a full tensor", instruction.name);
        }
    }

    // Reads of each full-size value by fusions and dots (bitcasts are free views).
    let alias: HashMap<&str, &str> = instructions
        .iter()
        .filter(|i| i.opcode == "bitcast")
        .map(|i| (i.name.as_str(), i.operands[0].as_str()))
        .collect();
    let resolve = |name: &'_ str| -> String { alias.get(name).copied().unwrap_or(name).to_string() };
    let mut reads: HashMap<String, usize> = HashMap::new();
    for instruction in instructions.iter().filter(|i| i.opcode == "fusion" || i.opcode == "dot") {
        let mut seen = Vec::new();
        for operand in &instruction.operands {
            let source = resolve(operand);
            if !seen.contains(&source) {
                seen.push(source.clone());
                *reads.entry(source).or_default() += 1;
            }
        }
    }
    let full_size: Vec<&Instruction> = instructions.iter().filter(|i| is_full(&i.ty)).collect();
    let parameters: Vec<&&Instruction> = full_size.iter().filter(|i| i.opcode == "parameter").collect();
    let fusions: Vec<&&Instruction> = full_size.iter().filter(|i| i.opcode == "fusion").collect();
    // 2 tensors x (param, mu, nu, grad) in; 2 x (param, mu, nu) computed: no other full-size
    // temporaries.
    assert_eq!(parameters.len(), 8, "full-size inputs");
    assert_eq!(fusions.len(), 6, "full-size fusions: one per output, no temporaries");
    let mut read_counts: Vec<usize> =
        parameters.iter().map(|p| reads.get(&p.name).copied().unwrap_or(0)).collect();
    read_counts.sort_unstable();
    // params, mu, nu: once each; gradients: the norm, then the two moments.
    assert_eq!(read_counts, vec![1, 1, 1, 1, 1, 1, 3, 3], "reads of the full-size inputs");
    for fusion in &fusions {
        assert!(reads.get(&fusion.name).copied().unwrap_or(0) <= 1, "{} is read more than once", fusion.name);
    }
    let bytes = report["xla_bytes_accessed_per_param"].as_f64().unwrap();
    assert!(bytes <= 45.0, "XLA estimates {bytes} bytes per parameter");
}
