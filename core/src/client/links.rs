//! Symbolic links in a `copy_from`, as cf-agent 3.21 replicates them
//! (`verify_files_utils.c` `CfCopyFile`/`LinkCopy`, `files_links.c`
//! `VerifyLink`/`VerifyRelativeLink`/`VerifyAbsoluteLink`/`VerifyHardLink`).
//!
//! What the real 3.21 does, observed against its own cf-serverd:
//! * a live link on the server is copied as the file or directory it
//!   points to (the server's STAT follows it), whatever `link_type` says;
//! * a dangling link is made again at the destination: with `link_type`
//!   `symlink` (the default) pointing where it pointed, with `relative` a
//!   `./../..` path computed from the destination, with `absolute` only if
//!   the target path exists on this host (it is expanded here), with
//!   `hardlink` only if it names a regular file here;
//! * a file whose name matches `linkcopy_patterns` becomes such a link to
//!   the source's server path instead of a copy; one that also matches
//!   `copylink_patterns` is skipped ("promise loop");
//! * an existing link at the destination is kept when it points where it
//!   should, and is a failure otherwise (no `move_obstructions`), as is
//!   anything else in the way.
//!
//! The decisions are here; the agent reads and makes the links.

use super::select::NamePatterns;

/// `link_type` of `body copy_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkType {
    /// `"symlink"` (the default): the link's own target text.
    #[default]
    Symlink,
    /// `"hardlink"`: a hard link to the target on this host.
    Hardlink,
    /// `"relative"`: a `./`-relative path from the destination to the target.
    Relative,
    /// `"absolute"`: the absolute target, its links expanded on this host.
    Absolute,
}

impl LinkType {
    /// cf-agent's spellings; `None` for anything else (cf-promises refuses it).
    pub fn parse(s: &str) -> Option<LinkType> {
        Some(match s {
            "symlink" => LinkType::Symlink,
            "hardlink" => LinkType::Hardlink,
            "relative" => LinkType::Relative,
            "absolute" => LinkType::Absolute,
            _ => return None,
        })
    }
}

/// What `linkcopy_patterns` and `copylink_patterns` make of a source entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternVerdict {
    /// Neither applies: copy it (or replicate its dangling link).
    Copy,
    /// `linkcopy_patterns` matches: link to the source instead of copying.
    Link,
    /// Both match: cf-agent skips it ("promise loop").
    Loop,
}

/// Whether the entry whose last path component is `leaf` is linked instead
/// of copied (`MatchRlistItem` on the last node, as `CfCopyFile`).
pub fn pattern_verdict(
    leaf: &[u8],
    linkcopy: Option<&NamePatterns>,
    copylink: Option<&NamePatterns>,
) -> PatternVerdict {
    if !linkcopy.is_some_and(|p| p.matches_item(leaf)) {
        PatternVerdict::Copy
    } else if copylink.is_some_and(|p| p.matches_item(leaf)) {
        PatternVerdict::Loop
    } else {
        PatternVerdict::Link
    }
}

/// What the destination link must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkPlan {
    /// A symbolic link with exactly this target text.
    Symlink(Vec<u8>),
    /// A symbolic link to this absolute path once its links are expanded
    /// on this host; the path must exist ("Failed to expand absolute link").
    Expanded(Vec<u8>),
    /// A hard link to this absolute path on this host, which must be a
    /// regular file.
    Hard(Vec<u8>),
}

/// Why a link is not made although 3.21 would try.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefusal {
    /// `copylink_patterns` matched a dangling link: 3.21 then copies from
    /// an uninitialised `stat` (observed: a block device with a random
    /// mode), which rcf will not imitate.
    #[error("'{0}' matches copylink_patterns but is a dangling link on the server: cf-agent 3.21 acts on an uninitialised stat here (it made a bogus special file); rcf-agent does not copy it")]
    CopyDanglingLink(String),
    /// `link_type => "relative"` to the destination itself.
    #[error("Failed to link '{dest}' to '{target}', can't link file '{target}' to itself")]
    ToItself {
        /// The destination.
        dest: String,
        /// The compressed target.
        target: String,
    },
    /// A `..` climbs above `/`.
    #[error("Failed to link '{dest}' to '{target}': '..' beyond the top of the filesystem")]
    AboveRoot {
        /// The destination.
        dest: String,
        /// The target as given.
        target: String,
    },
    /// `link_type => "hardlink"` to a relative target: 3.21 hands `./x` to
    /// `link()`, which resolves it against the agent's working directory.
    #[error("Can't hard link '{dest}' to the relative '{target}': cf-agent 3.21 resolves it against its working directory; rcf-agent does not")]
    RelativeHardLink {
        /// The destination.
        dest: String,
        /// The target as 3.21 would name it (`./x`).
        target: String,
    },
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The link `LinkCopy` makes at `dest` for the source at server path
/// `src`: `link_target` is the server's `readlink` when the source is a
/// (dangling) link, `None` for a regular file taken by `linkcopy_patterns`
/// (then the link goes to `src` itself). `copylink` is whether
/// `copylink_patterns` matches the source's last node.
pub fn plan_link(
    link_type: LinkType,
    src: &[u8],
    link_target: Option<&[u8]>,
    dest: &[u8],
    copylink: bool,
) -> Result<LinkPlan, LinkRefusal> {
    let mut linkbuf = match link_target {
        Some(t) => t.to_vec(),
        None => src.to_vec(),
    };
    if link_type == LinkType::Absolute && !linkbuf.starts_with(b"/") {
        // LinkCopy: ChopLastNode(source), AddSlash, append.
        let mut dir = chop_last_node(src);
        if dir.last() != Some(&b'/') {
            dir.push(b'/');
        }
        dir.extend_from_slice(&linkbuf);
        linkbuf = dir;
    }
    if copylink && link_target.is_some() {
        return Err(LinkRefusal::CopyDanglingLink(lossy(src)));
    }
    match link_type {
        LinkType::Symlink => Ok(LinkPlan::Symlink(linkbuf)),
        LinkType::Relative => relative_target(dest, &linkbuf).map(LinkPlan::Symlink),
        LinkType::Absolute => compress_path(&linkbuf)
            .map(LinkPlan::Expanded)
            .ok_or_else(|| LinkRefusal::AboveRoot {
                dest: lossy(dest),
                target: lossy(&linkbuf),
            }),
        LinkType::Hardlink if linkbuf.starts_with(b"/") => Ok(LinkPlan::Hard(linkbuf)),
        LinkType::Hardlink => Err(LinkRefusal::RelativeHardLink {
            dest: lossy(dest),
            target: lossy(&dot_slash(&linkbuf)),
        }),
    }
}

/// `./x` for a relative `x` that does not start with `.`, as VerifyLink
/// and VerifyHardLink name such targets; others unchanged.
fn dot_slash(target: &[u8]) -> Vec<u8> {
    if target.starts_with(b"/") || target.starts_with(b".") {
        target.to_vec()
    } else {
        let mut t = b"./".to_vec();
        t.extend_from_slice(target);
        t
    }
}

/// Whether an existing link at the destination pointing to `existing`
/// already is the promised link to `target` (VerifyLink: the same text, or
/// `./target` for a bare relative target).
pub fn link_is_correct(existing: &[u8], target: &[u8]) -> bool {
    existing == target || existing == dot_slash(target).as_slice()
}

/// Whether `relative_target` reads 3.21's behaviour off undefined
/// behaviour for this target: a relative target that does not start with
/// `.` makes VerifyRelativeLink walk before the start of its buffer; the
/// result observed (and computed here) is that of `/target`.
pub fn relative_is_undefined(target: &[u8]) -> bool {
    !target.starts_with(b"/") && !target.starts_with(b".")
}

/// VerifyRelativeLink: the `./`-relative path from `dest` to `target`. A
/// target starting with `.` is kept as it is; otherwise the target is
/// compressed, the common leading directories of it and `dest` dropped,
/// and one `../` added per directory of `dest` below them.
pub fn relative_target(dest: &[u8], target: &[u8]) -> Result<Vec<u8>, LinkRefusal> {
    if target.starts_with(b".") {
        return Ok(target.to_vec());
    }
    let rooted = if target.starts_with(b"/") {
        target.to_vec()
    } else {
        let mut t = b"/".to_vec();
        t.extend_from_slice(target);
        t
    };
    let to = compress_path(&rooted).ok_or_else(|| LinkRefusal::AboveRoot {
        dest: lossy(dest),
        target: lossy(target),
    })?;
    if to == dest {
        return Err(LinkRefusal::ToItself {
            dest: lossy(dest),
            target: lossy(&to),
        });
    }
    // First difference, then back to the last '/' both share before it.
    let k = to
        .iter()
        .zip(dest.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let j = to[..k].iter().rposition(|&c| c == b'/').unwrap_or(0);
    let common_to = &to[(j + 1).min(to.len())..];
    let levels = dest[j.min(dest.len())..]
        .iter()
        .filter(|&&c| c == b'/')
        .count();
    let mut out = b"./".to_vec();
    for _ in 1..levels {
        out.extend_from_slice(b"../");
    }
    out.extend_from_slice(common_to);
    Ok(out)
}

/// CompressPath: `.` components and repeated `/` dropped, `..` removing the
/// previous component; `None` when `..` climbs above the root of an
/// absolute path. (A relative path keeps its relative start.)
pub fn compress_path(p: &[u8]) -> Option<Vec<u8>> {
    let absolute = p.starts_with(b"/");
    let mut parts: Vec<&[u8]> = Vec::new();
    for node in p.split(|&c| c == b'/') {
        match node {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            n => parts.push(n),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&parts.join(&b'/'));
    Some(out)
}

/// ChopLastNode: `path` without its last component (`/a/b` -> `/a`,
/// `/a` -> `/`, `a` -> `.`).
fn chop_last_node(path: &[u8]) -> Vec<u8> {
    let trimmed = match path.iter().rposition(|&c| c != b'/') {
        Some(i) => &path[..=i],
        None => return b"/".to_vec(),
    };
    match trimmed.iter().rposition(|&c| c == b'/') {
        Some(0) => b"/".to_vec(),
        Some(i) => trimmed[..i].to_vec(),
        None => b".".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    fn pats(p: &[&str]) -> NamePatterns {
        NamePatterns::new(p).expect("valid")
    }

    #[test]
    fn spellings() {
        assert_eq!(LinkType::parse("symlink"), Some(LinkType::Symlink));
        assert_eq!(LinkType::parse("hardlink"), Some(LinkType::Hardlink));
        assert_eq!(LinkType::parse("relative"), Some(LinkType::Relative));
        assert_eq!(LinkType::parse("absolute"), Some(LinkType::Absolute));
        assert_eq!(LinkType::parse("copy"), None);
        assert_eq!(LinkType::default(), LinkType::Symlink);
    }

    #[test]
    fn patterns() {
        let lc = pats(&["a.txt", r"rel.*"]);
        let cl = pats(&["rel.lnk"]);
        assert_eq!(
            pattern_verdict(b"a.txt", Some(&lc), Some(&cl)),
            PatternVerdict::Link
        );
        assert_eq!(
            pattern_verdict(b"rel.lnk", Some(&lc), Some(&cl)),
            PatternVerdict::Loop
        );
        assert_eq!(
            pattern_verdict(b"b.txt", Some(&lc), Some(&cl)),
            PatternVerdict::Copy
        );
        assert_eq!(
            pattern_verdict(b"rel.lnk", None, Some(&cl)),
            PatternVerdict::Copy
        );
        // list items also match as literal strings
        let lc = pats(&["a+b"]);
        assert_eq!(
            pattern_verdict(b"a+b", Some(&lc), None),
            PatternVerdict::Link
        );
    }

    /// The links the real cf-agent made (agent_copy_attrs, and by hand
    /// against its own cf-serverd).
    #[test]
    fn links_as_3_21_made_them() {
        let dest = b"/tmp/c2out/lt-relative/dead.lnk";
        let plan = |t, target: Option<&[u8]>, src: &[u8], dest: &[u8]| {
            plan_link(t, src, target, dest, false)
        };
        let src = b"/tmp/c2lab/data/lt/dead.lnk";
        assert_eq!(
            plan(LinkType::Symlink, Some(b"nowhere"), src, dest),
            Ok(LinkPlan::Symlink(b"nowhere".to_vec()))
        );
        assert_eq!(
            plan(LinkType::Relative, Some(b"nowhere"), src, dest),
            Ok(LinkPlan::Symlink(b"./../../../nowhere".to_vec()))
        );
        assert!(relative_is_undefined(b"nowhere"));
        assert_eq!(
            plan(LinkType::Relative, Some(b"/nonexistent/x"), src, dest),
            Ok(LinkPlan::Symlink(b"./../../../nonexistent/x".to_vec()))
        );
        assert!(!relative_is_undefined(b"/nonexistent/x"));
        assert_eq!(
            plan(LinkType::Absolute, Some(b"nowhere"), src, dest),
            Ok(LinkPlan::Expanded(b"/tmp/c2lab/data/lt/nowhere".to_vec()))
        );
        assert_eq!(
            plan(LinkType::Hardlink, Some(b"/nonexistent/x"), src, dest),
            Ok(LinkPlan::Hard(b"/nonexistent/x".to_vec()))
        );
        assert!(matches!(
            plan(LinkType::Hardlink, Some(b"nowhere"), src, dest),
            Err(LinkRefusal::RelativeHardLink { target, .. }) if target == "./nowhere"
        ));
        // linkcopy_patterns on a regular file: a link to its server path
        let a = b"/tmp/c2lab/data/lt/a.txt";
        assert_eq!(
            plan(LinkType::Symlink, None, a, b"/tmp/c2out/lc-symlink/a.txt"),
            Ok(LinkPlan::Symlink(a.to_vec()))
        );
        assert_eq!(
            plan(LinkType::Relative, None, a, b"/tmp/c2out/lc-relative/a.txt"),
            Ok(LinkPlan::Symlink(b"./../../c2lab/data/lt/a.txt".to_vec()))
        );
        assert_eq!(
            plan(LinkType::Hardlink, None, a, b"/tmp/c2out/lc-hardlink/a.txt"),
            Ok(LinkPlan::Hard(a.to_vec()))
        );
        // targets starting with '.' are kept by relative
        assert_eq!(
            plan(LinkType::Relative, Some(b"../a.txt"), src, dest),
            Ok(LinkPlan::Symlink(b"../a.txt".to_vec()))
        );
        assert!(matches!(
            plan_link(LinkType::Symlink, src, Some(b"nowhere"), dest, true),
            Err(LinkRefusal::CopyDanglingLink(_))
        ));
    }

    #[test]
    fn relative_edge_cases() {
        assert_eq!(relative_target(b"/a/b/c", b"/a/x"), Ok(b"./../x".to_vec()));
        assert_eq!(relative_target(b"/a/c", b"/a/x"), Ok(b"./x".to_vec()));
        assert_eq!(
            relative_target(b"/a/c", b"/a//./y/../x"),
            Ok(b"./x".to_vec())
        );
        assert!(matches!(
            relative_target(b"/a/x", b"/a/x"),
            Err(LinkRefusal::ToItself { .. })
        ));
        assert!(matches!(
            relative_target(b"/a/x", b"/../x"),
            Err(LinkRefusal::AboveRoot { .. })
        ));
    }

    #[test]
    fn correct_links_and_paths() {
        assert!(link_is_correct(b"x", b"x"));
        assert!(link_is_correct(b"./x", b"x"));
        assert!(!link_is_correct(b"./x", b"./y"));
        assert!(!link_is_correct(b"/x", b"x"));
        assert_eq!(compress_path(b"/a/./b//c/../d"), Some(b"/a/b/d".to_vec()));
        assert_eq!(compress_path(b"/.."), None);
        assert_eq!(compress_path(b"/"), Some(b"/".to_vec()));
        assert_eq!(chop_last_node(b"/a/b"), b"/a");
        assert_eq!(chop_last_node(b"/a"), b"/");
        assert_eq!(chop_last_node(b"a"), b".");
    }

    #[quickcheck]
    fn relative_links_lead_back_to_the_target(dest: Vec<u8>, target: Vec<u8>) -> bool {
        // Paths of simple names: the relative link, resolved from the
        // destination's directory, is the target.
        let clean = |v: &[u8]| -> Vec<u8> {
            let mut p = b"/".to_vec();
            for (i, c) in v.iter().take(12).enumerate() {
                p.push(b"ab/"[usize::from(*c) % 3]);
                if i == 11 {
                    break;
                }
            }
            compress_path(&p).unwrap_or_default()
        };
        let (d, t) = (clean(&dest), clean(&target));
        if d.len() < 2 || t.len() < 2 || d == t || d.ends_with(b"/") {
            return true;
        }
        let Ok(rel) = relative_target(&d, &t) else {
            return false;
        };
        let mut joined = chop_last_node(&d);
        joined.push(b'/');
        joined.extend_from_slice(&rel);
        compress_path(&joined) == Some(t)
    }
}
