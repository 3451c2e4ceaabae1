//! The fused optimizer update as XLA compiles it: the Adamax chain (clip, moments, masked
//! decay, cosine learning rate) on two parameter tensors, inspected in XLA's optimized HLO
//! (dumped with XLA_FLAGS, which XLA reads once per process — hence the subprocess).
//!
//! Asserted, as the design asks: every elementwise op is inside a fusion, no parameter-sized
//! temporary is materialized, and each full-size input is read at most twice — parameters and
//! moments once, gradients twice (the global norm, then the update). The update of a parameter
//! and both its moments is one multi-output fusion: one pass that reads the gradient, the
//! parameter and the moments and writes the three (XLA:CPU's sibling multi-output fusion, which
//! sirocco turns on, over the per-output copies of `unshare_elementwise`). That is 32 bytes of
//! traffic per parameter, the roofline; optax's chain compiles to 60-68.

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
            // `f32[1000,1024]{1,0} fusion(%a, %b), kind=...`, or a tuple type `(f32[..], ..)`.
            let (ty, rest) = if rest.starts_with('(') {
                let close = closing_paren(rest, 0)?;
                (&rest[..=close], rest[close + 1..].trim_start())
            } else {
                rest.split_once(' ')?
            };
            let open = rest.find('(')?;
            let close = closing_paren(rest, open)?;
            let operands = rest[open + 1..close]
                .split(',')
                // `f32[..] %a` or, from the sixth operand on, `/*index=5*/%f`.
                .map(|o| o.trim().rsplit([' ', '/']).next().unwrap_or("").to_string())
                .filter(|o| o.starts_with('%'))
                .collect();
            Some(Instruction {
                name: name.to_string(),
                ty: ty.to_string(),
                opcode: rest[..open].to_string(),
                operands,
            })
        })
        .collect()
}

/// The index of the `)` that closes the `(` at `open`.
fn closing_paren(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    for (index, c) in text.char_indices().skip_while(|&(index, _)| index < open) {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
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
        .env_remove("SIROCCO_CPU_MULTI_OUTPUT_FUSION")
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
    // Full-size results of an instruction: its type, or each element of its tuple type.
    let full_results = |ty: &str| ty.matches(full.as_str()).count();

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

    // Reads of each full-size value by fusions and dots (bitcasts and tuple elements are free
    // views).
    let alias: HashMap<&str, &str> = instructions
        .iter()
        .filter(|i| i.opcode == "bitcast" || i.opcode == "get-tuple-element")
        .map(|i| (i.name.as_str(), i.operands[0].as_str()))
        .collect();
    let resolve = |name: &'_ str| -> String {
        let mut name = name;
        while let Some(&source) = alias.get(name) {
            name = source;
        }
        name.to_string()
    };
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
    let parameters: Vec<&Instruction> =
        instructions.iter().filter(|i| i.opcode == "parameter" && is_full(&i.ty)).collect();
    let writers: Vec<&Instruction> =
        instructions.iter().filter(|i| i.opcode == "fusion" && full_results(&i.ty) > 0).collect();
    // 2 tensors x (param, mu, nu, grad) in; 2 x (param, mu, nu) computed: no other full-size
    // temporaries, and each tensor's three are written by one fusion.
    assert_eq!(parameters.len(), 8, "full-size inputs");
    let written: usize = writers.iter().map(|fusion| full_results(&fusion.ty)).sum();
    assert_eq!(written, 6, "full-size results: the new parameters and moments, no temporaries");
    for fusion in &writers {
        assert!(
            full_results(&fusion.ty) % 3 == 0,
            "{} writes {} of a parameter's three tensors: its update is split over several passes",
            fusion.name,
            fusion.ty
        );
        assert_eq!(reads.get(&fusion.name).copied().unwrap_or(0), 0, "{} is read back", fusion.name);
    }
    let mut read_counts: Vec<usize> =
        parameters.iter().map(|p| reads.get(&p.name).copied().unwrap_or(0)).collect();
    read_counts.sort_unstable();
    // params, mu, nu: once each; gradients: the norm, then the update.
    assert_eq!(read_counts, vec![1, 1, 1, 1, 1, 1, 2, 2], "reads of the full-size inputs");
    let bytes = report["xla_bytes_accessed_per_param"].as_f64().unwrap();
    assert!(bytes <= 33.0, "XLA estimates {bytes} bytes per parameter");
}
