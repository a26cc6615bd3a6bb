//! The usual setup: a server work dir, a client work dir, the data tree.

use super::{make_data_tree, AccessRule, DataTree, LabError, ServerPolicy, Workdir};
use std::path::PathBuf;

/// A server work dir and a client work dir, both with host keys, and the
/// data tree in the server's scratch dir (`<server scratch>/data`).
#[derive(Debug)]
pub struct Lab {
    pub server: Workdir,
    pub client: Workdir,
    pub data: DataTree,
}

impl Lab {
    /// Work dirs `<name>-srv` and `<name>-cli`, keys made with the real
    /// cf-key, data tree written. No trust exchanged, no server started.
    pub fn new(name: &str) -> Result<Lab, LabError> {
        let server = Workdir::new(&format!("{name}-srv"))?;
        let client = Workdir::new(&format!("{name}-cli"))?;
        server.cf_key()?;
        client.cf_key()?;
        let data = make_data_tree(&server.scratch().join("data"))?;
        Ok(Lab {
            server,
            client,
            data,
        })
    }

    /// [`ServerPolicy::new(0)`](ServerPolicy::new) admitting `share/` and
    /// `masterfiles/` to loopback (`secret/` not admitted).
    pub fn policy(&self) -> ServerPolicy {
        let mut p = ServerPolicy::new(0);
        p.access.push(AccessRule::admit_loopback(
            self.data.share.to_string_lossy(),
        ));
        p.access.push(AccessRule::admit_loopback(
            self.data.masterfiles.to_string_lossy(),
        ));
        p
    }

    /// Pre-exchange keys for `root` both ways (needed for cf-runagent).
    pub fn trust_both_ways(&self) -> Result<(), LabError> {
        self.client.trust(&self.server, "root")?;
        self.server.trust(&self.client, "root")?;
        Ok(())
    }

    /// `<client scratch>/out/<rel>`: where copies go.
    pub fn out(&self, rel: &str) -> PathBuf {
        self.client.scratch().join("out").join(rel)
    }
}
