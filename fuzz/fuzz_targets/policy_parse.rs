//! Fuzz the policy parser and, for inputs that parse, the whole server
//! policy loader (evaluator, ACL extraction, summary): no input may panic,
//! hang or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcf_core::policy::{self, Canon, LoadOptions, PolicySource};

struct One<'a>(&'a str);

impl PolicySource for One<'_> {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if path == "/fuzz/promises.cf" {
            Ok(self.0.as_bytes().to_vec())
        } else {
            Err("not found".into())
        }
    }
    fn canonicalize(&self, path: &str) -> Canon {
        if path == "/srv" || path == "/srv/" {
            Canon::Resolved {
                path: "/srv".into(),
                is_dir: true,
            }
        } else {
            Canon::Missing
        }
    }
    fn exists(&self, path: &str) -> bool {
        path == "/srv"
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if policy::parse_policy("fuzz.cf", text).is_err() {
        return;
    }
    let opts = LoadOptions {
        file: "/fuzz/promises.cf".into(),
        ..Default::default()
    };
    if let Ok(p) = policy::load(&One(text), &opts) {
        let _ = p.summary_lines();
        let facts = policy::ConnFacts {
            ip: "10.0.0.1",
            hostname: Some("a.example.com"),
            key: "MD5=00",
            username: "root",
            protocol: policy::Protocol::Tls,
            encrypted: true,
        };
        let _ = p.check(&facts, policy::Request::Path("/srv/x"));
        let _ = p.check(&facts, policy::Request::Bundle("b"));
    }
});
