//! The few process-level settings std does not offer: the open-file limit.

use std::io;

/// Never ask for more than this, even where the hard limit is "unlimited":
/// the kernel's own ceiling (`fs.nr_open`) is 1,048,576 by default.
const FD_CEILING: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard limit (every client is a
/// descriptor, and the usual soft default is only 1024). Returns the limit
/// now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(FD_CEILING)
}
