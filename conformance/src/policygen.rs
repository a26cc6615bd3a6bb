//! Generated server policies for the differential runs against the real
//! cf-serverd 3.21 (`tests/differential.rs`, issues 17 and 18): one rule
//! set per directory, mixing admit and deny lists (IPs, CIDRs, prefixes,
//! regexes, invalid entries, variables of every kind rcf evaluates), class
//! guards (hard classes, unknown classes, namespaces, functions, regexes,
//! data containers, augments), optionally in a namespace and with a
//! `def.json`. Pure text generation from a seed; the test writes the
//! files, runs both servers and compares each request.

/// xorshift64*: deterministic, seedable, no dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// One of `xs` (which must not be empty).
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Entries of `admit_ips`/`deny_ips`: addresses, CIDRs (one invalid),
/// prefixes, regexes (one with look-ahead), and variables: plain, lists
/// iterated inside a list, list references, data container elements and
/// whole containers (iterated; `@(container)` is dropped by 3.21), values
/// read from files, commands and the resolver, and augments variables.
pub const ENTRIES: &[&str] = &[
    "127.0.0.1",
    "127.0.0.0/8",
    "127.0.0.1/32",
    "127.0.0.0/24",
    "127.0.0.1/33",
    "10.0.0.0/8",
    "127.0.0.",
    "127.",
    "127.*",
    "127\\.0\\.0\\.[0-9]+",
    "127.0.0.(?=1)1",
    "192.168.1.1",
    "::1",
    "$(g.net)",
    "$(g.other)",
    "$(default:g.net)",
    "$(g.l)",
    "@(g.l)",
    "$(g.d[net])",
    "$(g.d[o][k])",
    "$(g.d[ips])",
    "$(g.d[ips][1])",
    "@(g.d[ips])",
    "@(g.dl)",
    "$(g.rj[ips][0])",
    "$(g.m[extra])",
    "$(g.rf)",
    "$(g.sl)",
    "$(g.h2i)",
    "$(g.ex)",
    "$(g.fmt)",
    "$(def.aug_ip)",
    "$(def.aug_l)",
    "$(def.aug_d[ips][0])",
];

/// Entries of legacy `admit`/`deny` (no hostname regexes: a last
/// unconvertible one crashes 3.21, `StrList_Append`).
pub const LEGACY_ENTRIES: &[&str] = &[
    "127.0.0.1",
    "127.0.0.0/8",
    "127.0.0.1/33",
    "10.0.0.0/8",
    "127.0.0",
    "192.168.1.1",
    "$(g.net)",
    "$(g.other)",
    "$(g.d[net])",
    "$(def.aug_ip)",
];

/// Guards (the empty ones leave a rule unguarded). `FILE` stands for the
/// policy's `ip.txt`.
pub const GUARDS: &[&str] = &[
    "",
    "",
    "",
    r#"if => "linux""#,
    r#"if => "!linux""#,
    r#"if => "cfengine""#,
    r#"if => "x86_64""#,
    r#"if => "!x86_64""#,
    r#"if => "ipv4_127_0_0_1""#,
    r#"if => "rcf_no_such_class""#,
    r#"unless => "rcf_no_such_class""#,
    r#"if => "gcls""#,
    r#"if => "!gcls""#,
    r#"if => regcmp("a(?=b)b", "ab")"#,
    r#"if => regcmp("(x)\1", "xy")"#,
    r#"if => strcmp("$(g.net)", "127.0.0.1")"#,
    r#"if => returnszero("/bin/true", "noshell")"#,
    r#"if => returnszero("/bin/false", "noshell")"#,
    r#"unless => returnszero("/bin/false", "noshell")"#,
    r#"if => every("127.*", "g.l")"#,
    r#"if => some("10.*", "g.l")"#,
    r#"if => isvariable("g.nothing")"#,
    r#"if => isvariable("g.bad")"#,
    r#"if => strcmp("$(g.d[net])", "127.0.0.1")"#,
    r#"if => some("127.*", getvalues("g.d[ips]"))"#,
    r#"if => strcmp(join(",", "g.d[ips]"), "127.0.0.1,127.0.0.2")"#,
    r#"if => strcmp(nth("g.d[ips]", "1"), "127.0.0.2")"#,
    r#"if => strcmp("$(g.m[z])", "5")"#,
    r#"if => strcmp(length("g.d"), "3")"#,
    r#"if => regcmp("127\.0\..*", "$(g.d[o][k])")"#,
    r#"if => strcmp(readfile("FILE", "0"), "127.0.0.1")"#,
    r#"if => strcmp(filestat("FILE", "type"), "regular file")"#,
    r#"if => fileexists("FILE")"#,
    r##"if => strcmp(format("%d.%d.%d.%d", "127", "0", "0", "1"), "127.0.0.1")"##,
    r#"if => strcmp(execresult("/bin/echo x", "noshell"), "x")"#,
    r#"if => iprange("127.0.0.0/8")"#,
    r#"if => strcmp(host2ip("localhost"), "127.0.0.1")"#,
    r#"if => "aug_cls""#,
    r#"if => "aug_never""#,
    r#"if => strcmp("$(def.aug_ip)", "127.0.0.1")"#,
    r#"if => classmatch("aug_.*")"#,
];

/// The shared bundle the entries and guards refer to. `INPUTS` stands for
/// the inputs directory.
pub const COMMON: &str = r##"bundle common g
{
  vars:
    "net" string => "127.0.0.1";
    "l" slist => { "127.0.0.1", "127.0.0.2" };
    "d" data => parsejson('{"ips": ["127.0.0.1", "127.0.0.2"], "net": "127.0.0.1", "o": {"k": "127.0.0.2"}}');
    "rj" data => readjson("INPUTS/data.json", "100000");
    "m" data => mergedata("rj", '{"z": 5}');
    "dl" slist => getvalues("d[ips]");
    "bad" data => parsejson('{bad');
    "rf" string => readfile("INPUTS/ip.txt", "0");
    "sl" slist => readstringlist("INPUTS/ip.txt", "#.*", "\n", "10", "1000");
    "h2i" string => host2ip("localhost");
    "ex" string => execresult("/bin/echo 127.0.0.1", "noshell");
    "fmt" string => format("%s.%d", "127.0.0", "1");
  classes:
    "gcls" expression => "any";
}
"##;

/// `INPUTS/data.json`.
pub const DATA_JSON: &str = r#"{ "ips": ["127.0.0.1"], "extra": "127.0.0.3", }"#;

/// `INPUTS/ip.txt`.
pub const IP_TXT: &str = "127.0.0.1\n";

/// `def.json` for the policies with augments: a scalar, a list and a data
/// container, a class that holds and one that does not.
pub const DEF_JSON: &str = r#"{
  "vars": {
    "aug_ip": "127.0.0.1",
    "aug_l": ["127.0.0.1", "10.0.0.1"],
    "aug_d": { "ips": ["127.0.0.1"] }
  },
  "classes": {
    "aug_cls": ["linux"],
    "aug_never": ["rcf_no_such_class_.*"]
  }
}
"#;

/// One generated policy: the files to write in the inputs directory (name,
/// text) with `promises.cf` first, and the rule directories in order.
pub struct Generated {
    /// (file name, text), `promises.cf` first.
    pub files: Vec<(String, String)>,
    /// The directory of each rule set, in order.
    pub dirs: Vec<String>,
    /// Whether the access rules are in namespace `ns`.
    pub namespaced: bool,
    /// Whether a `def.json` is written.
    pub augments: bool,
}

/// One rule set for `DATA/dir/`: one or two access promises.
pub fn rule(rng: &mut Rng, data: &str, inputs: &str, dir: &str) -> String {
    let mut out = String::new();
    let n = 1 + rng.next() % 2;
    for _ in 0..n {
        let mut attrs = Vec::new();
        for list in ["admit_ips", "deny_ips", "admit", "deny"] {
            let p = if list.starts_with("admit") { 45 } else { 25 };
            if rng.chance(p) {
                let k = 1 + rng.next() % 2;
                let pool = if list.ends_with("_ips") {
                    ENTRIES
                } else {
                    LEGACY_ENTRIES
                };
                let items: Vec<String> =
                    (0..k).map(|_| format!("\"{}\"", rng.pick(pool))).collect();
                attrs.push(format!("{list} => {{ {} }}", items.join(", ")));
            }
        }
        if attrs.is_empty() {
            attrs.push("admit_ips => { \"127.0.0.1\" }".into());
        }
        let g = rng.pick(GUARDS);
        if !g.is_empty() {
            attrs.push(g.replace("FILE", &format!("{inputs}/ip.txt")));
        }
        out.push_str(&format!("    \"{data}/{dir}/\" {};\n", attrs.join(", ")));
    }
    out
}

/// A whole policy of `rules` rule sets (directories `r0`, `r1`, ...) under
/// `data`, with `header` (control bodies) first; `inputs` is the inputs
/// directory the policy and its files live in.
pub fn generate(rng: &mut Rng, header: &str, data: &str, inputs: &str, rules: usize) -> Generated {
    let mut access = String::new();
    let mut dirs = Vec::new();
    for i in 0..rules {
        let dir = format!("r{i}");
        access.push_str(&rule(rng, data, inputs, &dir));
        dirs.push(dir);
    }
    // a quarter of the policies put their rules in a namespace, half read augments
    let namespaced = rng.chance(25);
    let augments = rng.chance(50);
    let common = COMMON.replace("INPUTS", inputs);
    let mut files = Vec::new();
    if namespaced {
        files.push(("promises.cf".to_string(), format!("{header}{common}")));
        files.push((
            "ns.cf".to_string(),
            format!("body file control {{ namespace => \"ns\"; }}\nbundle server acl\n{{\n  access:\n{access}}}\n"),
        ));
    } else {
        files.push((
            "promises.cf".to_string(),
            format!("{header}{common}bundle server acl\n{{\n  access:\n{access}}}\n"),
        ));
    }
    files.push(("data.json".into(), DATA_JSON.into()));
    files.push(("ip.txt".into(), IP_TXT.into()));
    if augments {
        files.push(("def.json".into(), DEF_JSON.into()));
    }
    Generated {
        files,
        dirs,
        namespaced,
        augments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_complete() {
        let gen = |seed: u64| {
            let mut r = Rng(seed | 1);
            generate(&mut r, "HEADER\n", "/data", "/in", 24)
        };
        let (a, b) = (gen(7), gen(7));
        assert_eq!(a.files, b.files);
        assert_eq!(a.dirs.len(), 24);
        assert!(a.files[0].1.starts_with("HEADER\n"));
        assert!(!a
            .files
            .iter()
            .any(|(_, t)| t.contains("INPUTS") || t.contains("FILE\"")));
        // over many seeds every entry and guard is used
        let mut all = String::new();
        for s in 0..200 {
            for (_, t) in gen(s).files {
                all.push_str(&t);
            }
        }
        for e in ENTRIES {
            assert!(all.contains(&format!("\"{e}\"")), "{e}");
        }
        for g in GUARDS
            .iter()
            .filter(|g| !g.is_empty() && !g.contains("FILE"))
        {
            assert!(all.contains(g), "{g}");
        }
    }
}
