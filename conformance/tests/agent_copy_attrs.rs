//! issue 19: `rcf-agent copy` behaves like a `copy_from` promise with the
//! same attributes. A table: each row is one promise, run through the real
//! cf-agent 3.21 and through `rcf-agent copy` against the same real
//! cf-serverd, into destinations that start out the same; the trees
//! (names, types, contents, link targets), the backups and the file modes
//! must come out the same.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcf_conformance::lab::{
    agent_workdirs, cf_agent_policy, quote, rcf_agent, tree_entries, trees_equal, AccessRule,
    AnyServer, ServerKind, ServerPolicy, Workdir,
};

struct Row {
    name: &'static str,
    /// Lines of `body depth_search`.
    depth: &'static [&'static str],
    /// Lines of `body file_select` (none: no file_select).
    select: &'static [&'static str],
    /// `copy_backup` (None: cf-agent's default, "true").
    backup: Option<&'static str>,
    /// rcf-agent copy's flags for the same promise (`--copy-backup` is
    /// added from `backup`).
    flags: &'static [&'static str],
    /// Files the destinations hold before the copy (an older version); a
    /// text `-> TARGET` makes a symbolic link instead.
    before: &'static [(&'static str, &'static str)],
    /// Raw lines added to `body copy_from`.
    body: &'static [&'static str],
    /// Also compare the copies' modification times.
    times: bool,
    /// cf-agent logs an error for this promise (and rcf-agent exits non-zero).
    fails: bool,
}

const ROWS: &[Row] = &[
    Row {
        name: "exclude_dirs",
        depth: &[r#"exclude_dirs => { "\.git", "skip" };"#],
        select: &[],
        backup: Some("false"),
        flags: &["--exclude-dirs", r"\.git", "--exclude-dirs", "skip"],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        name: "include_dirs",
        depth: &[r#"include_dirs => { "sub" };"#],
        select: &[],
        backup: Some("false"),
        flags: &["--include-dirs", "sub"],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        name: "exclude_dirs by path",
        depth: &[r#"exclude_dirs => { ".*/keep/sub" };"#],
        select: &[],
        backup: Some("false"),
        flags: &["--exclude-dirs", ".*/keep/sub"],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        name: "file_select leaf_name",
        depth: &[],
        select: &[
            r#"leaf_name => { ".*\.cf" };"#,
            r#"file_result => "leaf_name";"#,
        ],
        backup: Some("false"),
        flags: &["--leaf-name", r".*\.cf"],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        name: "file_select !leaf_name",
        depth: &[],
        select: &[
            r#"leaf_name => { "\.git.*", "b\.txt" };"#,
            r#"file_result => "!leaf_name";"#,
        ],
        backup: Some("false"),
        flags: &[
            "--leaf-name",
            r"\.git.*",
            "--leaf-name",
            r"b\.txt",
            "--file-result",
            "!leaf_name",
        ],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        name: "copy_backup default (true)",
        depth: &[],
        select: &[],
        backup: None,
        flags: &[],
        before: &[("a.cf", "old a\n"), ("sub/c.cf", "old c\n")],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        name: "copy_backup false",
        depth: &[],
        select: &[],
        backup: Some("false"),
        flags: &[],
        before: &[("a.cf", "old a\n")],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        name: "copy_backup timestamp",
        depth: &[],
        select: &[],
        backup: Some("timestamp"),
        flags: &[],
        before: &[("a.cf", "old a\n")],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        // An identical file is copied anyway, so it gets its backup.
        name: "force_update",
        depth: &[],
        select: &[],
        backup: None,
        flags: &["--force-update"],
        before: &[("a.cf", "a\n"), ("b.txt", "b\n")],
        body: &["force_update => \"true\";"],
        times: false,
        fails: false,
    },
    Row {
        name: "collapse_destination_dir",
        depth: &[],
        select: &[],
        backup: Some("false"),
        // (no two files of the source tree share a name)
        flags: &["--collapse-destination-dir"],
        before: &[],
        body: &["collapse_destination_dir => \"true\";"],
        times: false,
        fails: false,
    },
    Row {
        name: "stealth",
        depth: &[],
        select: &[],
        backup: Some("false"),
        flags: &["--stealth"],
        before: &[],
        body: &["stealth => \"true\";"],
        times: true,
        fails: false,
    },
    Row {
        name: "file_select path_name",
        depth: &[],
        select: &[
            r#"path_name => { "/.*/sub/.*", "/.*/run\.sh" };"#,
            r#"file_result => "path_name";"#,
        ],
        backup: Some("false"),
        flags: &[
            "--path-name",
            "/.*/sub/.*",
            "--path-name",
            r"/.*/run\.sh",
            "--file-result",
            "path_name",
        ],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        name: "file_select leaf_name.!path_name",
        depth: &[],
        select: &[
            r#"leaf_name => { ".*\.cf" };"#,
            r#"path_name => { "/.*/keep/.*" };"#,
            r#"file_result => "leaf_name.!path_name";"#,
        ],
        backup: Some("false"),
        flags: &[
            "--leaf-name",
            r".*\.cf",
            "--path-name",
            "/.*/keep/.*",
            "--file-result",
            "leaf_name.!path_name",
        ],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        // Without path_name patterns 3.21 never sets the path_name class.
        name: "file_result path_name without path_name",
        depth: &[],
        select: &[
            r#"leaf_name => { ".*" };"#,
            r#"file_result => "leaf_name|path_name";"#,
        ],
        backup: Some("false"),
        flags: &["--leaf-name", ".*", "--file-result", "leaf_name|path_name"],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        // include_basedir acts on perms/changes/rename/delete only: a copy
        // alone is the same with it.
        name: "include_basedir",
        depth: &[r#"include_basedir => "true";"#],
        select: &[],
        backup: Some("false"),
        flags: &["--include-basedir"],
        before: &[("old.txt", "old\n")],
        body: &[],
        times: false,
        fails: false,
    },
    Row {
        // rmdeadlinks acts in DepthSearch, which a copy alone never runs:
        // the destination's dead links stay.
        name: "rmdeadlinks",
        depth: &[r#"rmdeadlinks => "true";"#],
        select: &[],
        backup: Some("false"),
        flags: &["--rmdeadlinks"],
        before: &[("dead.lnk", "-> nowhere"), ("sub/dead2", "-> ../nothing")],
        body: &[],
        times: false,
        fails: false,
    },
];

fn w(p: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    if let Some(target) = data.strip_prefix("-> ") {
        std::os::unix::fs::symlink(target, p).unwrap();
        return;
    }
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn source_tree(root: &Path) {
    w(&root.join("a.cf"), "a\n", 0o644);
    w(&root.join("b.txt"), "b\n", 0o640);
    w(&root.join(".gitignore"), "g\n", 0o644);
    w(&root.join("run.sh"), "#!/bin/sh\n", 0o755);
    w(&root.join("sub/c.cf"), "c\n", 0o600);
    w(&root.join("sub/d.dat"), "d\n", 0o644);
    w(&root.join(".git/HEAD"), "ref\n", 0o644);
    w(&root.join("skip/e.cf"), "e\n", 0o644);
    w(&root.join("keep/f.cf"), "f\n", 0o644);
    w(&root.join("keep/sub/g.cf"), "g\n", 0o644);
}

/// Relative path -> mode bits of every entry (the root directory as `.`,
/// `+hardlinked` when a regular file has other names), with timestamped
/// backup names reduced to `_TIMESTAMP.cfsaved` (they hold the run's times).
fn modes(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let top = root.symlink_metadata().unwrap();
    let mut out = BTreeMap::from([(
        ".".to_string(),
        format!("{:o}", top.permissions().mode() & 0o7777),
    )]);
    for (rel, m) in tree_entries(root).unwrap() {
        let mode = if m.file_type().is_symlink() {
            "link".to_string()
        } else if m.is_file() && m.nlink() > 1 {
            format!("{:o}+hardlinked", m.permissions().mode() & 0o7777)
        } else {
            format!("{:o}", m.permissions().mode() & 0o7777)
        };
        out.insert(normalize(&rel), mode);
    }
    out
}

/// Relative path -> mtime of every regular file.
fn mtimes(root: &Path) -> BTreeMap<String, i64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, m.mtime());
            }
        }
    }
    out
}

fn normalize(name: &str) -> String {
    match name.strip_suffix(".cfsaved") {
        Some(base) => {
            // <file>_<start>_<Day_Mon__d_hh_mm_ss_yyyy>.cfsaved
            let re = regex::Regex::new(r"^(.*)_[0-9]+_[A-Z][a-z]{2}_[A-Z][a-z]{2}_[_0-9]{2}_[0-9]{2}_[0-9]{2}_[0-9]{2}_[0-9]{4}$").unwrap();
            match re.captures(base) {
                Some(c) => format!("{}_TIMESTAMP.cfsaved", &c[1]),
                None => name.to_string(),
            }
        }
        None => name.to_string(),
    }
}

/// The tree with timestamped backups renamed as [`normalize`] does, for
/// [`trees_equal`].
fn normalized_copy(root: &Path, to: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                std::fs::create_dir_all(to.join(&rel)).unwrap();
                stack.push(e.path());
            } else {
                let n = normalize(&rel.to_string_lossy());
                let dst = to.join(n);
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                if m.file_type().is_symlink() {
                    let t = std::fs::read_link(e.path()).unwrap();
                    std::os::unix::fs::symlink(t, dst).unwrap();
                } else {
                    std::fs::copy(e.path(), dst).unwrap();
                }
            }
        }
    }
}

fn policy(row: &Row, port: u16, src: &Path, dest: &Path) -> String {
    let mut s = String::from("body common control\n{\n  bundlesequence => { \"main\" };\n}\n");
    s.push_str("bundle agent main\n{\n  files:\n");
    s.push_str(&format!(
        "    {}\n      copy_from => c,\n      depth_search => d{};\n}}\n",
        quote(&dest.to_string_lossy()),
        if row.select.is_empty() {
            ""
        } else {
            ",\n      file_select => fs"
        }
    ));
    s.push_str(&format!(
        "body copy_from c\n{{\n  servers => {{ \"127.0.0.1\" }};\n  portnumber => \"{port}\";\n  source => {};\n  compare => \"digest\";\n  trustkey => \"true\";\n{}}}\n",
        quote(&src.to_string_lossy()),
        row.backup
            .map(|b| format!("  copy_backup => \"{b}\";\n"))
            .unwrap_or_default()
            + &row.body.iter().map(|l| format!("  {l}\n")).collect::<String>()
    ));
    s.push_str("body depth_search d\n{\n  depth => \"inf\";\n");
    for l in row.depth {
        s.push_str(&format!("  {l}\n"));
    }
    s.push_str("}\n");
    if !row.select.is_empty() {
        s.push_str("body file_select fs\n{\n");
        for l in row.select {
            s.push_str(&format!("  {l}\n"));
        }
        s.push_str("}\n");
    }
    s
}

#[test]
fn copy_attributes_match_cf_agent() {
    run_rows("copyattrs", ROWS, source_tree, no_prepare);
}

/// A row without `depth_search`/`file_select` lines, `copy_backup =>
/// "false"`, times not compared.
fn row(
    name: &'static str,
    flags: &'static [&'static str],
    body: &'static [&'static str],
    before: &'static [(&'static str, &'static str)],
    fails: bool,
) -> Row {
    Row {
        name,
        depth: &[],
        select: &[],
        backup: Some("false"),
        flags,
        before,
        body,
        times: false,
        fails,
    }
}

/// A source tree with live and dangling links, absolute and relative.
fn links_tree(root: &Path) {
    w(&root.join("a.txt"), "a\n", 0o644);
    w(&root.join("sub/s.txt"), "s\n", 0o640);
    w(&root.join("rel.lnk"), "-> a.txt", 0);
    w(&root.join("dotrel.lnk"), "-> ./a.txt", 0);
    w(&root.join("sub/up.lnk"), "-> ../a.txt", 0);
    w(&root.join("dir.lnk"), "-> sub", 0);
    w(&root.join("dead.lnk"), "-> nowhere", 0);
    w(&root.join("deadabs.lnk"), "-> /nonexistent/x", 0);
    w(&root.join("sub/deadup.lnk"), "-> ../gone", 0);
}

/// Symbolic links as cf-agent replicates them: live links are copied as
/// what they point to, dangling ones are made again per `link_type`, and
/// `linkcopy_patterns`/`copylink_patterns` turn copies into links.
#[test]
fn links_match_cf_agent() {
    let rows = &[
        row(
            "dead and live links (link_type symlink)",
            &[],
            &[],
            &[],
            false,
        ),
        row(
            "link_type relative",
            &["--link-type", "relative"],
            &[r#"link_type => "relative";"#],
            &[],
            false,
        ),
        row(
            // the dangling targets do not exist here: no link, a failure
            "link_type absolute",
            &["--link-type", "absolute"],
            &[r#"link_type => "absolute";"#],
            &[],
            true,
        ),
        row(
            "linkcopy_patterns",
            &[
                "--linkcopy-patterns",
                r"a\.txt",
                "--linkcopy-patterns",
                "s.txt",
            ],
            &[r#"linkcopy_patterns => { "a\.txt", "s.txt" };"#],
            &[],
            false,
        ),
        row(
            "linkcopy_patterns relative",
            &["--link-type", "relative", "--linkcopy-patterns", r"a\.txt"],
            &[
                r#"link_type => "relative";"#,
                r#"linkcopy_patterns => { "a\.txt" };"#,
            ],
            &[],
            false,
        ),
        row(
            "linkcopy_patterns absolute",
            &["--link-type", "absolute", "--linkcopy-patterns", r"s\.txt"],
            &[
                r#"link_type => "absolute";"#,
                r#"linkcopy_patterns => { "s\.txt" };"#,
            ],
            &[],
            true,
        ),
        row(
            // in both lists: skipped; copylink on a live link changes nothing
            "linkcopy and copylink patterns",
            &[
                "--linkcopy-patterns",
                "rel.*",
                "--copylink-patterns",
                r"rel\.lnk",
                "--copylink-patterns",
                "up.lnk",
            ],
            &[
                r#"linkcopy_patterns => { "rel.*" };"#,
                r#"copylink_patterns => { "rel\.lnk", "up.lnk" };"#,
            ],
            &[],
            false,
        ),
        row(
            "an existing correct link is kept",
            &[],
            &[],
            &[
                ("dead.lnk", "-> ./nowhere"),
                ("deadabs.lnk", "-> /nonexistent/x"),
            ],
            false,
        ),
        row(
            "a wrong link is not moved",
            &[],
            &[],
            &[("dead.lnk", "-> elsewhere")],
            true,
        ),
        row(
            "a file in the way of a link",
            &[],
            &[],
            &[("dead.lnk", "old\n")],
            true,
        ),
        row(
            "a link in the way of a file",
            &[],
            &[],
            &[("a.txt", "-> nowhere")],
            false,
        ),
    ];
    let copied = run_rows("copylinks", rows, links_tree, no_prepare);
    assert_eq!(entry(&copied, 0, "dead.lnk"), Some("link"));
    assert_eq!(entry(&copied, 0, "rel.lnk"), Some("600"));
}

/// `link_type => "hardlink"`, on a tree where nothing else names a.txt:
/// the hard link cf-agent makes to the source raises its link count, and
/// the server reports a live link with its target's inode and count, so
/// links to a.txt would make a hard-linked group for whichever agent runs
/// second.
#[test]
fn hardlink_type_matches_cf_agent() {
    fn tree(root: &Path) {
        w(&root.join("a.txt"), "a\n", 0o644);
        w(&root.join("sub/s.txt"), "s\n", 0o640);
        w(&root.join("dead.lnk"), "-> nowhere", 0);
        w(&root.join("deadabs.lnk"), "-> /nonexistent/x", 0);
        w(&root.join("sub/deadup.lnk"), "-> ../gone", 0);
    }
    let rows = &[row(
        "link_type hardlink",
        &["--link-type", "hardlink", "--linkcopy-patterns", r"a\.txt"],
        &[
            r#"link_type => "hardlink";"#,
            r#"linkcopy_patterns => { "a\.txt" };"#,
        ],
        &[],
        true,
    )];
    let copied = run_rows("copyhardtype", rows, tree, no_prepare);
    assert_eq!(entry(&copied, 0, "a.txt"), Some("644+hardlinked"));
}

/// Hard links among the source's files are kept among the copies
/// (`RegisterAHardLink`/`CopyRegularFile`: the first name of an inode is
/// copied, the others are hard links to it).
#[test]
fn hard_links_match_cf_agent() {
    fn tree(root: &Path) {
        w(&root.join("a.txt"), "a\n", 0o644);
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::hard_link(root.join("a.txt"), root.join("b.txt")).unwrap();
        std::fs::hard_link(root.join("a.txt"), root.join("sub/c.txt")).unwrap();
        w(&root.join("d.txt"), "d\n", 0o600);
        w(&root.join("e.txt"), "e\n", 0o644);
        std::fs::hard_link(root.join("e.txt"), root.join("sub/f.txt")).unwrap();
    }
    let row = |name, backup, before| Row {
        backup,
        ..row(name, &[], &[], before, false)
    };
    let rows = &[
        row("hard links", Some("false"), &[]),
        // Without backups: which name of a group is copied (and so keeps
        // a backup) follows the server's listing order in 3.21, name order
        // in rcf-agent.
        row(
            "hard links over older copies",
            Some("false"),
            &[
                ("b.txt", "old b\n"),
                ("sub/c.txt", "a\n"),
                ("e.txt", "old e\n"),
            ],
        ),
    ];
    let copied = run_rows("copyhard", rows, tree, no_prepare);
    assert_eq!(entry(&copied, 0, "sub/c.txt"), Some("600+hardlinked"));
}

/// `check_root`: with `preserve`, the destination root takes the source
/// root's mode too (subdirectories take theirs either way).
#[test]
fn check_root_matches_cf_agent() {
    fn tree(root: &Path) {
        source_tree(root);
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(&root.join("sub"), 0o750).unwrap();
        mode(&root.join("keep"), 0o711).unwrap();
        mode(root, 0o751).unwrap();
    }
    let row = |name, flags, body| row(name, flags, body, &[], false);
    let rows = &[
        row("preserve", &["--preserve"], &[r#"preserve => "true";"#]),
        row(
            "preserve and check_root",
            &["--preserve", "--check-root"],
            &[r#"preserve => "true";"#, r#"check_root => "true";"#],
        ),
        row(
            "check_root without preserve",
            &["--check-root"],
            &[r#"check_root => "true";"#],
        ),
    ];
    let copied = run_rows("copyroot", rows, tree, no_prepare);
    assert_eq!(entry(&copied, 0, "sub"), Some("750"));
    assert_eq!(entry(&copied, 1, "."), Some("751"));
}

/// `depth_search`'s `xdev`: the server sees a tmpfs mounted on `mnt/` of
/// the source tree (in a private mount namespace made for it with
/// `unshare -m`, so nothing is mounted on this host), and an entry there
/// is on another device than the source root.
#[test]
fn xdev_matches_cf_agent() {
    fn tree(root: &Path) {
        w(&root.join("a.cf"), "a\n", 0o644);
        w(&root.join("sub/b.cf"), "b\n", 0o644);
        std::fs::create_dir_all(root.join("mnt")).unwrap();
    }
    fn mount_tmpfs(srv: &mut Workdir, src: &Path) -> Box<dyn std::any::Any> {
        let shm = tempfile::Builder::new()
            .prefix("rcf-xdev-")
            .tempdir_in("/dev/shm")
            .unwrap();
        w(&shm.path().join("c.cf"), "c\n", 0o644);
        w(&shm.path().join("d/e.cf"), "e\n", 0o644);
        let wrapper = srv.scratch().join("cf-serverd-ns");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec unshare -m --propagation private /bin/sh -c 'mount --bind \"$0\" \"$1\" && shift && exec {} \"$@\"' {} {} \"$@\"\n",
                srv.bins().serverd.display(),
                quote_sh(&shm.path().to_string_lossy()),
                quote_sh(&src.join("mnt").to_string_lossy())
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        srv.set_serverd(wrapper);
        Box::new(shm)
    }
    let rows = &[
        Row {
            name: "without xdev",
            depth: &[],
            select: &[],
            backup: Some("false"),
            flags: &[],
            before: &[],
            body: &[],
            times: false,
            fails: false,
        },
        Row {
            name: "xdev",
            depth: &[r#"xdev => "true";"#],
            select: &[],
            backup: Some("false"),
            flags: &["--xdev"],
            before: &[],
            body: &[],
            times: false,
            fails: false,
        },
    ];
    let copied = run_rows("copyxdev", rows, tree, mount_tmpfs);
    assert!(copied[0].contains_key("mnt/d/e.cf"), "{:?}", copied[0]);
    assert!(!copied[1].contains_key("mnt"), "{:?}", copied[1]);
}

/// `s` in single quotes for sh.
fn quote_sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Run every row through the real cf-agent and `rcf-agent copy` against
/// one real cf-serverd serving the tree `make_source` writes (after
/// `prepare` had its say on the server's work dir; what it returns lives
/// until the server stops), and fail with every row whose results differ.
/// Returns each row's destination entries and modes (see [`modes`]).
/// `run_rows`' `prepare` when the server needs nothing beyond the tree.
fn no_prepare(_: &mut Workdir, _: &Path) -> Box<dyn std::any::Any> {
    Box::new(())
}

/// What `run_rows` recorded for `path` in row `row` (mode, link, …).
fn entry<'a>(copied: &'a [BTreeMap<String, String>], row: usize, path: &str) -> Option<&'a str> {
    copied[row].get(path).map(String::as_str)
}

fn run_rows(
    name: &str,
    rows: &[Row],
    make_source: fn(&Path),
    prepare: fn(&mut Workdir, &Path) -> Box<dyn std::any::Any>,
) -> Vec<BTreeMap<String, String>> {
    let (mut srv_wd, cli) = agent_workdirs(name).unwrap();
    let src = srv_wd.scratch().join("src");
    make_source(&src);
    let _keep = prepare(&mut srv_wd, &src);
    let mut copied = Vec::new();
    let mut p = ServerPolicy::new(0);
    p.access.push(AccessRule::admit_loopback(
        src.to_string_lossy().into_owned(),
    ));
    let srv = AnyServer::start(ServerKind::Real, &srv_wd, &p).unwrap();
    let hp = srv.host_port();
    let out = cli.scratch().join("out");
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let (real, ours): (PathBuf, PathBuf) =
            (out.join(format!("{i}-real")), out.join(format!("{i}-rcf")));
        for d in [&real, &ours] {
            std::fs::create_dir_all(d).unwrap();
            for (f, text) in row.before {
                w(&d.join(f), text, 0o644);
            }
        }
        let (run, _) =
            cf_agent_policy(&cli, &policy(row, srv.port(), &src, &real), &["-I"]).unwrap();
        assert!(
            run.success() && !run.output.contains("failsafe"),
            "{}: cf-agent\n{}",
            row.name,
            run.describe()
        );
        let mut args = vec![
            "-I",
            "copy",
            "-H",
            &hp,
            "--trustkey",
            "--recurse",
            "--compare",
            "digest",
        ];
        if let Some(b) = row.backup {
            args.extend_from_slice(&["--copy-backup", b]);
        }
        args.extend_from_slice(row.flags);
        let s = src.to_string_lossy().into_owned();
        let o = ours.to_string_lossy().into_owned();
        args.push(&s);
        args.push(&o);
        let r = rcf_agent(&cli, &args).unwrap();
        if row.fails {
            // cf-agent reports the failure in its log (it exits 0 anyway)
            assert!(
                run.output.contains("error:"),
                "{}: cf-agent did not fail\n{}",
                row.name,
                run.describe()
            );
            assert!(
                !r.success(),
                "{}: rcf-agent did not fail\n{}",
                row.name,
                r.describe()
            );
        } else {
            assert!(r.success(), "{}: rcf-agent\n{}", row.name, r.describe());
        }
        let (nr, no) = (
            out.join(format!("{i}-real.n")),
            out.join(format!("{i}-rcf.n")),
        );
        normalized_copy(&real, &nr);
        normalized_copy(&ours, &no);
        if let Err(d) = trees_equal(&nr, &no) {
            failures.push(format!(
                "{}: trees differ (left cf-agent, right rcf-agent): {d}\n{}\n{}",
                row.name,
                run.describe(),
                r.describe()
            ));
            continue;
        }
        let (mr, mo) = (modes(&real), modes(&ours));
        copied.push(mr.clone());
        if mr != mo {
            failures.push(format!(
                "{}: modes differ: cf-agent {mr:?} rcf-agent {mo:?}",
                row.name
            ));
            continue;
        }
        if row.times {
            let (tr, to) = (mtimes(&real), mtimes(&ours));
            if tr != to || tr != mtimes(&src) {
                failures.push(format!(
                    "{}: mtimes differ: source {:?} cf-agent {tr:?} rcf-agent {to:?}",
                    row.name,
                    mtimes(&src)
                ));
                continue;
            }
        }
        eprintln!(
            "[agent_copy_attrs] {}: same tree, backups and modes ({} files)",
            row.name,
            mr.len()
        );
    }
    srv.stop();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    copied
}

/// The repository's files, named relative to `dest` (a backup's name in
/// the repository is its canonified full path, so the destinations' own
/// prefixes are cut off), with their contents.
fn repository(repo: &Path, dest: &Path) -> BTreeMap<String, Vec<u8>> {
    let canon: String = dest
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::fs::read_dir(repo)
        .unwrap()
        .flatten()
        .map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let rel = n.strip_prefix(&canon).unwrap_or(&n).to_string();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// `copy_backup` with `default_repository` (body agent control): the old
/// file goes to the repository under its canonified path, none stays
/// next to the copy.
#[test]
fn default_repository_matches_cf_agent() {
    let (srv_wd, cli) = agent_workdirs("copyrepo").unwrap();
    let src = srv_wd.scratch().join("src");
    source_tree(&src);
    let mut p = ServerPolicy::new(0);
    p.access.push(AccessRule::admit_loopback(
        src.to_string_lossy().into_owned(),
    ));
    let srv = AnyServer::start(ServerKind::Real, &srv_wd, &p).unwrap();
    let out = cli.scratch().join("repo-out");
    let (real, ours) = (out.join("real"), out.join("rcf"));
    let (repo_real, repo_ours) = (out.join("repo-real"), out.join("repo-rcf"));
    for d in [&real, &ours] {
        w(&d.join("a.cf"), "old a\n", 0o644);
        w(&d.join("sub/c.cf"), "old c\n", 0o644);
    }
    let row = Row {
        name: "default_repository",
        depth: &[],
        select: &[],
        backup: None,
        flags: &[],
        before: &[],
        body: &[],
        times: false,
        fails: false,
    };
    let pol = policy(&row, srv.port(), &src, &real).replacen(
        "body common control\n{\n  bundlesequence => { \"main\" };\n}\n",
        &format!(
            "body common control\n{{\n  bundlesequence => {{ \"main\" }};\n}}\nbody agent control\n{{\n  default_repository => {};\n}}\n",
            quote(&repo_real.to_string_lossy())
        ),
        1,
    );
    let (run, _) = cf_agent_policy(&cli, &pol, &["-I"]).unwrap();
    assert!(run.success(), "{}", run.describe());
    let hp = srv.host_port();
    let (s, o, r) = (
        src.to_string_lossy().into_owned(),
        ours.to_string_lossy().into_owned(),
        repo_ours.to_string_lossy().into_owned(),
    );
    let ours_run = rcf_agent(
        &cli,
        &[
            "-I",
            "copy",
            "-H",
            &hp,
            "--trustkey",
            "--recurse",
            "--compare",
            "digest",
            "--default-repository",
            &r,
            &s,
            &o,
        ],
    )
    .unwrap();
    assert!(ours_run.success(), "{}", ours_run.describe());
    trees_equal(&real, &ours)
        .unwrap_or_else(|d| panic!("{d}\n{}\n{}", run.describe(), ours_run.describe()));
    let (rr, ro) = (repository(&repo_real, &real), repository(&repo_ours, &ours));
    assert_eq!(rr.len(), 2, "{rr:?}\n{}", run.describe());
    assert_eq!(rr, ro, "\n{}\n{}", run.describe(), ours_run.describe());
    srv.stop();
    eprintln!(
        "[agent_copy_attrs] default_repository: same tree and repository ({:?})",
        rr.keys()
    );
}
