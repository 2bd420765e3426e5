//! Open files: a server holds a descriptor per connection, so Herald raises its
//! soft open-files limit to the hard one and sizes its descriptor table up front.
//!
//! Linux grows a process's descriptor table by doubling it, and in a process with
//! more than one thread every growth waits for an RCU grace period (10–20 ms here)
//! inside the `accept` that needed the room. In a connect storm each worker then
//! stalls at 512, 1,024, 2,048 … connections. Growing the table once, before any
//! thread starts, skips those waits.

use std::fs::File;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Most descriptor-table slots reserved at start-up: 65,536 take the kernel about
/// 0.5 MiB. Past them the table still doubles when needed.
const MAX_RESERVED_SLOTS: u64 = 1 << 16;

/// Below this many open files, Herald warns that connections will be refused.
const LOW_LIMIT: u64 = 4096;

/// What [`prepare`] put in place.
#[derive(Debug, Clone, Copy)]
pub struct OpenFiles {
    /// The soft open-files limit now in force (`None`: unlimited).
    pub limit: Option<u64>,
    /// Descriptor-table slots reserved (0 if the table could not be grown).
    pub reserved_slots: u64,
}

impl OpenFiles {
    /// Whether the limit leaves room for only a few thousand connections.
    pub fn is_low(&self) -> bool {
        self.limit.is_some_and(|limit| limit < LOW_LIMIT)
    }
}

/// Raises the soft open-files limit to the hard limit, then grows the descriptor
/// table to the smaller of that limit and [`MAX_RESERVED_SLOTS`]. Call it before
/// any thread starts, so that the growth waits for no grace period either.
pub fn prepare() -> OpenFiles {
    let limit = raise_soft_limit();
    let slots = limit.map_or(MAX_RESERVED_SLOTS, |limit| limit.min(MAX_RESERVED_SLOTS));
    OpenFiles {
        limit,
        reserved_slots: reserve_slots(slots),
    }
}

/// Sets the soft limit to the hard one; returns the soft limit in force after.
fn raise_soft_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return current;
    }
    let raised = Rlimit {
        current: maximum,
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => maximum,
        // Keep what we had, e.g. where the hard limit is above the kernel's
        // `fs.nr_open`.
        Err(_) => current,
    }
}

/// Grows the table to `slots` by placing a descriptor in its last slot, then
/// closing it: the table never shrinks. Returns the slots reserved.
fn reserve_slots(slots: u64) -> u64 {
    let Ok(highest) = i32::try_from(slots.saturating_sub(1)) else {
        return 0;
    };
    let Ok(file) = File::open("/dev/null") else {
        return 0;
    };
    match rustix::io::fcntl_dupfd_cloexec(&file, highest) {
        Ok(_placed) => slots,
        Err(_) => 0,
    }
}
