//! How the agent words its decision about a server's key, in cf-agent's
//! phrases (`Server is TRUSTED ...`, `Trusting new key: ...`,
//! `TRUST FAILED, ...`), so every client front end says the same thing.

use super::Level;
use crate::keys::trust::Outcome;

/// What to log about a server key check, and its verdict for
/// [`crate::client::Connection::handle_trust`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustReport {
    /// Lines to log, in order.
    pub logs: Vec<(Level, String)>,
    /// `Ok` to go on; `Err` carries the refusal the connection fails with.
    pub verdict: Result<(), String>,
}

/// Word the outcome of checking the key `key_id` a server presented;
/// `outcome` is the trust store's answer, or the text of its failure
/// (storage or an unusable key), which refuses the key as well.
pub fn describe(key_id: &str, outcome: Result<&Outcome, &dyn std::fmt::Display>) -> TrustReport {
    let (logs, verdict) = match outcome {
        Ok(Outcome::Trusted(_)) => (
            vec![(
                Level::Verbose,
                format!("Server is TRUSTED, received key '{key_id}' MATCHES stored one."),
            )],
            Ok(()),
        ),
        Ok(Outcome::NewlyTrusted(_, saved)) => (
            vec![
                (Level::Notice, format!("Trusting new key: {key_id}")),
                (
                    Level::Verbose,
                    format!("Saved server key as '{}'", saved.file),
                ),
            ],
            Ok(()),
        ),
        Ok(Outcome::Refused(_)) => (
            Vec::new(),
            Err(format!(
                "TRUST FAILED, server presented untrusted key: {key_id}"
            )),
        ),
        Err(e) => (
            Vec::new(),
            Err(format!("TRUST FAILED, server presented key {key_id}: {e}")),
        ),
    };
    TrustReport { logs, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::trust::{Lookup, Saved, Verdict};
    use crate::keys::KeyId;

    fn id() -> KeyId {
        "MD5=00112233445566778899aabbccddeeff".parse().expect("id")
    }

    fn lookup() -> Lookup {
        Lookup {
            id: id(),
            file: "root-MD5=00.pub".into(),
            verdict: Verdict::Unknown,
            renamed_from: None,
        }
    }

    #[test]
    fn wording() {
        let r = describe("MD5=ab", Ok(&Outcome::Trusted(lookup())));
        assert_eq!(r.verdict, Ok(()));
        assert_eq!(
            r.logs,
            vec![(
                Level::Verbose,
                "Server is TRUSTED, received key 'MD5=ab' MATCHES stored one.".to_string()
            )]
        );
        let saved = Saved {
            id: id(),
            file: "root-MD5=00.pub".into(),
            written: true,
        };
        let r = describe("MD5=ab", Ok(&Outcome::NewlyTrusted(lookup(), saved)));
        assert_eq!(r.verdict, Ok(()));
        assert_eq!(
            r.logs[0],
            (Level::Notice, "Trusting new key: MD5=ab".to_string())
        );
        assert_eq!(
            r.logs[1],
            (
                Level::Verbose,
                "Saved server key as 'root-MD5=00.pub'".to_string()
            )
        );
        let r = describe("MD5=ab", Ok(&Outcome::Refused(lookup())));
        assert!(r.logs.is_empty());
        assert_eq!(
            r.verdict,
            Err("TRUST FAILED, server presented untrusted key: MD5=ab".to_string())
        );
        let r = describe("MD5=ab", Err(&"ppkeys storage: EACCES"));
        assert_eq!(
            r.verdict,
            Err("TRUST FAILED, server presented key MD5=ab: ppkeys storage: EACCES".to_string())
        );
    }
}
