//! Several hubs for one run (`-H a -H b`, `-H a,b`, or `policy_server.dat`
//! with one hub per line): cf-agent's `servers` list, with the failover
//! rcf adds. Connect-time failover (a refused connection, a timeout, a
//! key or identification failure) is [`crate::copy::Run`]'s: it tries the
//! list in order. A hub lost in the middle of a run is handled by the
//! callers, which start the run over on the hubs after it ([`next_after`]).

use rcf_core::client::Level;

use crate::copy::{RunError, Summary};
use crate::output::Output;
use crate::ServerAddr;

/// The hub entries of `lists`: each element split on `,` and newlines,
/// trimmed, empty ones skipped. `policy_server.dat`'s first line is the
/// one cf-agent 3.21 reads (`PolicyServerReadFile`); the lines after it are
/// more hubs for rcf-agent, invisible to cf-agent.
pub fn entries<S: AsRef<str>>(lists: &[S]) -> Vec<String> {
    lists
        .iter()
        .flat_map(|l| l.as_ref().split([',', '\n']))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parse every entry (`host`, `host:port`, `[v6]:port`, bare v6, service
/// names); the first bad one is the error.
pub fn parse(entries: &[String]) -> Result<Vec<ServerAddr>, String> {
    entries.iter().map(|e| crate::parse_host_port(e)).collect()
}

/// Where a run that lost `lost` (a server's text, as
/// [`crate::copy::RunError::Lost`] names it) starts over: the index of the
/// hub after it in `servers`, or `None` when it was the last one (or is
/// not in the list).
pub fn next_after(servers: &[ServerAddr], lost: &str) -> Option<usize> {
    let i = servers.iter().position(|s| s.text == lost)?;
    (i + 1 < servers.len()).then_some(i + 1)
}

/// After a run on `servers` ended with `r`: when it lost its server
/// mid-run and a hub is left after it, say so and return where to start
/// over (an index into `servers`).
pub fn after_loss(servers: &[ServerAddr], r: &Result<(), RunError>, out: &Output) -> Option<usize> {
    let Err(e @ RunError::Lost { server, .. }) = r else {
        return None;
    };
    let i = next_after(servers, server)?;
    out.log(Level::Error, &e.to_string());
    out.log(
        Level::Notice,
        &format!(
            "Server '{server}' was lost during the run; starting over from '{}'",
            servers[i].text
        ),
    );
    Some(i)
}

/// Fold what an earlier, lost attempt did into the summary of the attempt
/// that followed it: files it copied (and purged) stay reported, once.
pub fn carry_over(earlier: Summary, later: &mut Summary) {
    let mut copied = earlier.copied;
    copied.retain(|c| !later.copied.contains(c));
    copied.append(&mut later.copied);
    later.copied = copied;
    let mut purged = earlier.purged;
    purged.retain(|p| !later.purged.contains(p));
    purged.append(&mut later.purged);
    later.purged = purged;
    later.bytes += earlier.bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_policy_server_dat_lines() {
        assert_eq!(
            entries(&["a,b:5309", " [::1]:99 ", ""]),
            vec!["a", "b:5309", "[::1]:99"]
        );
        assert_eq!(entries(&["hub1\nhub2:5309\n\n"]), vec!["hub1", "hub2:5309"]);
        let s = parse(&entries(&["a,b:5309,c"])).unwrap();
        assert_eq!(next_after(&s, "a"), Some(1));
        assert_eq!(next_after(&s, "b:5309"), Some(2));
        assert_eq!(next_after(&s, "c"), None);
        assert_eq!(next_after(&s, "zz"), None);
        assert!(parse(&entries(&["a,hub:0"])).is_err());
    }
}
