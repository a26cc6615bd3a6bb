//! What a copy run reports: the error that stopped it and the summary
//! `--json` prints.

use crate::output::json_str;

/// Why a whole run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No server in the list connected and authenticated.
    #[error("No suitable server found for '{0}'")]
    NoServer(String),
    /// The chosen server went away and could not be reached again.
    #[error("Lost connection to '{server}' and could not reconnect: {detail}")]
    Lost {
        /// The server as written.
        server: String,
        /// The last error.
        detail: String,
    },
}

/// What happened, for the summary and `--json`.
#[derive(Debug, Default)]
pub struct Summary {
    pub server: Option<String>,
    pub server_key: Option<String>,
    pub copied: Vec<String>,
    pub kept: u64,
    pub failed: Vec<(String, String)>,
    pub purged: Vec<String>,
    pub bytes: u64,
}

impl Summary {
    /// The `--json` document.
    pub fn to_json(&self, ok: bool, error: Option<&str>) -> String {
        let list = |v: &Vec<String>| v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",");
        let failed = self
            .failed
            .iter()
            .map(|(p, e)| format!("{{\"path\":{},\"error\":{}}}", json_str(p), json_str(e)))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{{\"ok\":{ok},\"server\":{},\"server_key\":{},\"copied\":[{}],\"kept\":{},\"failed\":[{failed}],\"purged\":[{}],\"bytes\":{},\"error\":{}}}",
            self.server.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
            self.server_key.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
            list(&self.copied),
            self.kept,
            list(&self.purged),
            self.bytes,
            error.map(json_str).unwrap_or_else(|| "null".into()),
        )
    }
}
