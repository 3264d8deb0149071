//! The machine a run measured on, for the report's header.

use serde::Serialize;

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub(crate) cpu_model: String,
    /// Total memory from `/proc/meminfo`, in GiB.
    pub(crate) memory_gib: f64,
}

impl Machine {
    /// Reads the machine's description from `/proc`.
    pub(crate) fn detect() -> Self {
        // The value after `key:` on the first line of `file` that has it.
        let field = |file: &str, key: &str| -> Option<String> {
            let text = std::fs::read_to_string(file).ok()?;
            let line = text.lines().find(|line| line.starts_with(key))?;
            Some(line.split_once(':')?.1.trim().to_owned())
        };
        let memory_kib = field("/proc/meminfo", "MemTotal")
            .and_then(|total| total.trim_end_matches("kB").trim().parse::<f64>().ok());
        Self {
            cpus: cpus(),
            cpu_model: field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".to_owned()),
            memory_gib: memory_kib.map_or(0.0, |kib| kib / 1024.0 / 1024.0),
        }
    }
}

/// The CPUs this process may use.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
