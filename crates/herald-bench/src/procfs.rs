//! A process tree's resident memory and CPU time, read from `/proc`: a process plus
//! all its descendants (nginx's workers, Pushpin's several processes, this tool's
//! workers), found through `/proc/PID/task/*/children`.

use std::fs;

/// Resident set size in bytes of `pid` and every process below it.
pub fn tree_rss(pid: u32) -> Result<u64, String> {
    sum_over_tree(pid, |pid| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(vm_rss(&status).ok_or_else(|| format!("/proc/{pid}/status has no VmRSS (a zombie?)")))
    })
}

/// CPU seconds (user + system) used so far by `pid` and every process below it.
pub fn tree_cpu_seconds(pid: u32) -> Result<f64, String> {
    let ticks = sum_over_tree(pid, |pid| {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(cpu_ticks(&stat).ok_or_else(|| format!("/proc/{pid}/stat: unexpected format")))
    })?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// Sums `read` over `pid` and its descendants. `read` gives `None` for a process
/// that is gone: an error for `pid` itself, skipped for a child that exited
/// between listing and reading.
fn sum_over_tree(
    pid: u32,
    read: impl Fn(u32) -> Option<Result<u64, String>>,
) -> Result<u64, String> {
    let mut total = 0;
    let mut pending = vec![pid];
    let mut seen = Vec::new();
    while let Some(next) = pending.pop() {
        if seen.contains(&next) {
            continue;
        }
        seen.push(next);
        match read(next) {
            Some(value) => total += value?,
            None if next != pid => continue,
            None => return Err(format!("process {pid} cannot be read in /proc (gone?)")),
        }
        pending.extend(children(next));
    }
    Ok(total)
}

/// `VmRSS` from the text of `/proc/PID/status`, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// `utime + stime` (clock ticks) from the text of `/proc/PID/stat`. The command
/// name in parentheses may hold spaces, so fields are counted after its `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 14 of stat(5)
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\therald\nVmHWM:\t  9000 kB\nVmRSS:\t    8123 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(vm_rss(status), Some(8123 * 1024));
        assert_eq!(vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn parses_cpu_ticks() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 37 0 0 20 0 4 0 100 1000000 300";
        assert_eq!(cpu_ticks(stat), Some(287));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn reads_this_process_and_finds_children() {
        let me = std::process::id();
        assert!(tree_rss(me).unwrap() > 0);
        assert!(tree_cpu_seconds(me).unwrap() >= 0.0);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = children(me).contains(&child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found, "child {} not listed", child.id());
        assert!(tree_rss(u32::MAX).is_err());
    }
}
