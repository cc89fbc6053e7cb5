//! CPU time and memory of a process, read from Linux `/proc` (no extra dependency).
//!
//! Sources: proc(5) — `/proc/[pid]/stat` fields 14 `utime` and 15 `stime` are in clock ticks
//! (divide by `sysconf(_SC_CLK_TCK)`) and cover every thread of the process;
//! `/proc/[pid]/status` `VmHWM` is the peak resident set size and `VmRSS` the current one, in kB
//! (KiB); writing `5` to `/proc/[pid]/clear_refs` resets `VmHWM` to `VmRSS` (Linux 4.0+).

use std::sync::OnceLock;

use crate::BenchError;

/// Clock ticks per second when `getconf CLK_TCK` cannot be run: Linux reports `/proc` times in
/// `USER_HZ`, which is 100 on every mainstream architecture (proc(5), `times(2)`).
pub const USER_HZ_FALLBACK: u64 = 100;

/// 1-based position of `utime` in `/proc/[pid]/stat` (proc(5)); `stime` follows it.
const STAT_UTIME_FIELD: usize = 14;
/// Fields before the part that follows the parenthesised command name: `pid` and `(comm)`.
const STAT_FIELDS_BEFORE_STATE: usize = 2;

/// Which process to read: this one or another by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// `/proc/self`.
    This,
    /// `/proc/{pid}`.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Self::This => "/proc/self".to_owned(),
            Self::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// `(utime, stime)` in clock ticks from the text of a `/proc/[pid]/stat` file. The command name
/// is parenthesised and may itself hold spaces and parentheses, so fields are counted from the
/// last `)`. Fails with what is wrong.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<(u64, u64), String> {
    let close = stat
        .rfind(')')
        .ok_or_else(|| "no ')' closing the command name".to_owned())?;
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime_at = STAT_UTIME_FIELD - 1 - STAT_FIELDS_BEFORE_STATE;
    let field = |i: usize, name: &str| -> Result<u64, String> {
        let raw = fields
            .get(i)
            .ok_or_else(|| format!("only {} fields after the command name, {name} missing", fields.len()))?;
        raw.parse::<u64>()
            .map_err(|e| format!("{name} is {raw:?}, not a tick count ({e})"))
    };
    Ok((field(utime_at, "utime")?, field(utime_at + 1, "stime")?))
}

/// The value in KiB of a `/proc/[pid]/status` line such as `VmHWM:\t  8640 kB`; `None` when the
/// field is missing or malformed.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != field {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second of `/proc` times: `getconf CLK_TCK`, else [`USER_HZ_FALLBACK`].
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok())
            .filter(|t| *t > 0)
            .unwrap_or(USER_HZ_FALLBACK)
    })
}

fn read(path: &str) -> Result<String, BenchError> {
    std::fs::read_to_string(path).map_err(|source| BenchError::Proc {
        path: path.to_owned(),
        source,
    })
}

/// User plus system CPU seconds the process has used so far, all threads included (resolution:
/// one clock tick, 10 ms). Fails if `/proc` cannot be read.
pub fn cpu_seconds(pid: Pid) -> Result<f64, BenchError> {
    let path = format!("{}/stat", pid.dir());
    let (user, system) = parse_stat_cpu_ticks(&read(&path)?).map_err(|detail| BenchError::ProcFormat {
        path,
        field: "utime/stime",
        detail,
    })?;
    Ok((user + system) as f64 / clock_ticks_per_second() as f64)
}

/// A `/proc/[pid]/status` memory field (`VmHWM`, `VmRSS`…) in KiB. Fails if the file cannot be
/// read or lacks the field.
pub fn status_kib(pid: Pid, field: &'static str) -> Result<u64, BenchError> {
    let path = format!("{}/status", pid.dir());
    parse_status_kib(&read(&path)?, field).ok_or_else(|| BenchError::ProcFormat {
        path,
        field,
        detail: "field missing or not a number of kB".to_owned(),
    })
}

/// Peak resident set size (`VmHWM`) in MiB.
pub fn peak_rss_mib(pid: Pid) -> Result<f64, BenchError> {
    Ok(status_kib(pid, "VmHWM")? as f64 / 1024.0)
}

/// Current resident set size (`VmRSS`) in MiB.
pub fn rss_mib(pid: Pid) -> Result<f64, BenchError> {
    Ok(status_kib(pid, "VmRSS")? as f64 / 1024.0)
}

/// What `/proc/[pid]/clear_refs` takes to reset the peak RSS (proc(5): "5 … Reset the peak
/// resident set size ("high water mark") to the process's current resident set size value").
const CLEAR_REFS_RESET_PEAK: &str = "5";

/// Resets the peak RSS (`VmHWM`) to the current RSS, so a later [`peak_rss_mib`] is the peak
/// since this call. Fails if `/proc/[pid]/clear_refs` cannot be written (kernels before 4.0,
/// another user's process).
pub fn reset_peak_rss(pid: Pid) -> Result<(), BenchError> {
    let path = format!("{}/clear_refs", pid.dir());
    std::fs::write(&path, CLEAR_REFS_RESET_PEAK).map_err(|source| BenchError::ProcWrite { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_from_the_last_parenthesis_of_the_command_name() {
        // A command name with spaces and a ')' inside must not shift the fields.
        let stat = "4242 (tokio) runtime w) S 1 4242 4242 0 -1 4194560 1200 0 3 0 731 89 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Ok((731, 89)));
    }

    #[test]
    fn a_truncated_stat_line_is_an_error_naming_the_missing_field() {
        let err = parse_stat_cpu_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 5").unwrap_err();
        assert!(err.contains("stime"), "{err}");
        assert!(parse_stat_cpu_ticks("no parenthesis").is_err());
    }

    #[test]
    fn memory_fields_are_read_in_kib() {
        let status = "Name:\tm365-sim\nVmPeak:\t  123456 kB\nVmHWM:\t    8640 kB\nVmRSS:\t    7000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(8640));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(7000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn resetting_the_peak_brings_it_back_to_the_current_rss() {
        let grown: Vec<u8> = vec![1; 64 << 20];
        assert!(grown.iter().all(|b| *b == 1));
        let before = peak_rss_mib(Pid::This).unwrap();
        drop(grown);
        reset_peak_rss(Pid::This).unwrap();
        let after = peak_rss_mib(Pid::This).unwrap();
        // 64 MiB is above glibc's largest mmap threshold (32 MiB), so freeing it returns it.
        assert!(
            after < before - 32.0,
            "peak {after} MiB after the reset, {before} MiB before"
        );
        assert!(after >= rss_mib(Pid::This).unwrap() - 1.0);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_peak_rss() {
        let cpu = cpu_seconds(Pid::This).unwrap();
        assert!(cpu >= 0.0);
        assert!(peak_rss_mib(Pid::This).unwrap() > 0.0);
        assert!(clock_ticks_per_second() > 0);
    }
}
