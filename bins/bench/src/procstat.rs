//! Process figures from /proc: CPU seconds (utime + stime, all threads)
//! and peak RSS (VmHWM); our own CPU from getrusage; RLIMIT_NOFILE.

/// utime + stime of `pid` in seconds (`/proc/<pid>/stat`, fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // the command name may hold blanks and parentheses: split after the last ')'
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("bad /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15
    let utime: u64 = f.get(11).and_then(|s| s.parse().ok()).ok_or("bad utime")?;
    let stime: u64 = f.get(12).and_then(|s| s.parse().ok()).ok_or("bad stime")?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) as f64 / ticks)
}

/// `VmHWM` of `pid` in kB.
pub fn vm_hwm_kb(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no VmHWM".into())
}

/// `Threads` of `pid`.
pub fn threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `pid` in kB.
pub fn vm_rss_kb(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

/// Our own user + system CPU seconds (all threads).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it).
pub fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Online CPUs.
pub fn ncpus() -> usize {
    // The machine's online CPUs, not this thread's affinity mask (which
    // `--pin` narrows for a moment while a server starts).
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The CPUs `--pin` gives the load generator (and HAProxy): all but CPU 0,
/// which is the server's.
pub fn load_cpus() -> Vec<usize> {
    (1..ncpus()).collect()
}

/// The load generator's OS threads: `asked`, or for 0 one per CPU the
/// load generator has under `--pin` (all but CPU 0), else 2. Why: more
/// threads than CPUs only switch between themselves; on a 2-CPU box two
/// client threads on CPU 1 cost 13% more client CPU per handshake, so the
/// load could not keep the server busy, and the server's idle-to-busy
/// wakeups were counted against it (session 7: 78% of the ceiling with 2
/// threads, 83% with 1).
pub fn load_threads(asked: usize, pin: bool) -> usize {
    match (asked, pin) {
        (0, true) => load_cpus().len().max(1),
        (0, false) => 2,
        (n, _) => n,
    }
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Restrict a thread (`tid`; 0 = the calling thread) to `cpus`.
fn set_affinity(tid: i32, cpus: &[usize]) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: as above; `c` is below the machine's CPU count.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is initialised and its size is passed.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "sched_setaffinity({tid}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Pin the calling thread (and the threads it will create) to `cpus`.
pub fn pin_self(cpus: &[usize]) -> Result<(), String> {
    set_affinity(0, cpus)
}

/// Pin every thread `pid` has now to `cpus`; threads it creates later
/// inherit their creator's mask, so they stay there too. Returns how many
/// threads were pinned.
pub fn pin_process(pid: u32, cpus: &[usize]) -> Result<usize, String> {
    let dir = format!("/proc/{pid}/task");
    let mut n = 0;
    for e in std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .flatten()
    {
        if let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            set_affinity(tid, cpus)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Fails, naming `what`, when a thread of `pid` may run anywhere but CPU 0
/// (a `--pin` run whose server escaped measures nothing).
pub fn check_on_cpu0(pid: u32, what: &str) -> Result<(), String> {
    let masks = allowed_cpus(pid);
    if masks != ["0"] {
        return Err(format!("{what}: server threads escaped the pin: {masks:?}"));
    }
    Ok(())
}

/// The distinct `Cpus_allowed_list` values of `pid`'s threads now (to show
/// that pinning held, including threads created since).
pub fn allowed_cpus(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|s| s.trim().to_string())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Start a child process with CPU affinity `cpus` (it inherits the
/// starting thread's mask at fork), then give this thread all CPUs back.
/// Why: a server started on one CPU sizes itself for one CPU (rcf-serverd
/// runs one event loop per CPU it may use), as it would on a one-core box.
pub fn spawn_on<T>(cpus: &[usize], start: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    pin_self(cpus)?;
    let r = start();
    let all: Vec<usize> = (0..ncpus()).collect();
    pin_self(&all)?;
    r
}
