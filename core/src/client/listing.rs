//! Which names from a server's `OPENDIR` reply a copy may use.
//!
//! The names come from the network, so each one is checked before it is
//! joined to a local destination path: a name with `/`, a NUL, `.` or `..`
//! could make the agent write outside its destination. cf-agent also skips
//! a few names by convention (`lost+found`, `.cfengine.rm`, `...`;
//! `files_properties.c ConsiderAbstractFile`).

/// Names cf-agent never copies.
pub const SKIPPED: &[&[u8]] = &[b".", b"..", b"lost+found", b".cfengine.rm", b"..."];

/// What to do with one listed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameVerdict {
    /// A plain file name: copy it.
    Use,
    /// A conventional name cf-agent skips silently.
    Skip,
    /// A name no honest server sends; refuse it and say so.
    Refuse,
}

/// Classify one name from a listing.
pub fn classify(name: &[u8]) -> NameVerdict {
    if SKIPPED.contains(&name) {
        return NameVerdict::Skip;
    }
    if name.is_empty()
        || name.contains(&b'/')
        || name.contains(&0)
        || name.len() > crate::reply::MAX_NAME
    {
        return NameVerdict::Refuse;
    }
    NameVerdict::Use
}

/// Split a listing into usable names (sorted, deduplicated: a hostile
/// server could repeat a name to make us copy it twice) and refused ones.
pub fn usable(names: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for n in names {
        match classify(n) {
            NameVerdict::Use => ok.push(n.clone()),
            NameVerdict::Skip => {}
            NameVerdict::Refuse => bad.push(n.clone()),
        }
    }
    ok.sort();
    ok.dedup();
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(classify(b"a.txt"), NameVerdict::Use);
        assert_eq!(classify(b".hidden"), NameVerdict::Use);
        for n in [&b"."[..], b"..", b"lost+found", b".cfengine.rm", b"..."] {
            assert_eq!(classify(n), NameVerdict::Skip);
        }
        for n in [&b"../x"[..], b"/etc/passwd", b"a/b", b"a\0b", b""] {
            assert_eq!(classify(n), NameVerdict::Refuse);
        }
        let (ok, bad) = usable(&[
            b"b".to_vec(),
            b"a".to_vec(),
            b"b".to_vec(),
            b"..".to_vec(),
            b"x/..".to_vec(),
        ]);
        assert_eq!(ok, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(bad, vec![b"x/..".to_vec()]);
    }
}
