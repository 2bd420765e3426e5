//! The server's resident memory, read from `/proc`: `VmRSS` of a process plus that
//! of all its descendants (e.g. nginx workers), found through
//! `/proc/PID/task/*/children`.

use std::fs;

/// Resident set size in bytes of `pid` and every process below it.
pub fn process_tree_rss(pid: u32) -> Result<u64, String> {
    let mut total = 0;
    let mut pending = vec![pid];
    let mut seen = Vec::new();
    while let Some(pid) = pending.pop() {
        if seen.contains(&pid) {
            continue;
        }
        seen.push(pid);
        match fs::read_to_string(format!("/proc/{pid}/status")) {
            Ok(status) => {
                total += vm_rss(&status)
                    .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS (a zombie?)"))?;
            }
            // A child that exited between listing and reading no longer counts.
            Err(_) if pid != seen[0] => continue,
            Err(e) => return Err(format!("cannot read the memory of process {pid}: {e}")),
        }
        pending.extend(children(pid));
    }
    Ok(total)
}

/// `VmRSS` from the text of `/proc/PID/status`, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
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
    fn finds_children() {
        assert!(process_tree_rss(std::process::id()).unwrap() > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = children(std::process::id()).contains(&child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found, "child {} not listed", child.id());
    }
}
