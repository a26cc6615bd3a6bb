//! Which class names cf-serverd 3.21 may define by itself (hard classes,
//! discovered from the host, the clock, the key and the command line).
//!
//! rcf cannot prove such a class undefined unless the caller vouches that
//! it discovered the host's hard classes ([`super::LoadOptions::hard_classes_discovered`]):
//! until then an undefined name of one of these families is *unknown*
//! to the evaluator, so a deny rule it guards still applies and an admit
//! rule it guards does not (issue 18, finding 3).

use super::hostclasses::{DAYS, MONTHS, SHIFTS};

/// Operating-system identities: a host is one of them, so when the caller
/// names the host's OS (e.g. `linux`, `debian`) the others are known false.
const OS: &[&str] = &[
    "linux",
    "debian",
    "ubuntu",
    "redhat",
    "rhel",
    "centos",
    "fedora",
    "suse",
    "sles",
    "sled",
    "opensuse",
    "gentoo",
    "archlinux",
    "slackware",
    "mandrake",
    "mandriva",
    "alpine",
    "amazon_linux",
    "oracle",
    "oraclelinux",
    "rocky",
    "almalinux",
    "scientific",
    "raspbian",
    "mint",
    "devuan",
    "kali",
    "solaris",
    "sunos",
    "aix",
    "hpux",
    "freebsd",
    "netbsd",
    "openbsd",
    "dragonfly",
    "darwin",
    "macos",
    "osx",
    "windows",
    "cygwin",
    "mingw",
    "qnx",
    "el",
    "SuSE",
    "SUSE",
];

/// Architectures and word size.
const ARCH: &[&str] = &[
    "x86_64", "i386", "i486", "i586", "i686", "aarch64", "arm", "armv6l", "armv7l", "armv8l",
    "ppc", "ppc64", "ppc64le", "s390", "s390x", "sparc", "sparc64", "mips", "mips64", "riscv64",
    "ia64", "64_bit", "32_bit", "sun4u", "sun4v",
];

/// Other exact names 3.21 defines on some host (virtualization, modes,
/// roles, quarters of the hour).
const EXACT: &[&str] = &[
    // (operating systems: see OS) init systems and generic words
    "unix",
    "gnu",
    "systemd",
    "sysv",
    "upstart",
    // virtualization and containers
    "virt_guest",
    "virt_host",
    "docker",
    "docker_container",
    "lxc",
    "openvz",
    "xen",
    "xen_dom0",
    "xen_domu_hv",
    "xen_domu_pv",
    "kvm",
    "vmware",
    "virtualbox",
    "VirtualBox",
    "hyperv",
    "zone",
    "solaris_zone",
    "container",
    // edition, version, modes and roles
    // (not enterprise_edition, cfengine_* nor community_edition: rcf plays
    // community 3.21.0, whose version classes are exact)
    "verbose_mode",
    "inform_mode",
    "debug_mode",
    "opt_dry_run",
    "policy_server",
    "am_policy_hub",
    "bootstrap_mode",
    // clock words: weekdays, months and shifts come from the tables
    // `hostclasses::time_classes` defines them from (CLOCK_WORDS)
    "Q1",
    "Q2",
    "Q3",
    "Q4",
];

/// The clock words 3.21 defines by name (weekdays, months, shifts of the
/// day): the very tables [`super::hostclasses::time_classes`] derives this
/// host's time classes from, so the two cannot drift apart.
const CLOCK_WORDS: [&[&str]; 3] = [&DAYS, &MONTHS, &SHIFTS];

/// Prefixes of the generated families: addresses, interfaces, versions,
/// clock classes (`Hr07`, `Min05_10`, `Day7`, `Yr2026`, `GMT_*`,
/// `Lcycle_*`) and host keys. Versioned OS names (`debian_12`,
/// `linux_x86_64_6_1`) are found through [`OS`].
const PREFIXES: &[&str] = &[
    "ipv4_",
    "ipv6_",
    "net_iface_",
    "mac_",
    "PK_MD5_",
    "PK_SHA_",
    "feature_",
    "Hr",
    "Min",
    "Day",
    "Yr",
    "Lcycle_",
    "GMT_",
    "Week",
    "Shift_",
    "compiled_on_",
    "x86_64_",
    "i686_",
    "aarch64_",
    "virt_",
    "policy_server_",
    "opt_",
];

/// The OS identity a class name belongs to (`debian_12` → `debian`,
/// `el9` → `el`, `linux_x86_64_6_1` → `linux`), if any.
fn os_of(name: &str) -> Option<&'static str> {
    OS.iter().copied().find(|os| {
        name == *os
            || name.strip_prefix(os).is_some_and(|rest| {
                // versions (debian_12, el9) and, for the kernel, the
                // architecture (linux_x86_64); debian_derived stays soft
                let rest = if *os == "el" {
                    rest
                } else if let Some(r) = rest.strip_prefix('_') {
                    r
                } else {
                    return false;
                };
                rest.starts_with(|c: char| c.is_ascii_digit())
                    || ARCH.iter().any(|arch| {
                        rest == *arch || rest.strip_prefix(arch).is_some_and(|r| r.starts_with('_'))
                    })
            })
    })
}

/// Whether an undefined `name` is unknown to rcf given what the caller
/// told it: `defined` (the caller's hard classes) and whether the host is
/// bootstrapped (`has_policy_hub`). A family the caller's facts decide is
/// not unknown: another OS than the one named, the `policy_server`
/// family on a host that is not bootstrapped.
pub fn undecided(
    name: &str,
    defined: &std::collections::BTreeSet<String>,
    has_policy_hub: bool,
) -> bool {
    let name = name.strip_prefix("default:").unwrap_or(name);
    if !may_be_hard_class(name) {
        return false;
    }
    if let Some(os) = os_of(name) {
        let named_os = defined.iter().any(|c| OS.contains(&c.as_str()));
        // another OS than the host's is known false; the host's own
        // versioned classes (debian_12, linux_x86_64) stay unknown
        return !named_os || defined.contains(os);
    }
    if !has_policy_hub
        && (name == "policy_server"
            || name == "am_policy_hub"
            || name.starts_with("policy_server_"))
    {
        return false;
    }
    true
}

/// Whether `name` (without a `default:` prefix) belongs to a family of
/// classes 3.21 may define by itself on some host. Over-approximates:
/// a soft class with such a name is also treated as unknown when the
/// policy does not define it (stricter, never looser).
pub fn may_be_hard_class(name: &str) -> bool {
    let name = name.strip_prefix("default:").unwrap_or(name);
    if name.contains(':') {
        return false;
    }
    if EXACT.contains(&name)
        || CLOCK_WORDS.iter().any(|words| words.contains(&name))
        || ARCH.contains(&name)
        || os_of(name).is_some()
    {
        return true;
    }
    PREFIXES.iter().any(|p| {
        name.strip_prefix(p).is_some_and(|rest| {
            !rest.is_empty()
                // the clock prefixes take digits only: keeps "Minor",
                // "Daily" and "Hrm" soft
                && (!matches!(*p, "Hr" | "Min" | "Day" | "Yr" | "Week")
                    || rest.starts_with(|c: char| c.is_ascii_digit()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::may_be_hard_class;

    #[test]
    fn families() {
        for c in [
            "x86_64",
            "ipv4_127_0_0_1",
            "Hr07",
            "Min05_10",
            "Monday",
            "debian_12",
            "el9",
            "verbose_mode",
            "default:linux",
            "PK_MD5_abc",
            "am_policy_hub",
        ] {
            assert!(may_be_hard_class(c), "{c}");
        }
        let linux: std::collections::BTreeSet<String> =
            ["linux", "debian"].iter().map(|s| s.to_string()).collect();
        let none = std::collections::BTreeSet::new();
        assert!(!super::undecided("windows", &linux, false));
        assert!(!super::undecided("redhat_8", &linux, false));
        assert!(super::undecided("debian_12", &linux, false));
        assert!(super::undecided("linux_x86_64", &linux, false));
        assert!(super::undecided("windows", &none, false));
        assert!(super::undecided("x86_64", &linux, false));
        assert!(!super::undecided("policy_server", &linux, false));
        assert!(super::undecided("policy_server", &linux, true));
        assert!(!super::undecided("cfengine_3_12", &linux, false));
        assert!(!super::undecided("mpf_x", &none, false));
        assert!(!super::undecided("debian_derived_evaluated", &linux, false));
        for c in [
            "else",
            "Minor",
            "mpf_foo",
            "myclass",
            "ns:x86_64",
            "Hr",
            "role1",
            "cfengine_3_21",
        ] {
            assert!(!may_be_hard_class(c), "{c}");
        }
    }

    /// Every time class `hostclasses` derives, local or GMT, at any hour,
    /// minute, month and weekday, is one this module knows may be hard.
    #[test]
    fn time_classes_are_hard_class_families() {
        use super::super::hostclasses::{time_classes, Tm};
        for (hour, min, mon, wday) in (0..24).flat_map(|h| {
            (0..60)
                .step_by(5)
                .map(move |m| (h, m, (h + m) % 12, (h * 7 + m) % 7))
        }) {
            let t = Tm {
                year: 2026,
                mon,
                mday: 1 + hour,
                wday,
                hour,
                min,
            };
            let mut classes = std::collections::BTreeSet::new();
            time_classes(&t, "", &mut classes);
            time_classes(&t, "GMT_", &mut classes);
            for c in &classes {
                assert!(may_be_hard_class(c), "{c}");
            }
        }
    }
}
