//! The open-files limit (`RLIMIT_NOFILE`): every client connection of the TCP port takes a file
//! descriptor, and so do uploads, credential fetches and log files. All the `unsafe` of the proxy
//! is here.

/// Highest soft limit asked for at start-up: far more than the connections the port keeps.
const WANTED: u64 = 65_536;

/// The current (soft, hard) limit, or `None` when it cannot be read.
pub fn current() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the `rlimit` we own and pass by a valid pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (rc == 0).then_some((r.rlim_cur, r.rlim_max))
}

/// Raises the soft limit towards the hard one (at most [`WANTED`]): the common soft limit of
/// 1,024 is too low for a port that keeps ~1,000 client connections besides its other files.
/// Returns the soft limit before and after; `None` when it cannot be read.
pub fn raise() -> Option<(u64, u64)> {
    let (soft, hard) = current()?;
    let want = hard.min(WANTED);
    if soft >= want {
        return Some((soft, soft));
    }
    let r = libc::rlimit {
        rlim_cur: want as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the `rlimit` we own and pass by a valid pointer.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    Some((soft, if rc == 0 { want } else { soft }))
}

/// File descriptors kept for everything but client connections, out of a soft limit of `soft`.
pub fn reserve(soft: u64) -> u64 {
    (soft / 8).max(64)
}

/// The most client connections to keep open: `wanted`, or fewer when the open-files limit
/// `soft` would not leave [`reserve`] descriptors for the rest of the daemon. At least 16.
pub fn max_connections(wanted: usize, soft: Option<u64>) -> usize {
    match soft {
        Some(soft) => {
            let room = soft.saturating_sub(reserve(soft)).max(16);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_room_for_other_files() {
        assert_eq!(max_connections(1024, Some(1024)), 896);
        assert_eq!(max_connections(1024, Some(65_536)), 1024);
        assert_eq!(max_connections(1024, Some(256)), 192);
        assert_eq!(max_connections(1024, Some(20)), 16);
        assert_eq!(max_connections(1024, None), 1024);
        assert_eq!(max_connections(2, Some(1024)), 2);
    }

    #[test]
    fn raise_never_lowers() {
        let (before, after) = raise().expect("getrlimit");
        assert!(after >= before);
        assert_eq!(current().unwrap().0, after);
    }
}
