//! issue 19: `rcf-agent copy`'s progress display (human sizes, rate, ETA,
//! file count) appears on a terminal and nowhere else: not when stdout
//! and stderr are pipes, not with `--json` even on a terminal. The
//! terminal is a real pty (`script`), the server the real cf-serverd.

use std::path::Path;

use rcf_conformance::lab::{
    agent_workdirs, rcf_agent, rcf_binary, run_tool, AccessRule, AnyServer, ServerKind,
    ServerPolicy, TOOL_TIMEOUT,
};

/// What only the progress line prints: its counters and cursor control
/// (a pty turns every `\n` into `\r\n`: those carriage returns are not).
fn has_progress(out: &str) -> bool {
    let out = out.replace("\r\n", "\n");
    out.contains(" files, ") && out.contains("/s") || out.contains('\r') || out.contains("\x1b[")
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn progress_only_on_a_terminal() {
    let (srv_wd, cli) = agent_workdirs("progress").unwrap();
    let src = srv_wd.scratch().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Big enough for the bar to be drawn while a transfer is in flight.
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
    }
    let mut p = ServerPolicy::new(0);
    p.access.push(AccessRule::admit_loopback(
        src.to_string_lossy().into_owned(),
    ));
    let srv = AnyServer::start(ServerKind::Real, &srv_wd, &p).unwrap();
    let hp = srv.host_port();
    let s = src.to_string_lossy().into_owned();
    let dest = |n: &str| cli.scratch().join(n).to_string_lossy().into_owned();
    let copy_args = |d: &str, json: bool| -> Vec<String> {
        let mut a = vec!["-I".to_string()];
        if json {
            a.push("--json".into());
        }
        for x in ["copy", "-H", &hp, "--trustkey", "--recurse", &s, d] {
            a.push(x.to_string());
        }
        a
    };

    // Pipes: log lines only.
    let piped = dest("piped");
    let args = copy_args(&piped, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = rcf_agent(&cli, &args).unwrap();
    assert!(r.success(), "{}", r.describe());
    assert!(r.output.contains("Updated file"), "{}", r.describe());
    assert!(
        !has_progress(&r.output),
        "progress on a pipe:\n{}",
        r.describe()
    );
    assert_eq!(
        std::fs::read(Path::new(&piped).join("big.bin")).unwrap(),
        data
    );

    // A pty for stdout and stderr, through script(1).
    let bin = rcf_binary("rcf-agent").unwrap();
    let on_tty = |d: &str, json: bool| {
        let mut cmd = vec![
            sh_quote(&bin.to_string_lossy()),
            "--workdir".into(),
            sh_quote(&cli.path().to_string_lossy()),
        ];
        cmd.extend(copy_args(d, json).iter().map(|a| sh_quote(a)));
        let line = cmd.join(" ");
        let r = run_tool(
            &cli,
            Path::new("/usr/bin/script"),
            &["-qefc", &line, "/dev/null"],
            None,
            TOOL_TIMEOUT,
        )
        .unwrap();
        assert!(r.success(), "{}", r.describe());
        r
    };
    let r = on_tty(&dest("json"), true);
    assert!(r.output.contains("\"bytes\""), "{}", r.describe());
    assert!(
        !has_progress(&r.output),
        "progress with --json:\n{}",
        r.describe()
    );

    let r = on_tty(&dest("tty"), false);
    assert!(
        r.output.contains("files, ") && r.output.contains("/s"),
        "no progress on a terminal:\n{}",
        r.describe()
    );
    assert!(r.output.contains("MiB"), "human sizes:\n{}", r.describe());
    assert_eq!(
        std::fs::read(cli.scratch().join("tty").join("big.bin")).unwrap(),
        data
    );
    srv.stop();
    eprintln!("[agent_progress] silent on pipes and with --json; drawn on a pty");
}
