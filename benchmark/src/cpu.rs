//! What the processes of a measurement cost, read from `/proc`: CPU time
//! per message by process, and peak resident memory.

use std::collections::BTreeMap;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Whose CPU time a [`CpuMeter`] counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CpuSource {
    /// One process (nothing if `None` or gone).
    Process(Option<u32>),
    /// Every PostgreSQL process on this machine, with the backends that
    /// exited meanwhile (counted by the postmaster that reaped them).
    PostgreSql,
    /// This process's children that exited and were waited for meanwhile
    /// (pgbench runs).
    ExitedChildren,
}

impl CpuSource {
    fn ticks(self) -> Option<u64> {
        match self {
            CpuSource::Process(pid) => cpu_ticks(pid?),
            CpuSource::PostgreSql => postgres_ticks(),
            CpuSource::ExitedChildren => {
                let fields = stat_fields("self")?;
                Some(field(&fields, 13)? + field(&fields, 14)?)
            }
        }
    }
}

/// Microseconds of CPU per message, by process, over one measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CpuPerMessage {
    /// By the name the meter was given, `None` when not measured.
    #[serde(flatten)]
    pub(crate) by_process: BTreeMap<&'static str, Option<f64>>,
    /// All processes together.
    pub(crate) total: f64,
}

/// CPU time used by a few named processes over one measurement.
pub(crate) struct CpuMeter {
    sources: Vec<(&'static str, CpuSource)>,
    start: Vec<Option<u64>>,
}

impl CpuMeter {
    /// Starts counting for `sources`.
    pub(crate) fn start(sources: Vec<(&'static str, CpuSource)>) -> Self {
        let start = sources.iter().map(|(_, source)| source.ticks()).collect();
        Self { sources, start }
    }

    /// Microseconds of CPU each source used since `start`, per one of
    /// `messages`.
    pub(crate) fn per_message_us(&self, messages: u64) -> CpuPerMessage {
        let used: Vec<_> = self
            .sources
            .iter()
            .zip(&self.start)
            .map(|((name, source), start)| {
                let used = source.ticks().zip(*start).and_then(|(now, start)| {
                    (messages > 0).then(|| {
                        now.saturating_sub(start) as f64 / TICKS_PER_SECOND * 1e6 / messages as f64
                    })
                });
                (*name, used)
            })
            .collect();
        // Summed in the order of the sources, not of the names.
        let total = used.iter().filter_map(|(_, used)| *used).sum();
        CpuPerMessage {
            by_process: used.into_iter().collect(),
            total,
        }
    }
}

/// The RabbitMQ server's process (`beam.smp`), if it runs on this machine.
pub(crate) fn broker_pid() -> Option<u32> {
    pids_named("beam.smp").into_iter().next()
}

/// The processes whose command name (`/proc/<pid>/comm`) is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&pid: &u32| comm(&pid.to_string()).as_deref() == Some(name))
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces), from `state` (0) on: `ppid` 1, `utime` 11, `stime` 12, `cutime`
/// 13, `cstime` 14.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

fn field(fields: &[String], n: usize) -> Option<u64> {
    fields.get(n)?.parse().ok()
}

/// User plus system CPU time of process `pid`, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields(&pid.to_string())?;
    Some(field(&fields, 11)? + field(&fields, 12)?)
}

fn comm(pid: &str) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_owned(),
    )
}

/// CPU time of every `postgres` process, plus the exited backends the
/// postmaster (the one whose parent is not `postgres`) has reaped.
fn postgres_ticks() -> Option<u64> {
    let mut total = 0;
    let mut found = false;
    for pid in pids_named("postgres") {
        let Some(fields) = stat_fields(&pid.to_string()) else {
            continue;
        };
        found = true;
        total += field(&fields, 11).unwrap_or(0) + field(&fields, 12).unwrap_or(0);
        let parent = fields.get(1).and_then(|ppid| comm(ppid));
        if parent.as_deref() != Some("postgres") {
            total += field(&fields, 13).unwrap_or(0) + field(&fields, 14).unwrap_or(0);
        }
    }
    found.then_some(total)
}

/// `VmHWM` of process `pid` from `/proc/<pid>/status`, in KiB.
pub(crate) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
