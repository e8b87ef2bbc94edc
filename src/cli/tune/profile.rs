//! Tuning profiles: for each host setting `sluice tune` knows, the value it
//! recommends. The shipped profiles live in `tuning/profiles/*.toml` and are
//! built into the binary; `--profile-file` reads another one.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// What a profile asks of one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Not checked: any value is fine.
    Any,
    /// This exact word or number.
    Exact(String),
    /// A number at least this large (`">=N"`).
    AtLeast(u64),
    /// A number at most this large (`"<=N"`).
    AtMost(u64),
}

impl Want {
    fn parse(text: &str) -> Result<Want> {
        let t = text.trim();
        let num = |s: &str| -> Result<u64> {
            s.trim()
                .parse()
                .with_context(|| format!("'{t}': expected a whole number after the comparison"))
        };
        Ok(if t == "any" {
            Want::Any
        } else if let Some(n) = t.strip_prefix(">=") {
            Want::AtLeast(num(n)?)
        } else if let Some(n) = t.strip_prefix("<=") {
            Want::AtMost(num(n)?)
        } else if t.is_empty() {
            bail!("empty value (use \"any\" to leave a setting unchecked)")
        } else {
            Want::Exact(t.to_string())
        })
    }

    /// Whether a numeric value meets it (an exact want compares the decimal text).
    pub fn accepts(&self, n: u64) -> bool {
        match self {
            Want::Any => true,
            Want::Exact(s) => s.parse::<u64>().ok() == Some(n),
            Want::AtLeast(m) => n >= *m,
            Want::AtMost(m) => n <= *m,
        }
    }

    /// The number to write for a numeric setting that does not meet it.
    pub fn target(&self) -> Option<u64> {
        match self {
            Want::Any => None,
            Want::Exact(s) => s.parse().ok(),
            Want::AtLeast(m) | Want::AtMost(m) => Some(*m),
        }
    }
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Any => f.write_str("any"),
            Want::Exact(s) => f.write_str(s),
            Want::AtLeast(n) => write!(f, ">={n}"),
            Want::AtMost(n) => write!(f, "<={n}"),
        }
    }
}

/// The values a setting takes in a profile.
#[derive(Debug, Clone, Copy)]
pub enum Values {
    /// A number, exact or with `>=` / `<=`.
    Number,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A free word (a governor, a clocksource): the host says what it offers.
    Word,
}

/// A host setting `sluice tune` knows.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub values: Values,
}

/// Every setting, in the order `--check` lists them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "cpu_governor",
        values: Values::Word,
    },
    Setting {
        name: "cstates",
        values: Values::Number,
    },
    Setting {
        name: "irqbalance",
        values: Values::OneOf(&["stopped", "running"]),
    },
    Setting {
        name: "irq_affinity",
        values: Values::OneOf(&["spread"]),
    },
    Setting {
        name: "rps",
        values: Values::OneOf(&["all", "off"]),
    },
    Setting {
        name: "xps",
        values: Values::OneOf(&["spread"]),
    },
    Setting {
        name: "nic_rings",
        values: Values::OneOf(&["max"]),
    },
    Setting {
        name: "disk_scheduler",
        values: Values::Word,
    },
    Setting {
        name: "disk_nomerges",
        values: Values::Number,
    },
    Setting {
        name: "disk_write_cache",
        values: Values::OneOf(&["write back", "write through"]),
    },
    Setting {
        name: "transparent_hugepages",
        values: Values::OneOf(&["always", "madvise", "never"]),
    },
    Setting {
        name: "swappiness",
        values: Values::Number,
    },
    Setting {
        name: "aio_max_nr",
        values: Values::Number,
    },
    Setting {
        name: "memlock",
        values: Values::Word,
    },
    Setting {
        name: "clocksource",
        values: Values::Word,
    },
    Setting {
        name: "somaxconn",
        values: Values::Number,
    },
    Setting {
        name: "rmem_max",
        values: Values::Number,
    },
    Setting {
        name: "wmem_max",
        values: Values::Number,
    },
    Setting {
        name: "ballooning",
        values: Values::OneOf(&["absent"]),
    },
];

/// A loaded profile: a want for every setting (`Any` where the file is silent).
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub wants: BTreeMap<&'static str, Want>,
}

impl Profile {
    pub fn want(&self, setting: &str) -> &Want {
        self.wants.get(setting).unwrap_or(&Want::Any)
    }
}

/// The profiles built into the binary.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "production",
        include_str!("../../../tuning/profiles/production.toml"),
    ),
    (
        "latency",
        include_str!("../../../tuning/profiles/latency.toml"),
    ),
    (
        "benchmark",
        include_str!("../../../tuning/profiles/benchmark.toml"),
    ),
];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[allow(dead_code)]
    description: Option<String>,
    settings: BTreeMap<String, toml::Value>,
}

/// Parses a profile's TOML text; every key must name a known setting.
pub fn parse(name: &str, text: &str) -> Result<Profile> {
    let file: ProfileFile =
        toml::from_str(text).with_context(|| format!("profile {name}: not a profile file"))?;
    let mut wants = BTreeMap::new();
    for (key, value) in file.settings {
        let Some(setting) = SETTINGS.iter().find(|s| s.name == key) else {
            let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
            bail!(
                "profile {name}: unknown setting '{key}' (known: {})",
                known.join(", ")
            );
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            other => bail!("profile {name}: {key} = {other}: expected a string or a number"),
        };
        let want = Want::parse(&text).with_context(|| format!("profile {name}: {key}"))?;
        match (&want, setting.values) {
            (Want::Any, _) | (_, Values::Word) => {}
            (Want::Exact(s), Values::Number) if s.parse::<u64>().is_err() => {
                bail!("profile {name}: {key} = \"{s}\": expected a number, \">=N\" or \"<=N\"")
            }
            (Want::Exact(s), Values::OneOf(words)) if !words.contains(&s.as_str()) => {
                bail!(
                    "profile {name}: {key} = \"{s}\": expected one of {}",
                    words.join(", ")
                )
            }
            (Want::AtLeast(_) | Want::AtMost(_), Values::OneOf(_)) => {
                bail!("profile {name}: {key} takes a word, not a comparison")
            }
            _ => {}
        }
        wants.insert(setting.name, want);
    }
    Ok(Profile {
        name: name.to_string(),
        wants,
    })
}

/// The built-in profile `name`, or the file at `path` when given.
pub fn load(name: &str, path: Option<&Path>) -> Result<Profile> {
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading profile {}", path.display()))?;
        return parse(&path.display().to_string(), &text);
    }
    let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        bail!("no profile '{name}' (built in: {})", names.join(", "));
    };
    parse(name, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse_and_name_every_setting() {
        for (name, _) in BUILT_IN {
            let p = load(name, None).expect("parses");
            for s in SETTINGS {
                assert!(
                    p.wants.contains_key(s.name),
                    "{name} says nothing of {}",
                    s.name
                );
            }
        }
    }

    #[test]
    fn wants_and_refusals() {
        let p = parse(
            "t",
            "[settings]\nswappiness = \"<=1\"\naio_max_nr = 1048576\n",
        )
        .expect("ok");
        assert_eq!(p.want("swappiness"), &Want::AtMost(1));
        assert!(p.want("swappiness").accepts(0) && !p.want("swappiness").accepts(60));
        assert_eq!(p.want("aio_max_nr"), &Want::Exact("1048576".into()));
        assert_eq!(p.want("clocksource"), &Want::Any, "silent: any");
        assert!(
            parse("t", "[settings]\nswapiness = 1\n").is_err(),
            "unknown key"
        );
        assert!(parse("t", "[settings]\nswappiness = \"low\"\n").is_err());
        assert!(parse("t", "[settings]\ntransparent_hugepages = \"sometimes\"\n").is_err());
        assert!(parse("t", "[settings]\nrps = \">=2\"\n").is_err());
        assert!(parse("t", "[settings]\nswappiness = \">=x\"\n").is_err());
        assert!(parse("t", "[setting]\n").is_err(), "unknown table");
    }
}
