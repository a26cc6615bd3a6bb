//! Data fixtures and tree comparison.

use super::LabError;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The fixture made by [`make_data_tree`].
#[derive(Debug, Clone)]
pub struct DataTree {
    pub root: PathBuf,
    /// `root/share`: meant to be admitted.
    pub share: PathBuf,
    /// `root/secret`: meant NOT to be admitted (holds `secret.txt`).
    pub secret: PathBuf,
    /// `root/masterfiles`: a masterfiles-like tree.
    pub masterfiles: PathBuf,
}

impl DataTree {
    /// `share/<rel>` as a string, for `CopySpec::source` and ACLs.
    pub fn share_path(&self, rel: &str) -> String {
        self.share.join(rel).to_string_lossy().into_owned()
    }
}

/// `from` copied to `to`: directories, files (contents and nothing else:
/// new inodes and mtimes, as a separate checkout has) and symlinks (their
/// targets as they are). `to` and its parents are made as needed; files
/// already there are overwritten.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), LabError> {
    let io = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |e| LabError::io(what, e)
    };
    std::fs::create_dir_all(to).map_err(io("mkdir", to))?;
    for e in std::fs::read_dir(from).map_err(io("read_dir", from))? {
        let e = e.map_err(io("read_dir", from))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type().map_err(io("stat", &src))?;
        if t.is_dir() {
            copy_tree(&src, &dst)?;
        } else if t.is_file() {
            std::fs::copy(&src, &dst).map_err(io("copy", &src))?;
        } else if t.is_symlink() {
            let target = std::fs::read_link(&src).map_err(io("readlink", &src))?;
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, &dst).map_err(io("symlink", &dst))?;
        }
    }
    Ok(())
}

fn w(p: &Path, data: &[u8]) -> Result<(), LabError> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| LabError::io(format!("mkdir {}", d.display()), e))?;
    }
    std::fs::write(p, data).map_err(|e| LabError::io(format!("write {}", p.display()), e))
}

/// Every entry below `root` (not `root` itself) with its `lstat`
/// metadata, named by its path relative to `root`, sorted by name.
pub fn tree_entries(root: &Path) -> Result<Vec<(String, std::fs::Metadata)>, LabError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd =
            std::fs::read_dir(&d).map_err(|e| LabError::io(format!("list {}", d.display()), e))?;
        for e in rd.flatten() {
            let p = e.path();
            let m = p
                .symlink_metadata()
                .map_err(|e| LabError::io(format!("lstat {}", p.display()), e))?;
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if m.is_dir() {
                stack.push(p);
            }
            out.push((rel, m));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// 100 000 deterministic pseudo-random bytes (xorshift64*, fixed seed).
pub(crate) fn big_bin() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(100_000);
    while v.len() < 100_000 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(100_000);
    v
}

/// Write the lab data tree under `root` (like cfe-lab.sh's `data/`):
/// `share/`: hello.txt (26 B), seq.txt (`seq 1 1000`, 3893 B), empty.txt,
/// big.bin (100 000 deterministic bytes), link.txt -> hello.txt,
/// tree/{a.txt, sub/b.txt, sub/deeper/c.txt}, many/ (300 empty files
/// `entry-with-a-longish-name-001.txt`..`300`); `secret/secret.txt`;
/// `masterfiles/` (promises.cf, update.cf, lib/stdlib.cf,
/// services/main.cf). Everything world-readable.
pub fn make_data_tree(root: &Path) -> Result<DataTree, LabError> {
    let share = root.join("share");
    let secret = root.join("secret");
    let mf = root.join("masterfiles");
    w(&share.join("hello.txt"), b"hello from cf-serverd lab\n")?;
    let seq: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    w(&share.join("seq.txt"), seq.as_bytes())?;
    w(&share.join("empty.txt"), b"")?;
    w(&share.join("big.bin"), &big_bin())?;
    let link = share.join("link.txt");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("hello.txt", &link)
            .map_err(|e| LabError::io("symlink link.txt", e))?;
    }
    w(&share.join("tree/a.txt"), b"file a\n")?;
    w(&share.join("tree/sub/b.txt"), b"file b\n")?;
    w(&share.join("tree/sub/deeper/c.txt"), b"file c\n")?;
    for i in 1..=300 {
        w(
            &share.join(format!("many/entry-with-a-longish-name-{i:03}.txt")),
            b"",
        )?;
    }
    w(&secret.join("secret.txt"), b"top secret\n")?;
    w(
        &mf.join("promises.cf"),
        b"body common control\n{\n  bundlesequence => { \"main\" };\n  inputs => { \"lib/stdlib.cf\" };\n}\nbundle agent main\n{\n  reports:\n    \"lab masterfiles promises.cf evaluated\";\n}\n",
    )?;
    w(
        &mf.join("update.cf"),
        b"bundle agent update\n{\n  reports:\n    \"update\";\n}\n",
    )?;
    w(
        &mf.join("lib/stdlib.cf"),
        b"bundle agent lab_stdlib\n{\n  vars:\n    \"x\" string => \"y\";\n}\n",
    )?;
    w(&mf.join("services/main.cf"), b"# placeholder\n")?;
    chmod_a_rx(root)?;
    Ok(DataTree {
        root: root.to_path_buf(),
        share,
        secret,
        masterfiles: mf,
    })
}

fn chmod_a_rx(p: &Path) -> Result<(), LabError> {
    let md = std::fs::symlink_metadata(p)
        .map_err(|e| LabError::io(format!("stat {}", p.display()), e))?;
    if md.file_type().is_symlink() {
        return Ok(());
    }
    let mode = md.permissions().mode();
    let add = if md.is_dir() { 0o555 } else { 0o444 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | add))
        .map_err(|e| LabError::io(format!("chmod {}", p.display()), e))?;
    if md.is_dir() {
        for e in
            std::fs::read_dir(p).map_err(|e| LabError::io(format!("readdir {}", p.display()), e))?
        {
            let e = e.map_err(|e| LabError::io("readdir", e))?;
            chmod_a_rx(&e.path())?;
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
    Other,
}

fn walk(
    root: &Path,
    rel: &Path,
    deref: bool,
    out: &mut BTreeMap<PathBuf, Node>,
) -> Result<(), String> {
    let p = if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let md = if deref {
        std::fs::metadata(&p)
    } else {
        std::fs::symlink_metadata(&p)
    }
    .map_err(|e| format!("stat {}: {e}", p.display()))?;
    let ft = md.file_type();
    if ft.is_symlink() {
        let t = std::fs::read_link(&p).map_err(|e| format!("readlink {}: {e}", p.display()))?;
        out.insert(rel.to_path_buf(), Node::Link(t));
    } else if ft.is_dir() {
        out.insert(rel.to_path_buf(), Node::Dir);
        let mut names: Vec<_> = std::fs::read_dir(&p)
            .map_err(|e| format!("readdir {}: {e}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            walk(root, &rel.join(n), deref, out)?;
        }
    } else if ft.is_file() {
        let data = std::fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        out.insert(rel.to_path_buf(), Node::File(data));
    } else {
        out.insert(rel.to_path_buf(), Node::Other);
    }
    Ok(())
}

fn describe(n: &Node) -> String {
    match n {
        Node::Dir => "directory".into(),
        Node::File(d) => format!("file of {} bytes", d.len()),
        Node::Link(t) => format!("symlink -> {}", t.display()),
        Node::Other => "special file".into(),
    }
}

fn compare(a: &Path, b: &Path, deref: bool) -> Result<(), String> {
    let (mut ta, mut tb) = (BTreeMap::new(), BTreeMap::new());
    walk(a, Path::new(""), deref, &mut ta)?;
    walk(b, Path::new(""), deref, &mut tb)?;
    let mut diffs = Vec::new();
    for (k, va) in &ta {
        match tb.get(k) {
            None => diffs.push(format!(
                "only in {}: {} ({})",
                a.display(),
                k.display(),
                describe(va)
            )),
            Some(vb) if va != vb => {
                let detail = match (va, vb) {
                    (Node::File(x), Node::File(y)) => {
                        let at = x
                            .iter()
                            .zip(y.iter())
                            .position(|(p, q)| p != q)
                            .unwrap_or(x.len().min(y.len()));
                        format!(
                            "contents differ: {} vs {} bytes, first difference at offset {at}",
                            x.len(),
                            y.len()
                        )
                    }
                    _ => format!("{} vs {}", describe(va), describe(vb)),
                };
                diffs.push(format!("differs: {}: {detail}", k.display()));
            }
            _ => {}
        }
    }
    for (k, vb) in &tb {
        if !ta.contains_key(k) {
            diffs.push(format!(
                "only in {}: {} ({})",
                b.display(),
                k.display(),
                describe(vb)
            ));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        let n = diffs.len();
        diffs.truncate(30);
        Err(format!(
            "trees {} and {} differ ({n} differences):\n  {}",
            a.display(),
            b.display(),
            diffs.join("\n  ")
        ))
    }
}

/// Byte-compare two trees (or two files): same names, same types, same file
/// contents, same symlink targets (symlinks not followed). Modes, owners and
/// times are not compared. `Err` lists the differences.
pub fn trees_equal(a: &Path, b: &Path) -> Result<(), String> {
    compare(a, b, false)
}

/// Like [`trees_equal`] but following symlinks on both sides (a symlink
/// compares equal to a copy of its target, as TLS `copy_from` delivers it).
pub fn trees_equal_deref(a: &Path, b: &Path) -> Result<(), String> {
    compare(a, b, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_tree_and_compare() {
        let t = tempfile::tempdir().unwrap();
        let d = make_data_tree(t.path()).unwrap();
        assert_eq!(
            std::fs::metadata(d.share.join("seq.txt")).unwrap().len(),
            3893
        );
        assert_eq!(std::fs::read(d.share.join("big.bin")).unwrap(), big_bin());
        assert_eq!(
            std::fs::read_dir(d.share.join("many")).unwrap().count(),
            300
        );
        trees_equal(&d.share, &d.share).unwrap();
        let e = trees_equal(&d.share, &d.share.join("tree")).unwrap_err();
        assert!(e.contains("only in"), "{e}");
        let e = trees_equal(&d.share.join("hello.txt"), &d.share.join("tree/a.txt")).unwrap_err();
        assert!(e.contains("first difference at offset 0"), "{e}");
        trees_equal_deref(&d.share.join("link.txt"), &d.share.join("hello.txt")).unwrap();
        assert!(trees_equal(&d.share.join("link.txt"), &d.share.join("hello.txt")).is_err());
    }
}
