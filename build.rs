//! Generates the raw PJRT C API bindings (bindgen over `pjrt_c_api.h`) and the table of pinned
//! plugins from `third_party/plugins.toml`.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const HEADER_ENV: &str = "SIROCCO_PJRT_HEADER";
const FETCH_COMMAND: &str = "python3 third_party/fetch.py cpu";

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_path = root.join("third_party/plugins.toml");
    println!("cargo:rerun-if-changed={}", manifest_path.display());
    println!("cargo:rerun-if-env-changed={HEADER_ENV}");

    let manifest: toml::Table = std::fs::read_to_string(&manifest_path)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| fail(&format!("cannot read {}", manifest_path.display())));
    write_plugin_table(&manifest, &root, &out.join("plugin_manifest.rs"));

    let header = match env::var_os(HEADER_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            let relative = manifest
                .get("cpu")
                .and_then(|cpu| cpu.get("header"))
                .and_then(|header| header.as_str())
                .unwrap_or_else(|| fail("third_party/plugins.toml: [cpu] has no `header`"));
            root.join("third_party/cache/cpu").join(relative)
        }
    };
    if !header.is_file() {
        fail(&format!(
            "pjrt_c_api.h not found at {}: run `{FETCH_COMMAND}` (or set {HEADER_ENV})",
            header.display()
        ));
    }
    println!("cargo:rerun-if-changed={}", header.display());

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_type("PJRT_.*")
        .allowlist_var("PJRT_.*")
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Rust { non_exhaustive: false })
        .generate()
        .unwrap_or_else(|error| fail(&format!("bindgen failed on {}: {error}", header.display())));
    bindings
        .write_to_file(out.join("pjrt_c_api.rs"))
        .unwrap_or_else(|error| fail(&format!("cannot write bindings: {error}")));
}

/// `PINNED_PLUGINS`: (name, package, version, library path inside the wheel) for every entry.
fn write_plugin_table(manifest: &toml::Table, root: &Path, path: &Path) {
    let mut code = String::from("pub(crate) const PINNED_PLUGINS: &[PinnedPlugin] = &[\n");
    for (name, entry) in manifest {
        let field = |key: &str| {
            entry
                .get(key)
                .and_then(|value| value.as_str())
                .unwrap_or_else(|| fail(&format!("third_party/plugins.toml: [{name}] has no string `{key}`")))
        };
        writeln!(
            code,
            "    PinnedPlugin {{ name: {name:?}, package: {:?}, version: {:?}, library: {:?} }},",
            field("package"),
            field("version"),
            field("library"),
        )
        .expect("writing to a String cannot fail");
    }
    code.push_str("];\n");
    writeln!(
        code,
        "pub(crate) const THIRD_PARTY_CACHE: &str = {:?};",
        root.join("third_party/cache").display().to_string()
    )
    .expect("writing to a String cannot fail");
    std::fs::write(path, code)
        .unwrap_or_else(|error| fail(&format!("cannot write {}: {error}", path.display())));
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
