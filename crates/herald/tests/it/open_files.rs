//! The process raises its open-files limit and sizes its descriptor table at
//! start-up, so a connect storm neither runs out of descriptors at the default
//! soft limit nor stalls while the kernel grows the table.

use crate::util::{Herald, Proto};

/// `(soft, hard)` of "Max open files" in `/proc/<pid>/limits`; `None` = unlimited.
fn open_files_limits(pid: u32) -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line in {limits}"));
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().ok());
    (values.next().flatten(), values.next().flatten())
}

/// `FDSize` of `/proc/<pid>/status`: the slots of the descriptor table.
fn descriptor_slots(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no FDSize in {status}"))
}

#[tokio::test]
async fn herald_raises_its_open_files_limit_and_sizes_its_descriptor_table() {
    let herald = Herald::start(Proto::Http1).await;
    let (soft, hard) = open_files_limits(herald.pid());
    assert_eq!(
        soft, hard,
        "the soft open-files limit is raised to the hard one"
    );
    // The table is grown to the limit, up to 65,536 slots; a process that only
    // opened what it needed to start would have 64 or 128.
    let expected = soft.map_or(65_536, |limit| limit.min(65_536));
    let slots = descriptor_slots(herald.pid());
    assert!(
        slots >= expected,
        "descriptor table has {slots} slots, expected at least {expected}"
    );
    assert!(
        herald.log().contains("descriptor_slots"),
        "the start-up log reports the reserved slots: {}",
        herald.log()
    );
}
