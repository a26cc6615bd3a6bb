//! `--show-classes[=REGEX]` and `--show-vars[=REGEX]`: the hard classes and
//! `sys.*` variables rcf-serverd evaluates policy with, in the layout of
//! `cf-promises --show-classes` / `--show-vars` (generic_agent.c
//! `GenericAgentShowContextsFormatted`): a header, then one sorted line per
//! entry, columns padded to 60/40/40 (classes) and 40/60/40/40 (variables).

use rcf_core::policy::{LoadOptions, Value};

/// Tag column for classes found by discovery; 3.21 attaches finer tags
/// (inventory, derived-from=...) that rcf does not track.
const HARD_TAGS: &str = "source=agent,hardclass";
/// Tag column for `-D` classes (3.21 defines them soft, from the environment).
const ENV_TAGS: &str = "source=environment";
/// Tag column for classes and variables from augments / host-specific data.
const AUG_TAGS: &str = "source=augments_file";

fn matcher(re: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(re).map_err(|e| format!("invalid regular expression '{re}': {e}"))
}

/// The `--show-classes` lines (header first). `defined` are the `-D`
/// classes, `augmented` those from augments.
pub fn classes(
    opts: &LoadOptions,
    defined: &[String],
    augmented: &std::collections::BTreeSet<String>,
    re: &str,
) -> Result<Vec<String>, String> {
    let rx = matcher(re)?;
    let mut lines: Vec<String> = opts
        .classes
        .iter()
        .chain(&opts.soft_classes)
        .filter(|c| rx.is_match(c))
        .map(|c| {
            let tags = if defined.contains(c) {
                ENV_TAGS
            } else if augmented.contains(c) {
                AUG_TAGS
            } else {
                HARD_TAGS
            };
            format!("{:<60} {:<40} {:<40}", c, tags, "")
        })
        .collect();
    lines.sort();
    lines.insert(
        0,
        format!("{:<60} {:<40} {:<40}", "Class name", "Meta tags", "Comment"),
    );
    Ok(lines)
}

/// A value as 3.21's `RvalWrite` prints it: scalars as is, lists as
/// ` {"a","b"}` (with its leading space), containers as compact JSON.
fn write_value(v: &Value) -> String {
    match v {
        Value::Scalar(s) => s.clone(),
        Value::List(l) => format!(
            " {{{}}}",
            l.iter()
                .map(|x| format!("\"{}\"", x.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(",")
        ),
        // a container prints compact, keys sorted
        Value::Data(j) => j.to_compact(),
    }
}

/// The `--show-vars` lines (header first): every `sys.*` variable as
/// `default:sys.NAME`, then the variables augments and host-specific data
/// define (`default:def.NAME`, ...).
pub fn vars(opts: &LoadOptions, re: &str) -> Result<Vec<String>, String> {
    let rx = matcher(re)?;
    let sys = opts
        .sys
        .iter()
        .map(|(k, v)| (format!("default:sys.{k}"), v, "source=agent"));
    let aug = opts
        .vars
        .iter()
        .map(|((b, k), v)| (format!("default:{b}.{k}"), v, AUG_TAGS));
    let mut lines: Vec<String> = sys
        .chain(aug)
        .filter(|(k, _, _)| rx.is_match(k))
        .map(|(k, v, tags)| {
            let mut val = write_value(v);
            if val.chars().any(|c| c.is_control()) {
                val = "<non-printable>".into();
            }
            format!("{:<40} {:<60} {:<40} {:<40}", k, val, tags, "")
        })
        .collect();
    lines.sort();
    lines.insert(
        0,
        format!(
            "{:<40} {:<60} {:<40} {:<40}",
            "Variable name", "Variable value", "Meta tags", "Comment"
        ),
    );
    Ok(lines)
}
