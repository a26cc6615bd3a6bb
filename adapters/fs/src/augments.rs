//! Augments files from disk, parsed by the core's port of 3.21's JSON
//! parser into the order-keeping [`Json`] (3.21 walks objects in file
//! order, and the order decides which class check and which variable wins).

use rcf_core::policy::augments::{AugmentsReader, Json};

/// 3.21 refuses augments files larger than this (`ReadJsonFile(..., 5 MB)`).
pub const MAX_AUGMENTS_SIZE: usize = 5 * 1024 * 1024;

/// Parses JSON text as 3.21 does (`JsonParseFile`: its lenient parser,
/// object keys in file order, a repeated key replacing the earlier one,
/// numbers as written); errors name the file, line and column.
pub fn parse(path: &str, text: &[u8]) -> Result<Json, String> {
    // 3.21 reads a C string: it ends at the first NUL
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let text = String::from_utf8_lossy(&text[..end]);
    rcf_core::policy::json::parse_with_offset(&text).map_err(|(e, at)| {
        let before = &text.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = at
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        format!("{path}:{line}:{col}: invalid JSON: {e}")
    })
}

/// Reads augments files from the filesystem.
pub struct FsAugments;

impl AugmentsReader for FsAugments {
    fn read_json(&self, path: &str) -> Result<Option<Json>, String> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(None);
        };
        if meta.len() as usize > MAX_AUGMENTS_SIZE {
            return Err(format!(
                "{path}: larger than {MAX_AUGMENTS_SIZE} bytes, not read"
            ));
        }
        match std::fs::read(path) {
            Ok(b) => parse(path, &b).map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// `WORKDIR/data/host_specific.json`, when it exists: its path and JSON.
pub fn host_specific(workdir: &str) -> Result<Option<(String, Json)>, String> {
    let path = format!("{workdir}/data/host_specific.json");
    FsAugments.read_json(&path).map(|o| o.map(|j| (path, j)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_object_order() {
        let j = parse("x", br#"{"b": 1, "a": [true, null, "s"], "c": {"z": 2.5}}"#).unwrap();
        assert_eq!(
            j,
            Json::Obj(vec![
                ("b".into(), Json::Num("1".into())),
                (
                    "a".into(),
                    Json::Arr(vec![Json::Bool(true), Json::Null, Json::Str("s".into())])
                ),
                (
                    "c".into(),
                    Json::Obj(vec![("z".into(), Json::Num("2.5".into()))])
                ),
            ])
        );
        let e = parse("/p/def.json", b"{\n \"a\": }").unwrap_err();
        assert!(e.starts_with("/p/def.json:2:"), "{e}");
        // 3.21's leniencies: trailing comma, unquoted key; a repeated key moves to the end
        let j = parse("x", br#"{a: 1, "b": 2, "a": 3,}"#).unwrap();
        assert_eq!(
            j,
            Json::Obj(vec![
                ("b".into(), Json::Num("2".into())),
                ("a".into(), Json::Num("3".into())),
            ])
        );
    }
}
