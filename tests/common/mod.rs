//! Shared helpers of the PJRT integration tests (CPU plugin, 4 virtual devices).

use sirocco::pjrt::{Client, ClientOptions, Plugin};

/// A client of the pinned CPU plugin with 4 devices, so that sharding is testable.
pub fn cpu_client() -> Client {
    let plugin = Plugin::load("cpu").unwrap_or_else(|error| panic!("{error}"));
    Client::new(&plugin, &ClientOptions { cpu_device_count: Some(4), ..ClientOptions::default() })
        .unwrap_or_else(|error| panic!("{error}"))
}

/// `module @<name>` adding its two `f32[2, 3]` arguments.
pub fn add_program(name: &str) -> String {
    format!(
        "module @{name} {{
  func.func public @main(%a: tensor<2x3xf32>, %b: tensor<2x3xf32>) -> tensor<2x3xf32> {{
    %sum = stablehlo.add %a, %b : tensor<2x3xf32>
    return %sum : tensor<2x3xf32>
  }}
}}"
    )
}
