//! Reads the facts 3.21's environment discovery reads (uname, resolver,
//! interfaces, os-release, CPUs, host key, bootstrap files, the clock) into
//! `rcf_core::policy::hostclasses::HostFacts`; the core derives the hard
//! classes and `sys.*` variables from them.

use rcf_core::keys::{key_id, parse_public_pem, DigestKind};
use rcf_core::policy::hostclasses::{HostFacts, Ipv4Iface, Tm};
use rcf_core::policy::policy_server::Bootstrapped;
use std::ffi::{CStr, CString};
use std::path::Path;

/// What the caller knows that discovery cannot: the work dir, the agent
/// type class, the log level flags and the time to take the classes from.
#[derive(Debug, Clone)]
pub struct Discover<'a> {
    /// The work directory.
    pub workdir: &'a str,
    /// `server` for rcf-serverd.
    pub agent_type: &'a str,
    /// `-v`.
    pub verbose: bool,
    /// `-I`.
    pub inform: bool,
    /// `-d`.
    pub debug: bool,
    /// Seconds since the epoch.
    pub now: i64,
}

fn first_line(path: &str) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    Some(text.lines().next().unwrap_or("").to_string())
}

fn tm_of(now: i64, local: bool) -> Tm {
    let t: libc::time_t = now as libc::time_t;
    // SAFETY: tm is plain data; *_r write only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe {
        if local {
            !libc::localtime_r(&t, &mut tm).is_null()
        } else {
            !libc::gmtime_r(&t, &mut tm).is_null()
        }
    };
    if !ok {
        return Tm::default();
    }
    Tm {
        year: tm.tm_year + 1900,
        mon: tm.tm_mon as u32,
        mday: tm.tm_mday as u32,
        wday: tm.tm_wday as u32,
        hour: tm.tm_hour as u32,
        min: tm.tm_min as u32,
    }
}

fn cstr_field(f: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = f
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

extern "C" {
    fn gethostbyname(name: *const libc::c_char) -> *mut libc::hostent;
}

/// `gethostbyname(name)`: official name and aliases (as 3.21's
/// `DetectDomainName` and `GetNameInfo3` ask). Called once at start-up
/// from one thread (gethostbyname is not reentrant).
fn resolver_names(name: &str) -> Option<(String, Vec<String>)> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid C string; the result points into libc's static
    // storage, copied out before anything else calls the resolver.
    unsafe {
        let hp = gethostbyname(c.as_ptr());
        if hp.is_null() || (*hp).h_name.is_null() {
            return None;
        }
        let official = CStr::from_ptr((*hp).h_name).to_string_lossy().into_owned();
        let mut aliases = Vec::new();
        let mut p = (*hp).h_aliases;
        while !p.is_null() && !(*p).is_null() {
            aliases.push(CStr::from_ptr(*p).to_string_lossy().into_owned());
            p = p.add(1);
        }
        Some((official, aliases))
    }
}

/// IPv4 addresses (kernel order), then IPv6 addresses but `::1`, from
/// getifaddrs; MACs from /sys/class/net.
fn interfaces() -> (Vec<Ipv4Iface>, Vec<(String, String)>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills head with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return (v4, v6);
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: non-null C string from getifaddrs.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null; its family says which sockaddr it is.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let flags = ifa.ifa_flags;
        if family == libc::AF_INET {
            // SAFETY: AF_INET means a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let addr = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            v4.push(Ipv4Iface {
                mac: read_mac(&name),
                iface: name,
                addr: addr.to_string(),
                up: flags & libc::IFF_UP as u32 != 0,
                loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
            });
        } else if family == libc::AF_INET6 {
            // SAFETY: AF_INET6 means a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            let addr = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            if !addr.is_loopback() {
                v6.push((name, addr.to_string()));
            }
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    (v4, v6)
}

fn read_mac(iface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok()?;
    let parts: Vec<u8> = text
        .trim()
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    parts.try_into().ok()
}

/// The default IPv4 gateway from /proc/net/route (destination 0, flag
/// RTF_GATEWAY), as 3.21's `ipv4_gw_*` class takes it.
fn default_gateway() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[1] != "00000000" {
            continue;
        }
        let flags = u32::from_str_radix(f[3], 16).ok()?;
        if flags & 0x2 == 0 {
            continue;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        return Some(std::net::Ipv4Addr::from(u32::from_be(gw)).to_string());
    }
    None
}

fn pid1_is_systemd() -> bool {
    let Ok(cmd) = std::fs::read("/proc/1/cmdline") else {
        return false;
    };
    let first = cmd.split(|&b| b == 0).next().unwrap_or(&[]);
    let path = String::from_utf8_lossy(first).into_owned();
    let real = std::fs::canonicalize(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or(path);
    real.ends_with("/systemd")
}

fn key_digest(workdir: &str) -> Option<String> {
    let pem = std::fs::read(Path::new(workdir).join("ppkeys/localhost.pub")).ok()?;
    let key = parse_public_pem(&pem).ok()?;
    Some(key_id(&key, DigestKind::Md5).to_string())
}

/// Reads the host's facts. Never fails: what cannot be read is left out,
/// as 3.21 leaves it out.
pub fn gather(d: &Discover<'_>) -> HostFacts {
    // SAFETY: utsname is plain data filled by uname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    let have_uname = unsafe { libc::uname(&mut u) } == 0;
    let (sysname, nodename, release, version, machine) = if have_uname {
        (
            cstr_field(&u.sysname),
            cstr_field(&u.nodename),
            cstr_field(&u.release),
            cstr_field(&u.version),
            cstr_field(&u.machine),
        )
    } else {
        Default::default()
    };
    let hostname = dns_lookup::get_hostname().unwrap_or_else(|_| nodename.clone());
    let (dns_name, _) = resolver_names(&hostname).unzip();
    let fq_aliases = {
        // GetNameInfo3 looks the fully qualified name up again for aliases
        let lower = nodename.to_ascii_lowercase();
        let dns = dns_name.clone().unwrap_or_default().to_ascii_lowercase();
        let (fq, _, _) = rcf_core::policy::hostclasses::domain_names(&lower, &dns);
        resolver_names(&fq).map(|(_, a)| a).unwrap_or_default()
    };
    let (ipv4, mut ipv6) = interfaces();
    if !Path::new("/sbin/ifconfig").exists() && !Path::new("/bin/ifconfig").exists() {
        // 3.21 finds IPv6 addresses through ifconfig only
        ipv6.clear();
    }
    let os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|t| (p.to_string(), t)));
    let debian_version = first_line("/etc/debian_version");
    let issue = debian_version
        .as_ref()
        .and_then(|_| first_line("/etc/issue"));
    // SAFETY: sysconf has no memory effects.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let bootstrapped = std::fs::read(Path::new(d.workdir).join("policy_server.dat"))
        .ok()
        .and_then(|b| Bootstrapped::from_file_text(&String::from_utf8_lossy(&b)))
        .map(|b| {
            let resolved = b.needs_lookup().and_then(resolve_first);
            (b, resolved)
        });
    // OSClasses / VM detection inputs rcf does not interpret
    let not_interpreted = [
        "/etc/mandriva-release",
        "/etc/mandrake-release",
        "/etc/fedora-release",
        "/etc/ovs-release",
        "/etc/redhat-release",
        "/etc/oracle-release",
        "/etc/generic-release",
        "/etc/SuSE-release",
        "/etc/system-release",
        "/etc/slackware-version",
        "/etc/slackware-release",
        "/etc/lsb-release",
        "/etc/UnitedLinux-release",
        "/etc/alpine-release",
        "/etc/gentoo-release",
        "/etc/arch-release",
        "/proc/vmware/version",
        "/etc/vmware-release",
        "/proc/xen/capabilities",
        "/etc/Eos-release",
        "/proc/bc/0",
        "/proc/vz",
    ]
    .iter()
    .filter(|p| Path::new(p).exists())
    .map(|p| p.to_string())
    .collect();
    HostFacts {
        not_interpreted,
        sysname,
        nodename,
        release,
        version,
        machine,
        dns_name,
        dns_aliases: fq_aliases,
        ipv4,
        ipv6,
        ipv4_gateway: default_gateway(),
        cpus: u32::try_from(cpus).ok(),
        os_release,
        debian_version,
        issue,
        systemd: pid1_is_systemd(),
        have_aptitude: Path::new("/usr/bin/aptitude").exists(),
        key_digest: key_digest(d.workdir),
        bootstrapped,
        am_policy_hub_file: Path::new(d.workdir).join("state/am_policy_hub").exists(),
        local: tm_of(d.now, true),
        gmt: tm_of(d.now, false),
        epoch: d.now,
        workdir: d.workdir.to_string(),
        agent_type: d.agent_type.to_string(),
        verbose: d.verbose,
        inform: d.inform,
        debug: d.debug,
    }
}

/// The first address getaddrinfo gives for `name` (AF_UNSPEC, as 3.21's
/// `Hostname2IPString`), as text.
pub fn resolve_first(name: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    (name, 0u16)
        .to_socket_addrs()
        .ok()?
        .next()
        .map(|a| a.ip().to_string())
}
