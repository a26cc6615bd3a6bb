//! Augments files from disk: JSON parsed with serde_json into the core's
//! order-keeping [`Json`] (3.21 walks objects in file order, and the
//! order decides which class check and which variable wins).

use rcf_core::policy::augments::{AugmentsReader, Json};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// 3.21 refuses augments files larger than this (`ReadJsonFile(..., 5 MB)`).
pub const MAX_AUGMENTS_SIZE: usize = 5 * 1024 * 1024;

struct Ordered(Json);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered(Json::Null))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered(Json::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered(Json::Num(n.to_string())))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered(Json::Num(n.to_string())))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(Ordered(Json::Num(n.to_string())))
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered(Json::Str(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Ordered, E> {
                Ok(Ordered(Json::Str(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(Ordered(x)) = a.next_element()? {
                    v.push(x);
                }
                Ok(Ordered(Json::Arr(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some((k, Ordered(x))) = a.next_entry::<String, Ordered>()? {
                    v.push((k, x));
                }
                Ok(Ordered(Json::Obj(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses JSON text; errors name the file and the line and column.
pub fn parse(path: &str, text: &[u8]) -> Result<Json, String> {
    serde_json::from_slice::<Ordered>(text)
        .map(|o| o.0)
        .map_err(|e| format!("{path}:{}:{}: invalid JSON: {e}", e.line(), e.column()))
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
    }
}
