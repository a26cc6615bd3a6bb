//! The verbose access summary, line for line in cf-serverd 3.21's format
//! (SEMANTICS.md §C), so `awk '/BEGIN summary/,/END summary/'` keeps working.

use super::server::{Resource, ServerPolicy};
use std::collections::BTreeMap;

impl ServerPolicy {
    /// The summary lines, without log-level prefixes (cf-serverd prints
    /// each as one VERBOSE message). `\t` is a real TAB.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(" === BEGIN summary of access promises === ".to_string());
        let c = &self.control;
        let lists = [
            (
                "Host IPs allowed connection access (allowconnects):",
                &c.allowconnects,
            ),
            (
                "Host IPs denied connection access (denyconnects):",
                &c.denyconnects,
            ),
            (
                "Host IPs allowed multiple connection access (allowallconnects):",
                &c.allowallconnects,
            ),
            (
                "Host IPs whose keys we shall establish trust to (trustkeysfrom):",
                &c.trustkeysfrom,
            ),
            (
                "Host IPs allowed legacy connections (allowlegacyconnects):",
                &c.allowlegacyconnects,
            ),
        ];
        for (title, l) in lists {
            out.push(title.to_string());
            for e in l.entries() {
                out.push(format!("\tIP: {e}"));
            }
        }
        out.push("Users from whom we accept cf-runagent connections (allowusers):".to_string());
        for u in &c.allowusers {
            out.push(format!("\tUSER: {u}"));
        }
        out.push("Access control lists:".to_string());
        let t = &self.acl;
        let tables: [(&str, &BTreeMap<String, Resource>); 7] = [
            ("Path", &t.paths),
            ("Class", &t.classes),
            ("Variable", &t.variables),
            ("Literal", &t.literals),
            ("Query", &t.queries),
            ("Role", &t.roles),
            ("Bundle", &t.bundles),
        ];
        for (title, table) in tables {
            for r in table.values() {
                out.push(format!("\t{title}: {}", r.name));
                let cats: [(&str, Vec<&str>); 6] = [
                    (
                        "admit_ips",
                        r.admit.ips.iter().map(|e| e.text.as_str()).collect(),
                    ),
                    (
                        "admit_hostnames",
                        r.admit.hostnames.iter().map(|e| e.text.as_str()).collect(),
                    ),
                    (
                        "admit_keys",
                        r.admit.keys.iter().map(String::as_str).collect(),
                    ),
                    (
                        "deny_ips",
                        r.deny.ips.iter().map(|e| e.text.as_str()).collect(),
                    ),
                    (
                        "deny_hostnames",
                        r.deny.hostnames.iter().map(|e| e.text.as_str()).collect(),
                    ),
                    (
                        "deny_keys",
                        r.deny.keys.iter().map(String::as_str).collect(),
                    ),
                ];
                for (cat, items) in cats {
                    for e in items {
                        out.push(format!("\t\t{cat}: {e}"));
                    }
                }
            }
        }
        out.push("Access control lists for the classic network protocol:".to_string());
        let l = &self.legacy;
        for a in &l.admit {
            if a.maproot.is_empty() && a.accesslist.is_empty() {
                continue;
            }
            out.push(format!("\tPath: {}", a.path));
            for m in a.maproot.iter().rev() {
                out.push(format!("\t\tmaproot user: {m},"));
            }
            for e in a.accesslist.iter().rev() {
                out.push(format!("\t\tadmit: {e}"));
            }
        }
        for a in &l.deny {
            if a.accesslist.is_empty() {
                continue;
            }
            out.push(format!("\tPath: {}", a.path));
            for e in a.accesslist.iter().rev() {
                out.push(format!("\t\tdeny: {e}"));
            }
        }
        for a in &l.varadmit {
            out.push(format!("Object: {}", a.path));
            for m in a.maproot.iter().rev() {
                out.push(format!("{m},"));
            }
            for e in a.accesslist.iter().rev() {
                out.push(format!("Admit '{e}' root="));
            }
        }
        for a in &l.vardeny {
            out.push(format!("Object {}", a.path));
            for e in a.accesslist.iter().rev() {
                out.push(format!("Deny '{e}'"));
            }
        }
        out.push(" === END summary of access promises === ".to_string());
        out
    }
}
