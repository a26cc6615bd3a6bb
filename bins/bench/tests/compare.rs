//! `rcf-bench compare` with small settings completes against both servers,
//! prints the table and a final JSON line with the required keys. No
//! timing is asserted: the figures are for people, not for CI.
//!
//! Needs `rcf-serverd` built next to `rcf-bench` (`cargo build -p
//! rcf-serverd`, same profile and CARGO_TARGET_DIR) or `RCF_BIN_DIR`.

mod common;

fn run(scenario: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "compare",
        "--agents",
        "2",
        "--scenario",
        scenario,
        "--runs",
        "2",
        "--duration",
        "5",
    ];
    args.extend_from_slice(extra);
    common::run_bench(&args)
}

fn check(stdout: &str, scenario: &str) {
    assert!(
        stdout.contains("runs/s") && stdout.contains("p99 ms"),
        "no table header:\n{stdout}"
    );
    for server in ["cf-serverd", "rcf-serverd"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(server))
            .unwrap_or_else(|| panic!("no row for {server}:\n{stdout}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        // K server runs runs/s p50 p99 cpu rss errors client
        assert_eq!(f[0], "2", "{row}");
        assert_eq!(f[2], "4", "2 agents x 2 runs each: {row}");
        assert_eq!(f[8], "0", "errors: {row}");
    }
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with('{') && last.ends_with('}'),
        "last line is not JSON: {last}"
    );
    for key in [
        "\"agents\":2",
        &format!("\"scenario\":\"{scenario}\""),
        "\"rcf_runs_per_s\":",
        "\"cfe_runs_per_s\":",
        "\"ratio\":",
        "\"rcf_cpu_s_per_run\":",
        "\"cfe_cpu_s_per_run\":",
        "\"rcf_rss_mb\":",
        "\"cfe_rss_mb\":",
        "\"errors\":0",
    ] {
        assert!(last.contains(key), "{key} missing in {last}");
    }
    assert!(!last.contains("null"), "a figure is missing: {last}");
}

#[test]
fn compare_steady_small() {
    let out = run("steady", &[]);
    check(&out, "steady");
    assert!(out.trim_end().ends_with("\"pinned\":false}"), "{out}");
}

/// `--pin` puts each server on CPU 0 and the load on the others; the run
/// fails (instead of reporting) if a server thread escaped the pin.
#[test]
fn compare_pinned_small() {
    if rcf_bench_cpus() < 2 {
        panic!("--pin needs 2 CPUs; CI machines have 2");
    }
    let out = run("steady", &["--pin"]);
    check(&out, "steady");
    assert!(
        out.contains("# pinned: each server started on CPU 0"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("\"pinned\":true}"), "{out}");
}

fn rcf_bench_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn compare_changed_small() {
    check(&run("changed", &[]), "changed");
}

/// `--scenario mpf --cluster`: besides both servers, the rows of rcf-serverd
/// with the PostgreSQL store and of HAProxy in front of 1 and 2 replicas
/// (real HAProxy and PostgreSQL, started and stopped by the bench), each
/// with every run completed, and the two cost lines.
#[test]
fn compare_mpf_cluster_small() {
    let out = run("mpf", &["--cluster"]);
    check(&out, "mpf");
    for label in ["rcf+pg", "haproxy>1", "haproxy>2"] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(label))
            .unwrap_or_else(|| panic!("no row for {label}:\n{out}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        assert_eq!((f[2], f[8]), ("4", "0"), "runs, errors: {row}");
    }
    assert!(out.contains("database: rcf+pg/rcf runs/s = "), "{out}");
    assert!(
        out.contains("proxy hop: haproxy>1/rcf+pg runs/s = "),
        "{out}"
    );
}
