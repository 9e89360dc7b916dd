//! The command-line parser of every xrayd command (the daemon, `xrayd health`, the benchmark
//! harness): a command declares its flags as data ([`Flag`]) and gets their values back
//! ([`Parsed`]).
//!
//! Spellings follow Go's `flag` package, which the AWS daemon uses: `-x` and `--x` are the same
//! flag, short or long (`-n`, `--region`, `-region`), values as `-x v`, `--x v` or `--x=v`, a
//! boolean takes no value (`-o`) or an inline one (`-o=false`), a value may start with a dash, a
//! repeated flag keeps every value (the last one wins for [`Parsed::get`]), and parsing stops at
//! `--` or at the first argument that is not a flag: that and what follows is the positional rest.
//! An unknown flag or a missing value is a [`FlagError`] naming the flag.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A switch: `-o`, `-o=true`, `-o=false`.
    Bool,
    /// Takes a value: `-n v`, `-n=v`.
    Value,
}

/// One flag as a command declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// One-letter name, without the dash (`"n"`), if any.
    pub short: Option<&'static str>,
    /// Long name, without dashes (`"region"`): the key of its value in [`Parsed`].
    pub long: &'static str,
    /// Other names accepted for the same flag (e.g. a singular `rate` for `rates`).
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    /// What the value is called in the help (`"ADDR"`); empty for booleans.
    pub value_name: &'static str,
    /// One sentence or a few; wrapped by [`options_help`].
    pub help: &'static str,
}

impl Flag {
    /// A flag taking a value called `value_name` in the help.
    pub const fn value(long: &'static str, value_name: &'static str, help: &'static str) -> Flag {
        Flag {
            short: None,
            long,
            aliases: &[],
            kind: Kind::Value,
            value_name,
            help,
        }
    }

    /// A boolean flag.
    pub const fn switch(long: &'static str, help: &'static str) -> Flag {
        Flag {
            short: None,
            long,
            aliases: &[],
            kind: Kind::Bool,
            value_name: "",
            help,
        }
    }

    /// The same flag with a one-letter name as well.
    pub const fn short(self, short: &'static str) -> Flag {
        Flag {
            short: Some(short),
            ..self
        }
    }

    /// The same flag with other accepted names.
    pub const fn aliases(self, aliases: &'static [&'static str]) -> Flag {
        Flag { aliases, ..self }
    }

    fn is_named(&self, name: &str) -> bool {
        self.long == name || self.short == Some(name) || self.aliases.contains(&name)
    }
}

/// The flags given (by long name; `"true"`/`"false"` for booleans) and the positional rest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The last value of each flag given.
    pub values: HashMap<&'static str, String>,
    /// Every flag given, in command-line order (repeated flags appear each time).
    pub given: Vec<(&'static str, String)>,
    /// The arguments from the first one that is not a flag (or after `--`) on.
    pub rest: Vec<String>,
}

impl Parsed {
    /// A flag's value (the last one, if repeated), if given.
    pub fn get(&self, long: &str) -> Option<&str> {
        self.values.get(long).map(String::as_str)
    }

    /// Every value of a repeatable flag, in command-line order.
    pub fn get_all<'a>(&'a self, long: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.given
            .iter()
            .filter(move |(k, _)| *k == long)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean flag: given and true.
    pub fn is_set(&self, long: &str) -> bool {
        self.get(long) == Some("true")
    }

    /// A duration flag (see [`super::parse_duration`]), if given.
    pub fn duration(&self, long: &str) -> Result<Option<Duration>, FlagError> {
        self.get(long)
            .map(|v| super::parse_duration(v).map_err(|e| FlagError(format!("--{long}: {e}"))))
            .transpose()
    }
}

/// A command line that cannot be parsed (by convention, exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

/// Parses `args` (without the program or subcommand name) against the flags `spec` declares.
pub fn parse<I: IntoIterator<Item = String>>(spec: &[Flag], args: I) -> Result<Parsed, FlagError> {
    let mut out = Parsed::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            out.rest.extend(args);
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty() && !b.starts_with('-'))
        else {
            out.rest.push(arg);
            out.rest.extend(args);
            break;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let flag = spec
            .iter()
            .find(|f| f.is_named(name))
            .ok_or_else(|| FlagError(format!("flag provided but not defined: -{name}")))?;
        let value = match (flag.kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match v.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => "true".into(),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => "false".into(),
                _ => {
                    return Err(FlagError(format!(
                        "invalid boolean value {v:?} for -{name}"
                    )));
                }
            },
            (Kind::Value, Some(v)) => v,
            (Kind::Value, None) => args
                .next()
                .ok_or_else(|| FlagError(format!("flag needs an argument: -{name}")))?,
        };
        out.given.push((flag.long, value.clone()));
        out.values.insert(flag.long, value);
    }
    Ok(out)
}

/// Help lines for `spec`, in its order, each within `width` columns: the names (`-n, --region
/// REGION`) in a left column and the help, word-wrapped, in a right one. Names too long for the
/// left column get a line of their own, the help under them.
pub fn options_help(spec: &[Flag], width: usize) -> String {
    const INDENT: usize = 2;
    const GAP: usize = 2;
    const MAX_LEFT: usize = 28;
    let left = |f: &Flag| {
        let names = match f.short {
            Some(short) => format!("-{short}, --{}", f.long),
            None => format!("    --{}", f.long),
        };
        if f.value_name.is_empty() {
            names
        } else {
            format!("{names} {}", f.value_name)
        }
    };
    let column = spec
        .iter()
        .map(|f| left(f).len())
        .filter(|&n| n <= MAX_LEFT)
        .max()
        .unwrap_or(0);
    let help_at = INDENT + column + GAP;
    let pad = " ".repeat(help_at);
    let mut s = String::new();
    for f in spec {
        let names = left(f);
        let mut lines = wrap(f.help, width.saturating_sub(help_at).max(20)).into_iter();
        if names.len() > column {
            s.push_str(&format!("{:INDENT$}{names}\n", ""));
        } else {
            let first = lines.next().unwrap_or_default();
            s.push_str(format!("{:INDENT$}{names:<column$}{:GAP$}{first}", "", "").trim_end());
            s.push('\n');
        }
        for line in lines {
            s.push_str(&format!("{pad}{line}\n"));
        }
    }
    s
}

/// `text` in lines of at most `width` columns, broken at spaces (a longer word stays whole).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[Flag] = &[
        Flag::value("region", "REGION", "Region.").short("n"),
        Flag::switch("local-mode", "Local.").short("o"),
        Flag::value("rates", "LIST", "Rates.").aliases(&["rate"]),
        Flag::value("label", "TEXT", "Label."),
    ];

    fn p(args: &[&str]) -> Result<Parsed, FlagError> {
        parse(SPEC, args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn short_long_and_alias_spellings() {
        for args in [
            &["-n", "eu-west-1"][..],
            &["--n", "eu-west-1"],
            &["-n=eu-west-1"],
            &["--region", "eu-west-1"],
            &["-region=eu-west-1"],
            &["--region=eu-west-1"],
        ] {
            assert_eq!(
                p(args).unwrap().get("region"),
                Some("eu-west-1"),
                "{args:?}"
            );
        }
        assert_eq!(p(&["--rate", "10k"]).unwrap().get("rates"), Some("10k"));
    }

    #[test]
    fn booleans_and_repeats() {
        let f = p(&["-o", "--label", "a", "-label=b", "--label", "-c"]).unwrap();
        assert!(f.is_set("local-mode"));
        assert_eq!(
            f.get("label"),
            Some("-c"),
            "the last wins; a value may start with a dash"
        );
        assert_eq!(f.get_all("label").collect::<Vec<_>>(), ["a", "b", "-c"]);
        assert!(!p(&["-o=false"]).unwrap().is_set("local-mode"));
        assert_eq!(
            p(&["-o=maybe"]).unwrap_err().0,
            "invalid boolean value \"maybe\" for -o"
        );
    }

    #[test]
    fn errors_and_rest() {
        assert_eq!(
            p(&["-z"]).unwrap_err().0,
            "flag provided but not defined: -z"
        );
        assert_eq!(
            p(&["--region"]).unwrap_err().0,
            "flag needs an argument: -region"
        );
        let f = p(&["-n", "r", "extra", "-o"]).unwrap();
        assert_eq!(f.rest, ["extra", "-o"]);
        assert!(!f.is_set("local-mode"));
        assert_eq!(p(&["--", "-o"]).unwrap().rest, ["-o"]);
        assert_eq!(p(&["-"]).unwrap().rest, ["-"]);
        assert_eq!(p(&["---o"]).unwrap().rest, ["---o"]);
    }

    #[test]
    fn durations_name_the_flag() {
        let f = p(&["--label", "5h", "-n", "2s"]).unwrap();
        assert_eq!(f.duration("region"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(f.duration("local-mode"), Ok(None));
        let e = f.duration("label").unwrap_err().0;
        assert!(e.starts_with("--label: \"5h\" is not a duration"), "{e}");
    }

    #[test]
    fn help_is_aligned_and_wrapped() {
        let spec = [
            Flag::value("region", "REGION", "Send segments to X-Ray in this region.").short("n"),
            Flag::switch("a-rather-long-flag-name-here", "Words ".repeat(30).leak()),
        ];
        let help = options_help(&spec, 70);
        let lines: Vec<&str> = help.lines().collect();
        assert_eq!(
            lines[0],
            "  -n, --region REGION  Send segments to X-Ray in this region."
        );
        assert_eq!(lines[1], "      --a-rather-long-flag-name-here");
        assert!(
            lines[2].starts_with("                       Words Words"),
            "{help}"
        );
        assert!(lines.len() > 4, "{help}");
        assert!(
            lines.iter().all(|l| l.len() <= 70 && !l.ends_with(' ')),
            "{help}"
        );
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefgh x", 4), ["abcdefgh", "x"]);
    }
}
