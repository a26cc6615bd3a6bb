//! `rcf-bench handshakes` with small settings: the in-memory ceiling is
//! measured, both servers take connections, and the last line is the JSON
//! summary. No timing is asserted: the figures are for people, not for CI.
//!
//! Needs `rcf-serverd` built next to `rcf-bench` (`cargo build -p
//! rcf-serverd`, same profile and CARGO_TARGET_DIR) or `RCF_BIN_DIR`.

mod common;

#[test]
fn handshakes_small() {
    let stdout = common::run_bench(&[
        "handshakes",
        "--duration",
        "1",
        "--concurrency",
        "2",
        "--ceiling-iters",
        "20",
    ]);
    assert!(stdout.contains("# in-memory ceiling"), "{stdout}");
    assert!(stdout.contains("per server CPU-second"), "{stdout}");
    for server in ["cf-serverd", "rcf-serverd"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(server))
            .unwrap_or_else(|| panic!("no row for {server}:\n{stdout}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        let hs: u64 = f[1].parse().unwrap_or(0);
        assert!(hs > 0, "no handshake completed: {row}");
        if server == "rcf-serverd" {
            assert_eq!(f.last(), Some(&"0"), "errors: {row}\n{stdout}");
        }
    }
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with('{') && last.ends_with('}'),
        "last line is not JSON: {last}"
    );
    for key in [
        "\"bench\":\"handshakes\"",
        "\"ceiling_hs_per_server_cpu_s\":",
        "\"rcf_hs_per_s\":",
        "\"rcf_hs_per_server_cpu_s\":",
        "\"rcf_pct_of_ceiling\":",
        "\"cfe_pct_of_ceiling\":",
        "\"rcf_errors\":0",
        "\"rcf_died\":false",
    ] {
        assert!(last.contains(key), "{key} missing in {last}");
    }
    assert!(!last.contains("null"), "a figure is missing: {last}");
}
