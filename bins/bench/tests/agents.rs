//! `rcf-bench agents` with small settings: both clients sync the tree
//! from rcf-serverd directly and through the delay proxy, the trees are
//! equal (the `ok` column), and the last line is the JSON summary. No
//! timing is asserted: the figures are for people, not for CI.
//!
//! Needs `rcf-serverd` and `rcf-agent` built next to `rcf-bench` (`cargo
//! build -p rcf-serverd -p rcf-agent`, same profile and CARGO_TARGET_DIR)
//! or `RCF_BIN_DIR`, and Debian's cfengine3 (cf-agent).

mod common;

#[test]
fn agents_direct_and_through_the_delay_proxy() {
    let stdout = common::run_bench(&[
        "agents",
        "--rtt-ms",
        "0,2",
        "--runs",
        "1",
        "--server",
        "rcf",
        "--emulation",
        "proxy",
    ]);
    for (client, rtt, via) in [
        ("cf-agent", "0", "direct"),
        ("rcf-agent", "0", "direct"),
        ("cf-agent", "2", "proxy"),
        ("rcf-agent", "2", "proxy"),
    ] {
        let row = stdout
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 7 && f[1] == client && f[2] == rtt
            })
            .unwrap_or_else(|| panic!("no row for {client} at {rtt} ms:\n{stdout}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        // server client rtt via full median ok
        assert_eq!(f[0], "rcf-serverd", "{row}");
        assert_eq!(f[3], via, "{row}");
        assert_eq!(
            f[6], "true",
            "trees equal, up-to-date run copied nothing: {row}"
        );
    }
    // cf-agent makes one connection per run; rcf-agent one for the
    // up-to-date run and, for the full copy, its walk connection plus up
    // to three parallel transfer connections (--parallel 4, allowallconnects).
    assert!(
        stdout.contains("# cf-agent through the proxy: 2 connections for 2 runs"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("# rcf-agent through the proxy: "))
        .unwrap_or_else(|| panic!("no rcf-agent proxy line:\n{stdout}"));
    let n: usize = line["# rcf-agent through the proxy: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // How many extra connections a run opens depends on how fast the walk
    // queues files; the count only has to be plausible.
    assert!(
        (2..=5).contains(&n),
        "connections over 2 runs (at most 3 extra transfer connections): {line}"
    );
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with('{') && last.ends_with('}'),
        "last line is not JSON: {last}"
    );
    for key in [
        "\"bench\":\"agents\"",
        "\"client\":\"rcf-agent\",\"rtt_ms\":2,\"via\":\"proxy\"",
        "\"full_copy_s\":",
        "\"uptodate_median_s\":",
        "\"cf_agent_over_rcf_agent\":[",
    ] {
        assert!(last.contains(key), "{key} missing in {last}");
    }
    assert!(!last.contains("\"ok\":false"), "{last}");
    for key in ["\"full_copy_s\":null", "\"uptodate_median_s\":null"] {
        assert!(!last.contains(key), "a figure is missing: {last}");
    }
    // request/reply turns are counted through the proxy only
    assert!(
        last.contains("\"via\":\"direct\"") && last.contains("\"turns_full_copy\":null"),
        "{last}"
    );
    let proxied = last
        .split("\"client\":\"rcf-agent\",\"rtt_ms\":2,\"via\":\"proxy\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no proxied rcf-agent row: {last}"));
    let turns: u64 = proxied
        .split("\"turns_full_copy\":")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    // at least one per file GET of the 400-file tree
    assert!(turns >= 400, "turns {turns}: {last}");
}
