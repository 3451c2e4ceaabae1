//! Safe runtime over the PJRT C API.
#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/pjrt_c_api.rs"));
}
