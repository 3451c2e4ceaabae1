//! `sirocco devices`: what a PJRT plugin reports about itself and its devices.

use std::fmt::Write as _;

use sirocco::pjrt::{Client, ClientOptions, Device, MemoryStats, NamedValue, Plugin};

/// Arguments of `sirocco devices`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevicesArgs {
    /// PJRT plugin: a pinned name (cpu, cuda, tpu) or the path of a plugin .so.
    #[arg(long, default_value = "cpu")]
    pub plugin: String,
    /// Number of virtual devices of the CPU plugin.
    #[arg(long)]
    pub cpu_device_count: Option<usize>,
}

/// The report `sirocco devices` prints: plugin, versions, platform and a table of devices.
pub fn report(args: &DevicesArgs) -> sirocco::pjrt::Result<String> {
    let plugin = Plugin::load(&args.plugin)?;
    let options = ClientOptions { cpu_device_count: args.cpu_device_count, ..ClientOptions::default() };
    let client = Client::new(&plugin, &options)?;

    let (major, minor) = plugin.api_version();
    let mut facts = vec![
        ("plugin".to_owned(), format!("{} ({})", plugin.name(), plugin.path().display())),
        ("PJRT C API".to_owned(), format!("{major}.{minor}")),
    ];
    facts.extend(plugin.attributes().iter().map(|(name, value)| (name.clone(), attribute_text(name, value))));
    let devices = client.devices();
    facts.extend([
        ("platform".to_owned(), format!("{} {}", client.platform_name(), client.platform_version())),
        ("process index".to_owned(), client.process_index().to_string()),
        (
            "devices".to_owned(),
            format!("{} ({} addressable)", devices.len(), client.addressable_devices().len()),
        ),
    ]);
    let width = facts.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 2;
    let mut text = String::new();
    for (label, value) in &facts {
        writeln!(text, "{label:<width$}{value}").expect("writing to a String cannot fail");
    }
    text.push('\n');

    let mut rows = vec![["id", "kind", "process", "local hardware id", "memory"].map(String::from)];
    for device in &devices {
        rows.push(device_row(device)?);
    }
    text.push_str(&table(&rows));
    Ok(text)
}

/// Version lists (`stablehlo_current_version = [1, 13, 3]`) read as `1.13.3`.
fn attribute_text(name: &str, value: &NamedValue) -> String {
    match value {
        NamedValue::Int64List(parts) if name.ends_with("version") => {
            parts.iter().map(i64::to_string).collect::<Vec<_>>().join(".")
        }
        other => other.to_string(),
    }
}

fn device_row(device: &Device) -> sirocco::pjrt::Result<[String; 5]> {
    let memory = device.memory_stats()?.map_or_else(|| "-".to_owned(), |stats| memory_text(&stats));
    Ok([
        device.id().to_string(),
        device.kind().to_owned(),
        device.process_index().to_string(),
        device.local_hardware_id().map_or_else(|| "-".to_owned(), |id| id.to_string()),
        memory,
    ])
}

fn memory_text(stats: &MemoryStats) -> String {
    let parts: Vec<String> =
        [("in use", stats.bytes_in_use), ("peak", stats.peak_bytes_in_use), ("limit", stats.bytes_limit)]
            .into_iter()
            .filter_map(|(label, bytes)| Some(format!("{} {label}", gibibytes(bytes?))))
            .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

fn gibibytes(bytes: i64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[[String; 5]]) -> String {
    let widths: Vec<usize> =
        (0..5).map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, &width)| format!("{cell:<width$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_cpu_device() {
        let args = DevicesArgs { plugin: "cpu".into(), cpu_device_count: Some(3) };
        let report = report(&args).unwrap();
        let fact = |label: &str| {
            let line =
                report.lines().find(|line| line.starts_with(label)).unwrap_or_else(|| panic!("{report}"));
            line[label.len()..].trim().to_owned()
        };
        assert_eq!(fact("stablehlo_current_version"), "1.13.3");
        assert_eq!(fact("PJRT C API"), "0.81");
        assert_eq!(fact("devices"), "3 (3 addressable)");
        let device_lines = report.lines().filter(|line| line.contains("  cpu  ")).count();
        assert_eq!(device_lines, 3, "{report}");
    }

    #[test]
    fn a_missing_plugin_is_an_error() {
        let args = DevicesArgs { plugin: "/nonexistent/plugin.so".into(), cpu_device_count: None };
        assert!(report(&args).unwrap_err().to_string().contains("/nonexistent/plugin.so"));
    }

    #[test]
    fn memory_is_shown_in_gibibytes() {
        let stats =
            MemoryStats { bytes_in_use: Some(1 << 30), peak_bytes_in_use: None, bytes_limit: Some(1 << 32) };
        assert_eq!(memory_text(&stats), "1.00 GiB in use, 4.00 GiB limit");
        assert_eq!(memory_text(&MemoryStats::default()), "-");
    }
}
