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
    /// A `path_name` pattern that does not start with `/`.
    #[error("path_name '{0}' is not an absolute path (cf-promises refuses it)")]
    NotAbsolute(String),
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

    /// 3.21's `MatchRlistItem` (directory filters, link patterns): a
    /// pattern equal to `name` as a string matches even when, read as a
    /// regular expression, it would not (`a+b` names `a+b`).
    pub fn matches_item(&self, name: &[u8]) -> bool {
        self.sources.iter().any(|s| s.as_bytes() == name) || self.matches(name)
    }

    /// `path_name`'s patterns: as `new`, and each must start with `/`
    /// (cf-promises refuses others: "Filename is not an absolute path").
    pub fn absolute<S: AsRef<str>>(patterns: &[S]) -> Result<NamePatterns, PatternError> {
        if let Some(p) = patterns.iter().find(|p| !p.as_ref().starts_with('/')) {
            return Err(PatternError::NotAbsolute(p.as_ref().to_string()));
        }
        NamePatterns::new(patterns)
    }

    /// The patterns as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

/// `file_select` as a copy applies it to each non-directory source entry
/// (`SelectLeaf`): `leaf_name` and `path_name` patterns, combined by the
/// `file_result` class expression. The other selection attributes are not
/// taken (their names are refused in `file_result`).
#[derive(Debug, Clone)]
pub struct FileSelect {
    /// `leaf_name`: patterns for the last path component (none: the
    /// `leaf_name` class is always set, as 3.21 does).
    pub leaf_name: Option<NamePatterns>,
    /// `path_name`: patterns for the whole source path (none: the
    /// `path_name` class is never set; 3.21 sets `leaf_path` instead).
    pub path_name: Option<NamePatterns>,
    /// `file_result`.
    pub result: FileResult,
}

impl FileSelect {
    /// `leaf_name => patterns` with `file_result => "leaf_name"` (or
    /// `"!leaf_name"` when `negate`), the MPF's and failsafe's selections.
    pub fn leaf(leaf_name: NamePatterns, negate: bool) -> FileSelect {
        let atom = FileResult::Class(SelectClass::LeafName);
        FileSelect {
            leaf_name: Some(leaf_name),
            path_name: None,
            result: if negate {
                FileResult::Not(Box::new(atom))
            } else {
                atom
            },
        }
    }

    /// Whether the file at source path `path`, whose last component is
    /// `leaf`, is selected.
    pub fn selects(&self, leaf: &[u8], path: &[u8]) -> bool {
        let leaf_name = self.leaf_name.as_ref().is_none_or(|p| p.matches(leaf));
        let path_name = self.path_name.as_ref().is_some_and(|p| p.matches(path));
        self.result.eval(&|c| match c {
            SelectClass::LeafName => leaf_name,
            SelectClass::PathName => path_name,
        })
    }
}

/// The selection classes a `file_result` may name here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectClass {
    /// `leaf_name`.
    LeafName,
    /// `path_name`.
    PathName,
}

/// A parsed `file_result` class expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileResult {
    /// One class.
    Class(SelectClass),
    /// `!e`.
    Not(Box<FileResult>),
    /// `a.b` or `a&b`.
    And(Box<FileResult>, Box<FileResult>),
    /// `a|b` or `a||b`.
    Or(Box<FileResult>, Box<FileResult>),
}

/// Why a `file_result` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileResultError {
    /// The text is not a class expression.
    #[error("malformed file_result '{0}'")]
    Malformed(String),
    /// A selection class rcf-agent does not evaluate (it takes only `leaf_name` and `path_name`).
    #[error("file_result '{expr}' names '{class}': rcf-agent copy selects by leaf_name and path_name only")]
    Unsupported {
        /// The whole expression.
        expr: String,
        /// The class it cannot evaluate.
        class: String,
    },
}

impl FileResult {
    /// Parse a class expression as 3.21 does: `!` binds tightest, then
    /// `.`/`&`, then `|`/`||`; parentheses group; blanks are ignored.
    pub fn parse(text: &str) -> Result<FileResult, FileResultError> {
        let toks: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut p = ExprParser {
            t: &toks,
            i: 0,
            text,
        };
        let e = p.or()?;
        if p.i != toks.len() {
            return Err(FileResultError::Malformed(text.to_string()));
        }
        Ok(e)
    }

    /// The value of the expression given each class's value.
    pub fn eval(&self, class: &dyn Fn(SelectClass) -> bool) -> bool {
        match self {
            FileResult::Class(c) => class(*c),
            FileResult::Not(e) => !e.eval(class),
            FileResult::And(a, b) => a.eval(class) && b.eval(class),
            FileResult::Or(a, b) => a.eval(class) || b.eval(class),
        }
    }
}

struct ExprParser<'a> {
    t: &'a [char],
    i: usize,
    text: &'a str,
}

impl ExprParser<'_> {
    fn bad(&self) -> FileResultError {
        FileResultError::Malformed(self.text.to_string())
    }

    fn peek(&self) -> Option<char> {
        self.t.get(self.i).copied()
    }

    fn or(&mut self) -> Result<FileResult, FileResultError> {
        let mut l = self.and()?;
        while self.peek() == Some('|') {
            self.i += 1;
            if self.peek() == Some('|') {
                self.i += 1;
            }
            let r = self.and()?;
            l = FileResult::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<FileResult, FileResultError> {
        let mut l = self.not()?;
        while matches!(self.peek(), Some('.') | Some('&')) {
            self.i += 1;
            let r = self.not()?;
            l = FileResult::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn not(&mut self) -> Result<FileResult, FileResultError> {
        if self.peek() == Some('!') {
            self.i += 1;
            return Ok(FileResult::Not(Box::new(self.not()?)));
        }
        if self.peek() == Some('(') {
            self.i += 1;
            let e = self.or()?;
            if self.peek() != Some(')') {
                return Err(self.bad());
            }
            self.i += 1;
            return Ok(e);
        }
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.i += 1;
        }
        let word: String = self.t[start..self.i].iter().collect();
        match word.as_str() {
            "" => Err(self.bad()),
            "leaf_name" => Ok(FileResult::Class(SelectClass::LeafName)),
            "path_name" => Ok(FileResult::Class(SelectClass::PathName)),
            _ => Err(FileResultError::Unsupported {
                expr: self.text.to_string(),
                class: word,
            }),
        }
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
            if x.matches_item(path) || x.matches_item(leaf) {
                return false;
            }
        }
        if let Some(i) = &self.include {
            if !(i.matches_item(path) || i.matches_item(leaf)) {
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
        assert!(NamePatterns::absolute(&["/.*/x"]).is_ok());
        assert!(matches!(
            NamePatterns::absolute(&[".*/x"]),
            Err(PatternError::NotAbsolute(_))
        ));
    }

    #[test]
    fn leaf_name_and_its_negation() {
        let s = FileSelect::leaf(
            NamePatterns::new(&[r"\.git.*", r"\.mailmap"]).expect("valid"),
            true,
        );
        assert!(!s.selects(b".gitignore", b"m/.gitignore"));
        assert!(!s.selects(b".mailmap", b"m/.mailmap"));
        assert!(s.selects(b"promises.cf", b"m/promises.cf"));
        let s = FileSelect::leaf(
            NamePatterns::new(&[r"\.git.*", r"\.mailmap"]).expect("valid"),
            false,
        );
        assert!(s.selects(b".gitattributes", b"x"));
        assert!(!s.selects(b"x.git", b"x"));
    }

    #[test]
    fn path_name_as_3_21_sets_its_classes() {
        let path = |p: &[&str], r: &str| FileSelect {
            leaf_name: None,
            path_name: Some(NamePatterns::new(p).expect("valid")),
            result: FileResult::parse(r).expect("valid"),
        };
        let s = path(&[".*/sub/.*"], "path_name");
        assert!(s.selects(b"c.cf", b"/src/sub/c.cf"));
        assert!(!s.selects(b"a.cf", b"/src/a.cf"));
        assert!(!s.selects(b"sub", b"sub"), "whole path, anchored");
        // no leaf_name patterns: the leaf_name class is always set
        assert!(path(&["x"], "leaf_name").selects(b"a", b"/a"));
        // no path_name patterns: the path_name class is never set (3.21 sets "leaf_path")
        let s = FileSelect {
            leaf_name: Some(NamePatterns::new(&[".*"]).expect("valid")),
            path_name: None,
            result: FileResult::parse("path_name").expect("valid"),
        };
        assert!(!s.selects(b"a", b"/a"));
        let s = FileSelect {
            leaf_name: Some(NamePatterns::new(&[r".*\.cf"]).expect("valid")),
            path_name: Some(NamePatterns::new(&[".*/sub/.*"]).expect("valid")),
            result: FileResult::parse("leaf_name.!path_name").expect("valid"),
        };
        assert!(s.selects(b"a.cf", b"/s/a.cf"));
        assert!(!s.selects(b"c.cf", b"/s/sub/c.cf"));
        assert!(!s.selects(b"b.txt", b"/s/b.txt"));
    }

    #[test]
    fn file_result_expressions() {
        use SelectClass::*;
        let v = |e: &str, l: bool, p: bool| {
            FileResult::parse(e)
                .expect("valid")
                .eval(&|c| if c == LeafName { l } else { p })
        };
        assert!(v("leaf_name|path_name", false, true));
        assert!(v("leaf_name||path_name", true, false));
        assert!(!v("leaf_name.path_name", true, false));
        assert!(v("leaf_name&path_name", true, true));
        assert!(v("!leaf_name", false, false));
        assert!(v("!(leaf_name|path_name)", false, false));
        // `.` binds tighter than `|`
        assert!(v("path_name|leaf_name.path_name", false, true));
        assert!(v(" leaf_name . ! path_name ", true, false));
        assert!(FileResult::parse("leaf_name path_name").is_err());
        for bad in ["", "leaf_name.", "(leaf_name", "leaf_name)", "|path_name"] {
            assert!(
                matches!(FileResult::parse(bad), Err(FileResultError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            FileResult::parse("leaf_name.size"),
            Err(FileResultError::Unsupported {
                expr: "leaf_name.size".into(),
                class: "size".into()
            })
        );
    }

    #[test]
    fn list_items_match_literally_too() {
        let p = NamePatterns::new(&["a+b"]).expect("valid");
        assert!(p.matches_item(b"a+b"));
        assert!(!p.matches(b"a+b"));
        assert!(p.matches_item(b"aab"));
        let f = DirFilter {
            exclude: Some(p),
            include: None,
        };
        assert!(!f.enters(b"/x/a+b", b"a+b"));
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
