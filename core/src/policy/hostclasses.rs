//! Hard classes and `sys.*` variables, derived from facts about the host as
//! 3.21 derives them (libenv/sysinfo.c `DetectEnvironment`, unix_iface.c,
//! time_classes.c, libpromises/generic_agent.c `GenericAgentDiscoverContext`).
//!
//! Pure: the adapter (`rcf_fs::hostinfo`) reads uname, interfaces, files and
//! the clock into [`HostFacts`]; [`derive`] turns them into the classes and
//! variables the evaluator takes through `LoadOptions`.

use super::policy_server::Bootstrapped;
use super::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The CFEngine version rcf speaks (`sys.cf_version`, `cfengine_3_21_0`).
pub const CF_VERSION: &str = "3.21.0";

/// The features Debian's 3.21 build reports (`feature_*`, libpromises/feature.c
/// as compiled there: no curl).
pub const FEATURES: &[&str] = &[
    "yaml",
    "xml",
    "tls_1_0",
    "tls_1_1",
    "tls_1_2",
    "tls_1_3",
    "def_json_preparse",
    "host_specific_data_load",
    "copyfrom_restrict_keys",
];

/// A broken-down time (`struct tm` fields 3.21's time classes use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tm {
    /// Full year (e.g. 2026).
    pub year: i32,
    /// Month, 0 = January.
    pub mon: u32,
    /// Day of the month, 1..=31.
    pub mday: u32,
    /// Day of the week, 0 = Sunday.
    pub wday: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub min: u32,
}

/// One IPv4 address of an interface, in the kernel's order (SIOCGIFCONF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Iface {
    /// Interface name (e.g. `eth0`).
    pub iface: String,
    /// The address as text.
    pub addr: String,
    /// IFF_UP.
    pub up: bool,
    /// IFF_LOOPBACK.
    pub loopback: bool,
    /// The hardware address, when the interface has one.
    pub mac: Option<[u8; 6]>,
}

/// Everything [`derive`] needs to know about the host; read by the adapter.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// uname: sysname, nodename, release, version, machine.
    pub sysname: String,
    /// uname nodename.
    pub nodename: String,
    /// uname release.
    pub release: String,
    /// uname version.
    pub version: String,
    /// uname machine.
    pub machine: String,
    /// `gethostbyname(gethostname())`: its official name and aliases.
    pub dns_name: Option<String>,
    /// Aliases of the node's name from the resolver (each becomes a class).
    pub dns_aliases: Vec<String>,
    /// IPv4 addresses per interface.
    pub ipv4: Vec<Ipv4Iface>,
    /// IPv6 addresses (interface, address) as `ifconfig -a` lists them
    /// (`::1` excluded); empty when 3.21 would find no ifconfig.
    pub ipv6: Vec<(String, String)>,
    /// The default IPv4 gateway (`/proc/net/route`).
    pub ipv4_gateway: Option<String>,
    /// Online CPUs.
    pub cpus: Option<u32>,
    /// Path and contents of os-release.
    pub os_release: Option<(String, String)>,
    /// First line of /etc/debian_version, when it exists.
    pub debian_version: Option<String>,
    /// First line of /etc/issue (Debian/Ubuntu), when /etc/debian_version exists.
    pub issue: Option<String>,
    /// PID 1 is systemd.
    pub systemd: bool,
    /// /usr/bin/aptitude exists.
    pub have_aptitude: bool,
    /// The host key's digest (`MD5=...`), when a key exists.
    pub key_digest: Option<String>,
    /// `policy_server.dat`, and the address its host name resolved to.
    pub bootstrapped: Option<(Bootstrapped, Option<String>)>,
    /// `STATEDIR/am_policy_hub` exists.
    pub am_policy_hub_file: bool,
    /// Local and UTC time of discovery, and the epoch seconds.
    pub local: Tm,
    /// UTC.
    pub gmt: Tm,
    /// Seconds since the epoch.
    pub epoch: i64,
    /// The work directory.
    pub workdir: String,
    /// The agent type class (`server` for cf-serverd, `common` for cf-promises).
    pub agent_type: String,
    /// `-v`, `-I`, `-d` given.
    pub verbose: bool,
    /// `-I`.
    pub inform: bool,
    /// `-d`.
    pub debug: bool,
    /// Discovery inputs 3.21 reads that rcf does not interpret (distribution
    /// release files other than os-release/debian, VM and container
    /// markers): the classes 3.21 derives from them are missing here.
    pub not_interpreted: Vec<String>,
}

/// Classes and `sys.*` variables, as the evaluator takes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HardContext {
    /// The hard classes (canonified).
    pub classes: BTreeSet<String>,
    /// `sys.*` variables by name (array entries as `name[key]`).
    pub sys: BTreeMap<String, Value>,
    /// Warnings: discovery inputs rcf does not interpret.
    pub not_interpreted: Vec<String>,
}

/// 3.21's `CanonifyName`: every byte that is not ASCII alphanumeric
/// becomes `_`.
pub fn canonify(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// Month names, January first (`struct tm` `tm_mon` order); also the
/// month classes [`super::hardclass`] knows may be hard.
pub(crate) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Weekday names, Monday first; also the weekday classes
/// [`super::hardclass`] knows may be hard.
pub(crate) const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
/// The shifts of the day, six hours each from midnight; also the shift
/// classes [`super::hardclass`] knows may be hard.
pub(crate) const SHIFTS: [&str; 4] = ["Night", "Morning", "Afternoon", "Evening"];

/// The time classes of `AddTimeClass` for one time zone (`prefix` "" for
/// local time, "GMT_" for UTC).
pub fn time_classes(t: &Tm, prefix: &str, out: &mut BTreeSet<String>) {
    let mut put = |s: String| {
        out.insert(s);
    };
    put(format!("{prefix}Lcycle_{}", t.year.rem_euclid(3)));
    put(format!("{prefix}Yr{:04}", t.year));
    put(format!("{prefix}{}", MONTHS[(t.mon % 12) as usize]));
    put(format!("{prefix}{}", DAYS[((t.wday + 6) % 7) as usize]));
    put(format!("{prefix}Day{}", t.mday));
    put(format!("{prefix}{}", SHIFTS[((t.hour / 6) % 4) as usize]));
    put(format!("{prefix}Hr{:02}", t.hour));
    put(format!("{prefix}Hr{}", t.hour));
    let q = t.min / 15 + 1;
    put(format!("{prefix}Q{q}"));
    put(format!("{prefix}Hr{:02}_Q{q}", t.hour));
    put(format!("{prefix}Min{:02}", t.min));
    let start = (t.min / 5) * 5;
    put(format!("{prefix}Min{:02}_{:02}", start, (start + 5) % 60));
}

/// `CreateHardClassesFromCanonification`: the name and every prefix ending
/// before an `_`.
fn with_prefixes(canonified: &str, out: &mut BTreeSet<String>) {
    let mut s = canonified.to_string();
    out.insert(s.clone());
    while let Some(i) = s.rfind('_') {
        s.truncate(i);
        out.insert(s.clone());
    }
}

/// `CalculateDomainName`: (fqhost, uqhost, domain) from the node name and
/// the resolver's name for it.
pub fn domain_names(nodename: &str, dnsname: &str) -> (String, String, String) {
    let fq = if dnsname.contains('.') {
        dnsname.to_string()
    } else {
        nodename.to_string()
    };
    if fq.starts_with(nodename) && fq.as_bytes().get(nodename.len()) == Some(&b'.') {
        let domain = fq[nodename.len() + 1..].to_string();
        return (fq, nodename.to_string(), domain);
    }
    match nodename.split_once('.') {
        Some((uq, dom)) => (fq, uq.to_string(), dom.to_string()),
        None => (fq, nodename.to_string(), String::new()),
    }
}

/// `ctime()` without the newline: `Mon Dec  7 03:57:42 2026`.
fn ctime(t: &Tm, sec: u32) -> String {
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        &DAYS[((t.wday + 6) % 7) as usize][..3],
        &MONTHS[(t.mon % 12) as usize][..3],
        t.mday,
        t.hour,
        t.min,
        sec,
        t.year
    )
}

/// os-release as 3.21 reads it (`JsonParseEnvFile`, 100 KiB): `sys.os_release`.
fn os_release_json(text: &str) -> super::json::Json {
    super::json::parse_env(text, 100 * 1024)
}

/// os-release's pairs (ID, VERSION_ID, ...), as [`os_release_json`] reads them.
fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    match os_release_json(text) {
        super::json::Json::Obj(kv) => kv
            .into_iter()
            .filter_map(|(k, v)| v.primitive().map(|v| (k, v)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The leading `%d.%d` / `%d` of a version line (`sscanf` semantics).
fn leading_ints(s: &str) -> (Option<u32>, Option<u32>) {
    let digits = |x: &str| -> Option<(u32, usize)> {
        let n = x.bytes().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        x[..n].parse().ok().map(|v| (v, n))
    };
    let s = s.trim_start();
    match digits(s) {
        None => (None, None),
        Some((a, n)) => match s[n..].strip_prefix('.').and_then(digits) {
            Some((b, _)) => (Some(a), Some(b)),
            None => (Some(a), None),
        },
    }
}

/// Turns [`HostFacts`] into the hard classes and `sys.*` variables 3.21
/// defines for the same facts (the parts of discovery rcf implements; see
/// [`HostFacts`] for what is read).
pub fn derive(f: &HostFacts) -> HardContext {
    let mut c = BTreeSet::new();
    let mut sys: BTreeMap<String, Value> = BTreeMap::new();
    let put = |sys: &mut BTreeMap<String, Value>, k: &str, v: String| {
        sys.insert(k.to_string(), Value::Scalar(v));
    };
    let sysname = f.sysname.to_ascii_lowercase();
    let machine = f.machine.to_ascii_lowercase();
    let w = &f.workdir;

    // GetNameInfo3 / DetectDomainName
    let nodename = f.nodename.to_ascii_lowercase();
    let dns = f.dns_name.clone().unwrap_or_default().to_ascii_lowercase();
    let (fq, uq, domain) = domain_names(&nodename, &dns);
    let mut rest = fq.as_str();
    loop {
        c.insert(canonify(rest));
        match rest.find('.') {
            Some(i) => rest = &rest[i + 1..],
            None => break,
        }
    }
    c.insert(canonify(&uq));
    c.insert(canonify(&domain));
    put(&mut sys, "host", nodename.clone());
    put(&mut sys, "uqhost", uq.clone());
    put(&mut sys, "fqhost", fq.clone());
    put(&mut sys, "domain", domain.clone());
    put(&mut sys, "systime", f.epoch.to_string());
    put(&mut sys, "sysday", f.epoch.div_euclid(86_400).to_string());
    if sysname == "linux" {
        c.insert("linux".into());
        put(&mut sys, "class", "linux".into());
    }
    let date = ctime(&f.local, (f.epoch.rem_euclid(60)) as u32);
    put(&mut sys, "cdate", canonify(&date));
    put(&mut sys, "date", date);
    put(&mut sys, "os", sysname.clone());
    put(&mut sys, "release", f.release.clone());
    put(&mut sys, "version", f.version.clone());
    put(&mut sys, "arch", machine.clone());
    put(&mut sys, "workdir", w.clone());
    put(&mut sys, "fstab", "/etc/fstab".into());
    put(&mut sys, "resolv", "/etc/resolv.conf".into());
    put(&mut sys, "maildir", "/var/spool/mail".into());
    put(&mut sys, "exports", "/etc/exports".into());
    put(&mut sys, "logdir", w.clone());
    put(&mut sys, "piddir", w.clone());
    put(&mut sys, "statedir", format!("{w}/state"));
    put(&mut sys, "masterdir", format!("{w}/masterfiles"));
    put(&mut sys, "inputdir", format!("{w}/inputs"));
    put(&mut sys, "bindir", format!("{w}/bin"));
    put(&mut sys, "crontab", "/var/spool/cron/crontabs/root".into());
    put(&mut sys, "doc_root", "/var/www".into());
    put(
        &mut sys,
        "default_policy_path",
        format!("{w}/inputs/promises.cf"),
    );
    put(
        &mut sys,
        "failsafe_policy_path",
        format!("{w}/inputs/failsafe.cf"),
    );
    put(
        &mut sys,
        "update_policy_path",
        format!("{w}/inputs/update.cf"),
    );
    put(&mut sys, "cf_version", CF_VERSION.into());
    put(&mut sys, "cf_version_major", "3".into());
    put(&mut sys, "cf_version_minor", "21".into());
    put(&mut sys, "cf_version_patch", "0".into());
    put(&mut sys, "cf_version_release", "1".into());
    put(&mut sys, "local_libdir", "lib".into());
    put(&mut sys, "libdir", format!("{w}/inputs/lib"));
    for comp in [
        "cf-agent",
        "cf-serverd",
        "cf-monitord",
        "cf-key",
        "cf-runagent",
        "cf-execd",
        "cf-promises",
        "cf-net",
        "cf-check",
        "cf-secret",
    ] {
        // 3.21 sets these only when the binary exists; rcf always sets
        // them (the MPF quotes them into commands, never into access rules)
        put(&mut sys, &canonify(comp), format!("\"{w}/bin/{comp}\""));
    }
    if let Some(d) = &f.key_digest {
        put(&mut sys, "key_digest", d.clone());
        c.insert(canonify(&format!("PK_{d}")));
    }
    c.insert(format!("{}_bit", usize::BITS));
    c.insert(canonify(&format!("{sysname}_{}", f.release)));
    c.insert(canonify(&machine));
    c.insert(canonify(&format!("{sysname}_{machine}")));
    c.insert(canonify(&format!("{sysname}_{machine}_{}", f.release)));
    let long_arch = canonify(&format!("{sysname}_{machine}_{}_{}", f.release, f.version));
    put(&mut sys, "long_arch", long_arch.clone());
    c.insert(long_arch);
    let ostype = canonify(&format!("{sysname}_{machine}"));
    put(&mut sys, "ostype", ostype.clone());
    c.insert(ostype);
    if sysname == "linux" {
        c.insert("compiled_on_linux_gnu".into());
    }
    for a in &f.dns_aliases {
        c.insert(canonify(a));
    }

    // GetInterfacesInfo
    let mut ips: Vec<String> = Vec::new();
    let mut interfaces: Vec<String> = Vec::new();
    let mut hardware: Vec<String> = Vec::new();
    let mut address_set = false;
    let mut last = String::new();
    for i in &f.ipv4 {
        if i.iface != last {
            last = i.iface.clone();
            put(&mut sys, "interface", last.clone());
        }
        c.insert(canonify(&format!("net_iface_{}", i.iface)));
        if i.up {
            c.insert(canonify(&i.addr));
            let cls = format!("ipv4_{}", i.addr);
            c.insert(canonify(&cls));
            if !address_set && !i.loopback {
                put(&mut sys, "ipv4", i.addr.clone());
                address_set = true;
            }
            ips.push(i.addr.clone());
            let mut p = cls.as_str();
            while let Some(d) = p.rfind('.') {
                p = &p[..d];
                c.insert(canonify(p));
            }
            let ci = canonify(&i.iface);
            put(&mut sys, &format!("ipv4[{ci}]"), i.addr.clone());
            put(&mut sys, &format!("ip2iface[{}]", i.addr), ci.clone());
            let mut p = i.addr.as_str();
            let mut n = 3;
            while let Some(d) = p.rfind('.') {
                p = &p[..d];
                put(&mut sys, &format!("ipv4_{n}[{ci}]"), p.to_string());
                n -= 1;
            }
        }
        if !i.loopback {
            if let Some(m) = i.mac {
                let mac = m
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                put(
                    &mut sys,
                    &format!("hardware_mac[{}]", canonify(&i.iface)),
                    mac.clone(),
                );
                if !hardware.contains(&mac) {
                    hardware.push(mac.clone());
                }
                if !interfaces.contains(&i.iface) {
                    interfaces.push(i.iface.clone());
                }
                c.insert(canonify(&format!("mac_{mac}")));
            }
        }
    }
    for (iface, addr) in &f.ipv6 {
        c.insert(canonify(addr));
        c.insert(canonify(&format!("ipv6_{addr}")));
        ips.push(addr.clone());
        if !interfaces.contains(iface) {
            interfaces.push(iface.clone());
        }
    }
    if !interfaces.is_empty() {
        sys.insert("interfaces".into(), Value::List(interfaces));
    }
    if !hardware.is_empty() {
        sys.insert("hardware_addresses".into(), Value::List(hardware));
    }
    if !ips.is_empty() {
        sys.insert("ip_addresses".into(), Value::List(ips));
    }
    if let Some(gw) = &f.ipv4_gateway {
        c.insert(canonify(&format!("ipv4_gw_{gw}")));
    }

    // BuiltinClasses
    c.insert("any".into());
    with_prefixes(&canonify(&format!("cfengine_{CF_VERSION}")), &mut c);
    for feat in FEATURES {
        with_prefixes(&format!("feature_{feat}"), &mut c);
    }
    c.insert("community_edition".into());

    // OSClasses (Linux)
    let set_flavor = |c: &mut BTreeSet<String>, sys: &mut BTreeMap<String, Value>, fl: &str| {
        c.insert(canonify(fl));
        put(sys, "flavour", fl.to_string());
        put(sys, "flavor", fl.to_string());
    };
    if f.systemd {
        c.insert("systemd".into());
    }
    if let Some((_, text)) = &f.os_release {
        sys.insert("os_release".into(), Value::Data(os_release_json(text)));
        let m = parse_os_release(text);
        if let Some(id) = m.get("ID") {
            let id = canonify(id);
            let alias = match id.as_str() {
                "rhel" => Some("redhat"),
                "opensuse" | "sles" => Some("suse"),
                _ => None,
            };
            match m.get("VERSION_ID") {
                None => {
                    c.insert(id.clone());
                    if let Some(a) = alias {
                        c.insert(a.into());
                    }
                }
                Some(v) => {
                    let v = canonify(v);
                    let major = v.split('_').next().unwrap_or("");
                    set_flavor(&mut c, &mut sys, &format!("{id}_{major}"));
                    with_prefixes(&format!("{id}_{v}"), &mut c);
                    if let Some(a) = alias {
                        with_prefixes(&format!("{a}_{v}"), &mut c);
                    }
                }
            }
        }
    }
    if let Some(line) = &f.debian_version {
        c.insert("debian".into());
        match leading_ints(line) {
            (Some(a), Some(b)) => {
                c.insert(format!("debian_{a}_{b}"));
                set_flavor(&mut c, &mut sys, &format!("debian_{a}"));
            }
            (Some(a), None) => set_flavor(&mut c, &mut sys, &format!("debian_{a}")),
            _ => {
                let v: String = line.chars().take_while(|&ch| ch != '/').take(25).collect();
                let v = v.split_whitespace().next().unwrap_or("");
                if !v.is_empty() {
                    c.insert(canonify(&format!("debian_{v}")));
                }
            }
        }
        if let Some(issue) = &f.issue {
            let mut words = issue.split_whitespace();
            match words.next() {
                Some("Debian") => {
                    // "%*s %*s %255[^./]": the third word up to '.' or '/'
                    let third = issue.split_whitespace().nth(2).unwrap_or("");
                    let v: String = third
                        .chars()
                        .take_while(|&ch| ch != '.' && ch != '/')
                        .collect();
                    c.insert("debian".into());
                    set_flavor(&mut c, &mut sys, &format!("debian_{v}"));
                }
                Some("Ubuntu") => {
                    let second = words.next().unwrap_or("");
                    let (v, minor) = second.split_once('.').unwrap_or((second, ""));
                    set_flavor(&mut c, &mut sys, &format!("ubuntu_{v}"));
                    c.insert("ubuntu".into());
                    if matches!(leading_ints(line), (_, Some(_))) {
                        c.insert(canonify(&format!("ubuntu_{v}_{minor}")));
                    }
                }
                _ => {}
            }
        }
    }
    if f.have_aptitude {
        c.insert("have_aptitude".into());
    }

    // GetCPUInfo
    if let Some(n) = f.cpus.filter(|&n| n >= 1) {
        c.insert(if n == 1 {
            "1_cpu".to_string()
        } else {
            format!("{n}_cpus")
        });
        put(&mut sys, "cpus", n.to_string());
    }

    // time classes, agent type, log levels
    time_classes(&f.local, "", &mut c);
    time_classes(&f.gmt, "GMT_", &mut c);
    if !f.agent_type.is_empty() {
        c.insert(f.agent_type.clone());
    }
    if f.verbose {
        c.insert("verbose_mode".into());
    }
    if f.inform {
        c.insert("inform_mode".into());
    }
    if f.debug {
        c.insert("debug_mode".into());
    }

    // bootstrap state (GenericAgentDiscoverContext)
    if let Some((b, resolved)) = &f.bootstrapped {
        if let Some(ip) = b.policy_hub(resolved.as_deref()) {
            put(&mut sys, "policy_hub", ip);
        }
        put(&mut sys, "policy_hub_port", b.policy_hub_port());
        if f.am_policy_hub_file {
            c.insert("am_policy_hub".into());
            c.insert("policy_server".into());
        }
    }
    c.remove("");
    HardContext {
        classes: c,
        sys,
        not_interpreted: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mon Dec  7 03:57 2026, the time of the facts below.
    const NOW: Tm = Tm {
        year: 2026,
        mon: 11,
        mday: 7,
        wday: 1,
        hour: 3,
        min: 57,
    };

    fn facts() -> HostFacts {
        HostFacts {
            sysname: "Linux".into(),
            nodename: "vm".into(),
            release: "6.18.44-fc-v1300".into(),
            version: "#1 SMP PREEMPT_DYNAMIC @0".into(),
            machine: "x86_64".into(),
            dns_name: Some("vm".into()),
            ipv4: vec![
                Ipv4Iface {
                    iface: "lo".into(),
                    addr: "127.0.0.1".into(),
                    up: true,
                    loopback: true,
                    mac: Some([0; 6]),
                },
                Ipv4Iface {
                    iface: "eth0".into(),
                    addr: "192.0.2.2".into(),
                    up: true,
                    loopback: false,
                    mac: Some([2, 0xfc, 0, 0, 0, 1]),
                },
            ],
            ipv6: vec![("eth0".into(), "fd00::2".into())],
            ipv4_gateway: Some("192.0.2.1".into()),
            cpus: Some(2),
            os_release: Some((
                "/etc/os-release".into(),
                "ID=debian\nVERSION_ID=\"12\"\n".into(),
            )),
            debian_version: Some("12.11".into()),
            issue: Some("Debian GNU/Linux 12 \\n \\l".into()),
            // a UTC host: local time is GMT
            local: NOW,
            gmt: NOW,
            epoch: 1_796_615_862,
            workdir: "/w".into(),
            agent_type: "server".into(),
            key_digest: Some("MD5=ab12".into()),
            ..Default::default()
        }
    }

    /// The classes the real cf-promises printed on the host these facts
    /// were taken from (with `server` for `common`).
    #[test]
    fn classes_as_3_21() {
        let h = derive(&facts());
        for want in [
            "127_0_0_1",
            "192_0_2_2",
            "2_cpus",
            "64_bit",
            "Day7",
            "December",
            "GMT_Hr03_Q4",
            "GMT_Min55_00",
            "Hr3",
            "Lcycle_1",
            "Monday",
            "Night",
            "Q4",
            "Yr2026",
            "any",
            "cfengine",
            "cfengine_3",
            "cfengine_3_21",
            "cfengine_3_21_0",
            "community_edition",
            "compiled_on_linux_gnu",
            "debian",
            "debian_12",
            "debian_12_11",
            "fd00__2",
            "feature",
            "feature_copyfrom_restrict_keys",
            "feature_def_json_preparse",
            "feature_tls_1_3",
            "feature_xml",
            "feature_yaml",
            "ipv4_127",
            "ipv4_127_0_0_1",
            "ipv4_192_0_2",
            "ipv4_gw_192_0_2_1",
            "ipv6_fd00__2",
            "linux",
            "linux_6_18_44_fc_v1300",
            "linux_x86_64",
            "linux_x86_64_6_18_44_fc_v1300",
            "linux_x86_64_6_18_44_fc_v1300__1_SMP_PREEMPT_DYNAMIC__0",
            "mac_02_fc_00_00_00_01",
            "net_iface_eth0",
            "net_iface_lo",
            "vm",
            "x86_64",
            "server",
            "PK_MD5_ab12",
        ] {
            assert!(h.classes.contains(want), "missing {want}");
        }
        assert!(!h.classes.contains("mac_00_00_00_00_00_00"));
        assert!(!h.classes.contains("am_policy_hub"));
        assert_eq!(h.sys["ipv4"], Value::Scalar("192.0.2.2".into()));
        assert_eq!(h.sys["ipv4_3[eth0]"], Value::Scalar("192.0.2".into()));
        assert_eq!(h.sys["flavor"], Value::Scalar("debian_12".into()));
        assert_eq!(
            h.sys["date"],
            Value::Scalar("Mon Dec  7 03:57:42 2026".into())
        );
        assert_eq!(
            h.sys["cdate"],
            Value::Scalar("Mon_Dec__7_03_57_42_2026".into())
        );
        assert_eq!(h.sys["sysday"], Value::Scalar("20794".into()));
    }

    #[test]
    fn hub_classes_need_both_files() {
        let mut f = facts();
        f.am_policy_hub_file = true;
        assert!(!derive(&f).classes.contains("am_policy_hub"));
        f.bootstrapped = Some((Bootstrapped::from_file_text("127.0.0.1:99").unwrap(), None));
        let h = derive(&f);
        assert!(h.classes.contains("am_policy_hub") && h.classes.contains("policy_server"));
        assert_eq!(h.sys["policy_hub_port"], Value::Scalar("99".into()));
    }

    #[test]
    fn domains() {
        assert_eq!(
            domain_names("a", "a.b.c"),
            ("a.b.c".into(), "a".into(), "b.c".into())
        );
        assert_eq!(
            domain_names("a.x", "a"),
            ("a.x".into(), "a".into(), "x".into())
        );
        assert_eq!(domain_names("a", ""), ("a".into(), "a".into(), "".into()));
    }

    quickcheck::quickcheck! {
        /// Any time gives 12 classes per zone (11 from 10:00 on, when `HrNN`
        /// and `HrN` coincide), all canonical.
        fn time_classes_total(h: u32, m: u32, mon: u32, wd: u32) -> bool {
            let t = Tm { year: 2026, mon: mon % 12, mday: 1, wday: wd % 7, hour: h % 24, min: m % 60 };
            let mut s = BTreeSet::new();
            time_classes(&t, "", &mut s);
            s.len() == if h % 24 >= 10 { 11 } else { 12 } && s.iter().all(|c| canonify(c) == *c)
        }
    }
}
