//! What the harness reads from /proc: CPU time and memory of the daemon, UDP drops of its socket
//! and of the whole host. Parsers are pure functions of the file's text; readers are one-liners.

use std::fs;

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces or ')': skip to the last.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), i.e. 11th and 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   1234 kB` value of `/proc/PID/status`, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// A raw value (e.g. `Cpus_allowed_list`) of `/proc/PID/status`.
pub fn parse_status_str<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// A counter of the `Udp:` table of `/proc/net/snmp` (a header line of names, then one of values).
pub fn parse_snmp_udp(snmp: &str, name: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let idx = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(idx)?.parse().ok()
}

/// Sum of the `drops` column of every socket bound to local `port` in the text of
/// `/proc/net/udp` or `/proc/net/udp6`; None when no socket has that port.
pub fn parse_udp_drops(table: &str, port: u16) -> Option<u64> {
    let want = format!("{port:04X}");
    let mut found = None;
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(local) = cols.get(1) else { continue };
        let Some((_, p)) = local.rsplit_once(':') else {
            continue;
        };
        if !p.eq_ignore_ascii_case(&want) {
            continue;
        }
        let drops: u64 = cols.last().and_then(|d| d.parse().ok()).unwrap_or(0);
        *found.get_or_insert(0) += drops;
    }
    found
}

/// utime + stime of a process (or thread, given its stat path), in clock ticks.
pub fn cpu_ticks(stat_path: &str) -> Option<u64> {
    parse_stat_cpu_ticks(&fs::read_to_string(stat_path).ok()?)
}

/// Nanoseconds spent on a CPU, from the text of a `schedstat` file (its first field).
pub fn parse_schedstat_nanos(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// CPU time of a process (`/proc/PID/stat`) or a thread (`/proc/PID/task/TID/stat`), in
/// nanoseconds: the scheduler's own accounting (`schedstat`, summed over a process's threads),
/// where `utime + stime` comes in clock ticks of 10 ms, too coarse for a few seconds at low rates.
/// Without schedstat, the ticks are converted. A thread that exits takes its schedstat time with
/// it, but not its ticks (the kernel adds them to the process's): a process's figure is the larger
/// of the two, so a daemon whose threads come and go is not under-counted by more than a tick.
pub fn cpu_nanos(stat_path: &str, ticks_per_second: u64) -> Option<u64> {
    let from_ticks = || cpu_ticks(stat_path).map(|t| t * 1_000_000_000 / ticks_per_second.max(1));
    let Some(dir) = stat_path.strip_suffix("/stat") else {
        return from_ticks();
    };
    let read = |path: std::path::PathBuf| {
        fs::read_to_string(path)
            .ok()
            .and_then(|s| parse_schedstat_nanos(&s))
    };
    if dir.contains("/task/") {
        return read(format!("{dir}/schedstat").into()).or_else(from_ticks);
    }
    let threads = fs::read_dir(format!("{dir}/task")).ok().and_then(|tasks| {
        tasks
            .flatten()
            .map(|t| read(t.path().join("schedstat")))
            .try_fold(0u64, |sum, n| Some(sum + n?))
    });
    match threads {
        Some(ns) => Some(ns.max(from_ticks().unwrap_or(0))),
        None => from_ticks(),
    }
}

/// The group a thread's name belongs to: the name without a trailing `-N` worker number
/// (`xrayd-upload-3` -> `xrayd-upload`), so that a pool of workers adds up to one line.
pub fn thread_group(comm: &str) -> &str {
    let comm = comm.trim_end();
    match comm.rsplit_once('-') {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => comm,
    }
}

/// Adds `nanos` to `group` in a list of per-group totals (kept sorted by name).
pub fn add_to_group(totals: &mut Vec<(String, u64)>, group: &str, nanos: u64) {
    match totals.binary_search_by(|(g, _)| g.as_str().cmp(group)) {
        Ok(i) => totals[i].1 += nanos,
        Err(i) => totals.insert(i, (group.to_string(), nanos)),
    }
}

/// CPU nanoseconds of a process's live threads, summed per [`thread_group`] and sorted by name.
/// Empty when `/proc/PID/task` cannot be read.
pub fn cpu_nanos_by_thread_group(pid: u32) -> Vec<(String, u64)> {
    let mut totals = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return totals;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Some(nanos)) = (
            fs::read_to_string(path.join("comm")),
            fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| parse_schedstat_nanos(&s)),
        ) else {
            continue;
        };
        add_to_group(&mut totals, thread_group(&comm), nanos);
    }
    totals
}

/// Per-group CPU used between two [`cpu_nanos_by_thread_group`] readings (a group that appeared
/// in between counts from zero).
pub fn group_delta(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(g, a)| {
            let b = before.iter().find(|(h, _)| h == g).map_or(0, |(_, b)| *b);
            (g.clone(), a.saturating_sub(b))
        })
        .collect()
}

/// A KiB value of `/proc/PID/status`.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    parse_status_kib(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// The CPUs a process may run on, as the kernel lists them.
pub fn cpus_allowed(pid: u32) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_str(&s, "Cpus_allowed_list").map(str::to_string)
}

/// Host-wide UDP receive-buffer drops so far.
pub fn snmp_rcvbuf_errors() -> Option<u64> {
    parse_snmp_udp(&fs::read_to_string("/proc/net/snmp").ok()?, "RcvbufErrors")
}

/// Drops of the UDP socket(s) bound to `port`, IPv4 and IPv6 tables together.
pub fn udp_socket_drops(port: u16) -> Option<u64> {
    let v4 = fs::read_to_string("/proc/net/udp")
        .ok()
        .and_then(|t| parse_udp_drops(&t, port));
    let v6 = fs::read_to_string("/proc/net/udp6")
        .ok()
        .and_then(|t| parse_udp_drops(&t, port));
    match (v4, v6) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// Asks the kernel to restart `VmHWM` (peak RSS) from the current RSS. False when not allowed.
pub fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_skips_a_tricky_command_name() {
        let stat = "4242 (xrayd (a) b) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 37 0 0 20 0 9 0 100 \
                    12345678 2000 18446744073709551615 1 1 0 0 0 0 0 4096 17475 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(
            parse_schedstat_nanos("1234567890 5678 42\n"),
            Some(1_234_567_890)
        );
        assert_eq!(parse_schedstat_nanos(""), None);
        assert_eq!(parse_schedstat_nanos("x 1 2"), None);
    }

    #[test]
    fn status_values() {
        let status =
            "Name:\txrayd\nVmHWM:\t   10240 kB\nVmRSS:\t    6012 kB\nCpus_allowed_list:\t1\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(6012));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(parse_status_str(status, "Cpus_allowed_list"), Some("1"));
    }

    #[test]
    fn snmp_udp_counter() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 100 2 7 90 5 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 0 0\n";
        assert_eq!(parse_snmp_udp(snmp, "RcvbufErrors"), Some(5));
        assert_eq!(parse_snmp_udp(snmp, "InErrors"), Some(7));
        assert_eq!(parse_snmp_udp(snmp, "Nope"), None);
    }

    #[test]
    fn socket_drops_by_port() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          134: 0100007F:07D0 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 38116 2 0000000000000000 17\n\
          135: 0100007F:07D1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 38117 2 0000000000000000 3\n\
          136: 0100007F:07D0 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 38118 2 0000000000000000 1\n";
        assert_eq!(parse_udp_drops(table, 2000), Some(18));
        assert_eq!(parse_udp_drops(table, 2001), Some(3));
        assert_eq!(parse_udp_drops(table, 2002), None);
    }

    #[test]
    fn thread_groups_drop_the_worker_number() {
        assert_eq!(thread_group("xrayd-upload-3\n"), "xrayd-upload");
        assert_eq!(thread_group("xrayd-ingest-0"), "xrayd-ingest");
        assert_eq!(thread_group("xrayd-batch"), "xrayd-batch");
        assert_eq!(thread_group("xray"), "xray");
        assert_eq!(thread_group("w-"), "w-");
        assert_eq!(thread_group("-7"), "-7");
        assert_eq!(thread_group("pool-1a"), "pool-1a");
        let mut totals = Vec::new();
        for (name, ns) in [("b-1", 5), ("a", 1), ("b-2", 7), ("a", 2)] {
            add_to_group(&mut totals, thread_group(name), ns);
        }
        assert_eq!(totals, vec![("a".to_string(), 3), ("b".to_string(), 12)]);
        let before = vec![("a".to_string(), 3), ("gone".to_string(), 9)];
        assert_eq!(
            group_delta(&before, &totals),
            vec![("a".to_string(), 0), ("b".to_string(), 12)]
        );
    }

    /// Spins on the calling thread until its own CPU time (not the wall clock: the machine may be
    /// busy) has grown by `nanos`; returns its stat path and CPU time before and after.
    fn burn(nanos: u64) -> (String, u64, u64) {
        let tid = std::fs::read_link("/proc/thread-self").unwrap();
        let stat = format!("/proc/{}/stat", tid.to_string_lossy());
        let before = cpu_nanos(&stat, 100).unwrap();
        let mut x = 0u64;
        loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let now = cpu_nanos(&stat, 100).unwrap();
            if now >= before + nanos {
                return (stat, before, now);
            }
        }
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let ticks = crate::sys::clock_ticks();
        assert!(cpu_ticks(&format!("/proc/{me}/stat")).is_some());
        // Burn a little CPU on this thread: its own schedstat and the process's sum see it.
        let process = format!("/proc/{me}/stat");
        let p0 = cpu_nanos(&process, ticks).unwrap();
        let (_, t0, t1) = burn(10_000_000);
        let p1 = cpu_nanos(&process, ticks).unwrap();
        // The process's sum covers the threads alive when it is read (other tests' threads may
        // have ended in between), and this one among them: it holds at least this thread's time.
        assert!(p1 >= t1, "process: {p0} -> {p1}, thread {t1}");
        // This thread's CPU shows under its group (the test harness names threads by test).
        let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        let groups = cpu_nanos_by_thread_group(me);
        let mine = groups.iter().find(|(g, _)| g == thread_group(&name));
        assert!(
            mine.is_some_and(|(_, ns)| *ns >= t1 - t0),
            "{name:?} in {groups:?}"
        );
        // A thread that ends keeps counting in its process's total.
        let before = cpu_nanos(&process, ticks).unwrap();
        let burned = std::thread::spawn(|| burn(50_000_000).2).join().unwrap();
        let after = cpu_nanos(&process, ticks).unwrap();
        // Within two clock ticks: the ended thread's time is only in the ticks, and both process
        // readings are cut to whole ticks.
        assert!(
            after + 2 * 1_000_000_000 / ticks >= before + burned,
            "{before} -> {after}, the ended thread used {burned}"
        );
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(cpus_allowed(me).is_some());
    }
}
