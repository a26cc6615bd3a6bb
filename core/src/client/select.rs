//! `depth_search`'s `exclude_dirs`/`include_dirs` and `file_select`'s
//! `leaf_name`, as cf-agent applies them to a copy: each pattern is a
//! regular expression that must match a whole name (CFEngine anchors
//! them: `FullTextMatch`), and a directory is tested by its source path and
//! by its last component (`SkipDirLinks`).

use regex::bytes::Regex;

/// Why a pattern list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// A pattern is not a valid regular expression.
    #[error("invalid regular expression '{pattern}': {reason}")]
    Invalid {
        /// The pattern as given.
        pattern: String,
        /// The regex engine's explanation.
        reason: String,
    },
}

/// A list of anchored patterns; a name matches when any pattern matches all of it.
#[derive(Debug, Clone)]
pub struct NamePatterns {
    patterns: Vec<Regex>,
    sources: Vec<String>,
}

impl NamePatterns {
    /// Compile `patterns` (CFEngine's spellings), each anchored at both ends.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<NamePatterns, PatternError> {
        let mut out = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.as_ref();
            let re = Regex::new(&format!("^(?:{p})$")).map_err(|e| PatternError::Invalid {
                pattern: p.to_string(),
                reason: e.to_string(),
            })?;
            out.push(re);
        }
        Ok(NamePatterns {
            patterns: out,
            sources: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// Whether any pattern matches the whole of `name`.
    pub fn matches(&self, name: &[u8]) -> bool {
        self.patterns.iter().any(|r| r.is_match(name))
    }

    /// The patterns as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

/// `file_select` with `leaf_name` and `file_result => "leaf_name"` (or
/// `"!leaf_name"` when `negate`): which regular files a recursive copy takes.
#[derive(Debug, Clone)]
pub struct FileSelect {
    /// The `leaf_name` patterns.
    pub leaf_name: NamePatterns,
    /// `file_result => "!leaf_name"`.
    pub negate: bool,
}

impl FileSelect {
    /// Whether the file whose last path component is `leaf` is selected.
    pub fn selects(&self, leaf: &[u8]) -> bool {
        self.leaf_name.matches(leaf) != self.negate
    }
}

/// `depth_search`'s directory filters.
#[derive(Debug, Clone, Default)]
pub struct DirFilter {
    /// `exclude_dirs`: a matching directory is neither created nor entered.
    pub exclude: Option<NamePatterns>,
    /// `include_dirs`: when set, only matching directories are entered.
    pub include: Option<NamePatterns>,
}

impl DirFilter {
    /// Whether the source directory at `path` (last component `leaf`) is
    /// entered, as `SkipDirLinks` decides: excluded if either matches an
    /// `exclude_dirs` pattern, else skipped if neither matches `include_dirs`.
    pub fn enters(&self, path: &[u8], leaf: &[u8]) -> bool {
        if let Some(x) = &self.exclude {
            if x.matches(path) || x.matches(leaf) {
                return false;
            }
        }
        if let Some(i) = &self.include {
            if !(i.matches(path) || i.matches(leaf)) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn anchored_like_cfengine() {
        let p = NamePatterns::new(&[r".*\.cf", "cf_promises_release_id"]).expect("valid");
        assert!(p.matches(b"promises.cf"));
        assert!(!p.matches(b"promises.cf.bak"), "anchored at the end");
        assert!(p.matches(b"cf_promises_release_id"));
        assert!(
            !p.matches(b"xcf_promises_release_id"),
            "anchored at the start"
        );
        assert!(!p.matches(b"cf_promises_validated"));
        assert!(NamePatterns::new(&["("]).is_err());
    }

    #[test]
    fn leaf_name_and_its_negation() {
        let s = FileSelect {
            leaf_name: NamePatterns::new(&[r"\.git.*", r"\.mailmap"]).expect("valid"),
            negate: true,
        };
        assert!(!s.selects(b".gitignore"));
        assert!(!s.selects(b".mailmap"));
        assert!(s.selects(b"promises.cf"));
        let s = FileSelect { negate: false, ..s };
        assert!(s.selects(b".gitattributes"));
        assert!(!s.selects(b"x.git"));
    }

    #[test]
    fn directories_by_path_or_leaf() {
        let f = DirFilter {
            exclude: Some(
                NamePatterns::new(&[r"\.svn", r"\.git", "git-core", r"\.no-distrib"])
                    .expect("valid"),
            ),
            include: None,
        };
        assert!(!f.enters(b"masterfiles/.git", b".git"));
        assert!(!f.enters(b"masterfiles/a/.no-distrib", b".no-distrib"));
        assert!(f.enters(b"masterfiles/.github", b".github"));
        assert!(f.enters(b"masterfiles/lib", b"lib"));
        let f = DirFilter {
            exclude: Some(NamePatterns::new(&["tmp"]).expect("valid")),
            include: Some(NamePatterns::new(&["lib|services", "masterfiles/x/.*"]).expect("valid")),
        };
        assert!(f.enters(b"masterfiles/lib", b"lib"));
        assert!(f.enters(b"masterfiles/x/y", b"y"), "included by path");
        assert!(!f.enters(b"masterfiles/other", b"other"));
        assert!(!f.enters(b"masterfiles/x/tmp", b"tmp"), "exclusion wins");
    }

    #[quickcheck]
    fn a_literal_name_matches_itself_only(a: String, b: String) -> bool {
        let esc = regex::escape(&a);
        let p = NamePatterns::new(&[esc]).expect("escaped is valid");
        p.matches(a.as_bytes()) && (a == b || !p.matches(b.as_bytes()))
    }

    #[quickcheck]
    fn no_filter_enters_everything(path: Vec<u8>, leaf: Vec<u8>) -> bool {
        DirFilter::default().enters(&path, &leaf)
    }
}
