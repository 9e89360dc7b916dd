//! The YAML config file of the AWS daemon (`cfg.yaml`): discovery, parsing and checking.
//!
//! A file is read into a plain YAML tree (serde-saphyr, with our own visitor), then every key is
//! checked against the contract's table so errors can name the file and the key in the user's own
//! spelling. Values come out as the strings the flag parser would give for the matching flag, so
//! [`super::resolve_with`] treats a file as one more layer under the command line.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ConfigError;

/// Where a config file is looked for when `-c` is not given; the first that exists is used.
pub const SEARCH_PATHS: [&str; 2] = ["/etc/amazon/xray/cfg.yaml", "cfg.yaml"];

/// How a file was found: named by `-c`, or found in a [`SEARCH_PATHS`] location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Named by `-c`/`--config`: unknown and retired keys are errors.
    Explicit,
    /// Found by discovery: unknown and retired keys are warnings.
    Discovered,
}

/// What type a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    /// A whole number ≥ 0 (0 means "default").
    Count,
    /// A string ("" means "default").
    Text,
    /// true or false (both kept).
    Bool,
}

/// Every key of the contract's table (besides `Version`): YAML path, the flag it stands for, type.
const KEYS: &[(&str, &str, Type)] = &[
    ("TotalBufferSizeMB", "buffer-memory", Type::Count),
    ("Concurrency", "concurrency", Type::Count),
    ("Endpoint", "endpoint", Type::Text),
    ("Region", "region", Type::Text),
    ("Socket.UDPAddress", "bind", Type::Text),
    ("Socket.TCPAddress", "bind-tcp", Type::Text),
    ("Logging.LogRotation", "log-rotation", Type::Bool),
    ("Logging.LogLevel", "log-level", Type::Text),
    ("Logging.LogPath", "log-file", Type::Text),
    ("LocalMode", "local-mode", Type::Bool),
    ("ResourceARN", "resource-arn", Type::Text),
    ("RoleARN", "role-arn", Type::Text),
    ("NoVerifySSL", "no-verify-ssl", Type::Bool),
    ("ProxyAddress", "proxy-address", Type::Text),
];

/// Sections holding nested keys.
const SECTIONS: &[&str] = &["Socket", "Logging"];

/// Keys of older daemon versions, with what replaces them.
const RETIRED: &[(&str, &str)] = &[
    ("Profile.CPU", "remove it"),
    ("Profile.Memory", "remove it"),
    ("Socket.BufferSizeKB", "remove it (see --receive-buffer)"),
    (
        "Logging.LogFormat",
        "remove it (xrayd has --log-format text|json)",
    ),
    ("Processor.BatchProcessorQueueSize", "remove it"),
    ("LogRotation", "use Logging.LogRotation"),
    ("Processor.Region", "use Region"),
    ("Processor.Endpoint", "use Endpoint"),
    ("Processor.Routine", "use Concurrency"),
    ("MemoryLimit", "use TotalBufferSizeMB"),
];

/// One loaded config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    pub path: String,
    pub origin: Origin,
    /// The file's `Version` (1 or 2, same meaning).
    pub version: u8,
    /// Keys set to non-zero values: (YAML key, flag long name, value as the flag would spell it).
    pub values: Vec<(&'static str, &'static str, String)>,
    /// Problems that do not stop the daemon (unknown keys of a discovered file), to be logged.
    pub warnings: Vec<String>,
}

impl FileConfig {
    /// The value this file gives for a flag (by long name), with its YAML key.
    pub fn get(&self, long: &str) -> Option<(&'static str, &str)> {
        self.values
            .iter()
            .find(|(_, l, _)| *l == long)
            .map(|(k, _, v)| (*k, v.as_str()))
    }
}

/// A plain YAML tree.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(usize),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    fn describe(&self) -> String {
        match self {
            Yaml::Null => "nothing".into(),
            Yaml::Bool(b) => format!("the boolean {b}"),
            Yaml::Int(i) => format!("the number {i}"),
            Yaml::Float(f) => format!("the number {f}"),
            Yaml::Str(s) => format!("the string {:?}", crate::log::excerpt(s, 200)),
            Yaml::Seq(_) => "a list".into(),
            Yaml::Map(_) => "a mapping".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Yaml, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Yaml, E> {
        Ok(i128::try_from(v).map_or(Yaml::Float(v as f64), Yaml::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Yaml, A::Error> {
        let mut n = 0;
        while a.next_element::<Yaml>()?.is_some() {
            n += 1;
        }
        Ok(Yaml::Seq(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = a.next_entry::<String, Yaml>()? {
            entries.push((k, v));
        }
        Ok(Yaml::Map(entries))
    }
}

/// Parses and checks the text of a config file. `path` is only used in messages.
pub fn parse(path: &str, text: &str, origin: Origin) -> Result<FileConfig, ConfigError> {
    let fail = |msg: String| ConfigError(format!("config file {path}: {msg}"));
    let tree: Yaml = serde_saphyr::from_str(text)
        .map_err(|e| fail(format!("not valid YAML: {}", e.without_snippet())))?;
    let top = match tree {
        Yaml::Map(entries) => entries,
        // An empty file (or only comments) has no Version.
        Yaml::Null => Vec::new(),
        other => {
            return Err(fail(format!(
                "expected keys such as \"Version: 2\" at the top level, found {}",
                other.describe()
            )));
        }
    };

    let mut out = FileConfig {
        path: path.to_string(),
        origin,
        version: 0,
        values: Vec::new(),
        warnings: Vec::new(),
    };
    let mut errors: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut version: Option<&Yaml> = None;
    let mut leaves: Vec<(String, &Yaml)> = Vec::new();
    for (key, value) in &top {
        if key == "Version" {
            version = Some(value);
            continue;
        }
        if key == "Profile" && matches!(value, Yaml::Str(_) | Yaml::Null) {
            warnings.push(format!(
                "config file {path}: Profile is ignored by xrayd; choose the credentials profile with AWS_PROFILE"
            ));
            continue;
        }
        match value {
            Yaml::Map(sub) if SECTIONS.contains(&key.as_str()) || is_retired_section(key) => {
                for (k, v) in sub {
                    leaves.push((format!("{key}.{k}"), v));
                }
            }
            _ => leaves.push((key.clone(), value)),
        }
    }
    for (key, value) in leaves {
        if let Some((_, hint)) = RETIRED.iter().find(|(k, _)| *k == key) {
            let msg = format!("config file {path}: {key} is no longer supported; {hint}");
            strange(origin, msg, &mut errors, &mut warnings);
            continue;
        }
        let Some(&(yaml_key, long, ty)) = KEYS.iter().find(|(k, _, _)| *k == key) else {
            if SECTIONS.contains(&key.as_str()) {
                // `Socket:` or `Logging:` with nothing (or a non-mapping) under it.
                if *value != Yaml::Null {
                    errors.push(format!(
                        "config file {path}: {key}: expected a mapping of keys, found {}",
                        value.describe()
                    ));
                }
                continue;
            }
            let msg = format!("config file {path}: unknown key {key}{}", suggestion(&key));
            strange(origin, msg, &mut errors, &mut warnings);
            continue;
        };
        match convert(value, ty) {
            Ok(Some(v)) => out.values.push((yaml_key, long, v)),
            Ok(None) => {}
            Err(expected) => errors.push(format!(
                "config file {path}: {key}: expected {expected}, found {}",
                value.describe()
            )),
        }
    }
    match version {
        None => errors.insert(
            0,
            format!(
                "config file {path}: Version is missing; add \"Version: 2\" (versions 1 and 2 are supported)"
            ),
        ),
        Some(Yaml::Int(v @ (1 | 2))) => out.version = *v as u8,
        Some(Yaml::Int(v)) => errors.insert(
            0,
            format!("config file {path}: Version {v} is not supported; use 1 or 2"),
        ),
        Some(other) => errors.insert(
            0,
            format!(
                "config file {path}: Version: expected the number 1 or 2, found {}",
                other.describe()
            ),
        ),
    }
    if !errors.is_empty() {
        return Err(ConfigError(errors.join("\n")));
    }
    out.warnings = warnings;
    Ok(out)
}

/// Unknown or retired keys: an error in a `-c` file, a warning in a discovered one.
fn strange(origin: Origin, msg: String, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
    match origin {
        Origin::Explicit => errors.push(msg),
        Origin::Discovered => warnings.push(format!("{msg} (ignored)")),
    }
}

fn is_retired_section(key: &str) -> bool {
    RETIRED
        .iter()
        .any(|(k, _)| k.split_once('.').is_some_and(|(s, _)| s == key))
}

/// Converts a value to the flag spelling; `Ok(None)` for a zero value; `Err(expected)` for a
/// wrong type.
fn convert(value: &Yaml, ty: Type) -> Result<Option<String>, &'static str> {
    match (ty, value) {
        (_, Yaml::Null) => Ok(None),
        (Type::Count, Yaml::Int(0)) => Ok(None),
        (Type::Count, Yaml::Int(n)) if *n > 0 && *n <= u32::MAX as i128 => Ok(Some(n.to_string())),
        (Type::Count, _) => Err("a whole number (0 for the default)"),
        (Type::Text, Yaml::Str(s)) if s.trim().is_empty() => Ok(None),
        (Type::Text, Yaml::Str(s)) => Ok(Some(s.clone())),
        (Type::Text, _) => Err("a string (put it in quotes)"),
        (Type::Bool, Yaml::Bool(b)) => Ok(Some(b.to_string())),
        (Type::Bool, _) => Err("true or false"),
    }
}

/// ", did you mean X?" when the key differs from a known one only in case or section.
fn suggestion(key: &str) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    let known = KEYS
        .iter()
        .map(|(k, _, _)| *k)
        .chain(["Version"])
        .find(|k| {
            k.eq_ignore_ascii_case(key)
                || k.rsplit('.').next().unwrap_or(k).eq_ignore_ascii_case(last)
        });
    match known {
        Some(k) => format!(" (keys are case-sensitive and sectioned: did you mean {k}?)"),
        None => {
            let all: Vec<&str> = KEYS.iter().map(|(k, _, _)| *k).collect();
            format!("; known keys: {}, Version", all.join(", "))
        }
    }
}

/// Finds and parses the config files: the `-c` file (if any) and the first existing file of
/// [`SEARCH_PATHS`], in that order of precedence. `read` returns `Ok(None)` when a file does not
/// exist.
pub fn load(
    explicit: Option<&str>,
    read: &dyn Fn(&str) -> std::io::Result<Option<String>>,
) -> Result<Vec<FileConfig>, ConfigError> {
    let mut files = Vec::new();
    if explicit.is_some_and(|p| p.trim().is_empty()) {
        return Err(ConfigError(
            "-c/--config needs a file path (it was given an empty one)".into(),
        ));
    }
    if let Some(path) = explicit {
        match read(path) {
            Ok(Some(text)) => files.push(parse(path, &text, Origin::Explicit)?),
            Ok(None) => {
                return Err(ConfigError(format!(
                    "-c/--config: config file {path} does not exist"
                )));
            }
            Err(e) => {
                return Err(ConfigError(format!(
                    "-c/--config: cannot read config file {path}: {e}"
                )));
            }
        }
    }
    for path in SEARCH_PATHS {
        match read(path) {
            Ok(None) => continue,
            Ok(Some(_)) if explicit.is_some_and(|e| same_file(e, path)) => break,
            Ok(Some(text)) => {
                files.push(parse(path, &text, Origin::Discovered)?);
                break;
            }
            Err(e) => {
                return Err(ConfigError(format!("cannot read config file {path}: {e}")));
            }
        }
    }
    Ok(files)
}

fn same_file(a: &str, b: &str) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Largest config file read (the AWS daemon's own files are about 1 KiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a file for [`load`]: `Ok(None)` when it does not exist. Only a regular file of at most
/// [`MAX_FILE_BYTES`] is read: a device (`/dev/zero`) would be read until memory runs out, and a
/// FIFO would block start-up forever. The file type is checked before opening, and the file is
/// opened non-blocking (and checked again) in case it was swapped in between.
pub fn read_file(path: &str) -> std::io::Result<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(invalid(format!(
                "it is {}, not a regular file",
                file_kind(meta.file_type())
            )));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(invalid(too_big(meta.len())));
        }
        Ok(())
    };
    match std::fs::metadata(path) {
        Ok(meta) => check(&meta)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    check(&file.metadata()?)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(too_big(bytes.len() as u64)));
    }
    String::from_utf8(bytes).map(Some).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not UTF-8 text",
        )
    })
}

fn too_big(len: u64) -> String {
    format!("it is larger than the limit of {MAX_FILE_BYTES} bytes ({len} bytes or more)")
}

fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cfg.yaml the AWS daemon's images ship (`/etc/amazon/xray/cfg.yaml`).
    pub const SHIPPED_V2: &str = r#"# Maximum buffer size in MB (minimum 3). Choose 0 to use 1% of host memory.
TotalBufferSizeMB: 0
# Maximum number of concurrent calls to AWS X-Ray to upload segment documents.
Concurrency: 8
# Send segments to AWS X-Ray service in a specific region
Region: ""
# Change the X-Ray service endpoint to which the daemon sends segment documents.
Endpoint: ""
Socket:
  # Change the address and port on which the daemon listens for UDP packets containing segment documents.
  UDPAddress: "127.0.0.1:2000"
  # Change the address and port on which the daemon listens for HTTP requests to proxy to AWS X-Ray.
  TCPAddress: "127.0.0.1:2000"
Logging:
  LogRotation: true
  # Change the log level, from most verbose to least: dev, debug, info, warn, error, prod (default).
  LogLevel: "prod"
  # Output logs to the specified file path.
  LogPath: ""
# Turn on local mode to skip EC2 instance metadata check.
LocalMode: false
# Amazon Resource Name (ARN) of the AWS resource running the daemon.
ResourceARN: ""
# Assume an IAM role to upload segments to a different account.
RoleARN: ""
# Disable TLS certificate verification.
NoVerifySSL: false
# Upload segments to AWS X-Ray through a proxy.
ProxyAddress: ""
# Daemon configuration file format version.
Version: 2
"#;

    fn explicit(text: &str) -> Result<FileConfig, String> {
        parse("my.yaml", text, Origin::Explicit).map_err(|e| e.0)
    }

    #[test]
    fn the_shipped_file_loads_with_only_its_non_zero_values() {
        let f = explicit(SHIPPED_V2).unwrap();
        assert_eq!(f.version, 2);
        assert!(f.warnings.is_empty());
        let set: Vec<(&str, &str)> = f.values.iter().map(|(k, _, v)| (*k, v.as_str())).collect();
        assert_eq!(
            set,
            vec![
                ("Concurrency", "8"),
                ("Socket.UDPAddress", "127.0.0.1:2000"),
                ("Socket.TCPAddress", "127.0.0.1:2000"),
                ("Logging.LogRotation", "true"),
                ("Logging.LogLevel", "prod"),
                ("LocalMode", "false"),
                ("NoVerifySSL", "false"),
            ]
        );
        assert_eq!(f.get("bind"), Some(("Socket.UDPAddress", "127.0.0.1:2000")));
        assert_eq!(f.get("region"), None, "\"\" means the default");
    }

    #[test]
    fn version_one_and_every_key() {
        let f = explicit(
            "Version: 1\nTotalBufferSizeMB: 24\nConcurrency: 3\nEndpoint: http://e:1\nRegion: eu-west-1\n\
             Socket:\n  UDPAddress: 0.0.0.0:3000\n  TCPAddress: 0.0.0.0:3001\n\
             Logging:\n  LogRotation: false\n  LogLevel: debug\n  LogPath: /tmp/x.log\n\
             LocalMode: true\nResourceARN: arn:r\nRoleARN: arn:role\nNoVerifySSL: true\nProxyAddress: http://p:3128\n",
        )
        .unwrap();
        assert_eq!(f.version, 1);
        let longs: Vec<(&str, &str)> = f.values.iter().map(|(_, l, v)| (*l, v.as_str())).collect();
        assert_eq!(
            longs,
            vec![
                ("buffer-memory", "24"),
                ("concurrency", "3"),
                ("endpoint", "http://e:1"),
                ("region", "eu-west-1"),
                ("bind", "0.0.0.0:3000"),
                ("bind-tcp", "0.0.0.0:3001"),
                ("log-rotation", "false"),
                ("log-level", "debug"),
                ("log-file", "/tmp/x.log"),
                ("local-mode", "true"),
                ("resource-arn", "arn:r"),
                ("role-arn", "arn:role"),
                ("no-verify-ssl", "true"),
                ("proxy-address", "http://p:3128"),
            ]
        );
        // Empty sections and null values are zero values.
        let f = explicit("Version: 2\nSocket:\nLogging:\n  LogPath:\nRegion: ~\n").unwrap();
        assert!(f.values.is_empty());
    }

    #[test]
    fn version_is_required_and_checked() {
        for (text, want) in [
            (
                "Concurrency: 8\n",
                "config file my.yaml: Version is missing",
            ),
            ("", "Version is missing"),
            ("# nothing\n", "Version is missing"),
            (
                "Version: 3\n",
                "config file my.yaml: Version 3 is not supported; use 1 or 2",
            ),
            ("Version: 0\n", "Version 0 is not supported"),
            (
                "Version: \"2\"\n",
                "Version: expected the number 1 or 2, found the string \"2\"",
            ),
            ("Version: 2.5\n", "Version: expected the number 1 or 2"),
        ] {
            let e = explicit(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // Discovered files need a Version too.
        assert!(parse("cfg.yaml", "Region: x\n", Origin::Discovered).is_err());
    }

    #[test]
    fn unknown_keys_are_errors_for_c_and_warnings_when_discovered() {
        let text = "Version: 2\nRegoin: x\nregion: y\nSocket:\n  UDPaddress: a\nExtra: 1\n";
        let e = explicit(text).unwrap_err();
        assert!(
            e.contains("config file my.yaml: unknown key Regoin; known keys: TotalBufferSizeMB"),
            "{e}"
        );
        assert!(
            e.contains(
                "unknown key region (keys are case-sensitive and sectioned: did you mean Region?)"
            ),
            "{e}"
        );
        assert!(e.contains("unknown key Socket.UDPaddress (keys are case-sensitive and sectioned: did you mean Socket.UDPAddress?)"), "{e}");
        assert!(e.contains("unknown key Extra"), "{e}");
        assert_eq!(e.lines().count(), 4, "one line per problem: {e}");
        let f = parse("./cfg.yaml", text, Origin::Discovered).unwrap();
        assert_eq!(f.warnings.len(), 4);
        assert!(f.warnings[0].starts_with("config file ./cfg.yaml: unknown key Regoin"));
        assert!(f.warnings[0].ends_with("(ignored)"));
    }

    #[test]
    fn retired_keys_have_their_own_message() {
        for (text, key, hint) in [
            ("Profile:\n  CPU: x\n", "Profile.CPU", "remove it"),
            ("Profile:\n  Memory: x\n", "Profile.Memory", "remove it"),
            (
                "Socket:\n  BufferSizeKB: 64\n",
                "Socket.BufferSizeKB",
                "remove it",
            ),
            (
                "Logging:\n  LogFormat: x\n",
                "Logging.LogFormat",
                "--log-format",
            ),
            (
                "Processor:\n  BatchProcessorQueueSize: 20\n",
                "Processor.BatchProcessorQueueSize",
                "remove it",
            ),
            (
                "LogRotation: true\n",
                "LogRotation",
                "use Logging.LogRotation",
            ),
            (
                "Processor:\n  Region: x\n",
                "Processor.Region",
                "use Region",
            ),
            (
                "Processor:\n  Endpoint: x\n",
                "Processor.Endpoint",
                "use Endpoint",
            ),
            (
                "Processor:\n  Routine: 4\n",
                "Processor.Routine",
                "use Concurrency",
            ),
            ("MemoryLimit: 64\n", "MemoryLimit", "use TotalBufferSizeMB"),
        ] {
            let text = format!("Version: 2\n{text}");
            let e = explicit(&text).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "config file my.yaml: {key} is no longer supported; {}",
                    RETIRED.iter().find(|(k, _)| *k == key).unwrap().1
                ),
                "{text:?}"
            );
            assert!(e.contains(hint));
            let f = parse("cfg.yaml", &text, Origin::Discovered).unwrap();
            assert!(
                f.warnings[0].contains("is no longer supported"),
                "{:?}",
                f.warnings
            );
        }
        // A credentials profile name (newer AWS daemons) is ignored with a warning.
        let f = explicit("Version: 2\nProfile: default\n").unwrap();
        assert!(f.warnings[0].contains("AWS_PROFILE"), "{:?}", f.warnings);
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (line, want) in [
            (
                "Concurrency: \"8\"",
                "my.yaml: Concurrency: expected a whole number (0 for the default), found the string \"8\"",
            ),
            (
                "TotalBufferSizeMB: -5",
                "TotalBufferSizeMB: expected a whole number (0 for the default), found the number -5",
            ),
            (
                "TotalBufferSizeMB: 1.5",
                "TotalBufferSizeMB: expected a whole number",
            ),
            (
                "Region: 5",
                "Region: expected a string (put it in quotes), found the number 5",
            ),
            (
                "LocalMode: \"true\"",
                "LocalMode: expected true or false, found the string \"true\"",
            ),
            (
                "NoVerifySSL: 1",
                "NoVerifySSL: expected true or false, found the number 1",
            ),
            (
                "Socket: 127.0.0.1:2000",
                "Socket: expected a mapping of keys, found the string",
            ),
            (
                "Logging:\n  LogRotation: [a]",
                "Logging.LogRotation: expected true or false, found a list",
            ),
            (
                "Endpoint:\n  Url: x",
                "Endpoint: expected a string (put it in quotes), found a mapping",
            ),
        ] {
            let e = explicit(&format!("Version: 2\n{line}\n")).unwrap_err();
            assert!(e.contains(want), "{line:?}: {e}");
        }
    }

    #[test]
    fn syntax_errors_and_odd_documents() {
        let e = explicit("Version: 2\nSocket: [\n").unwrap_err();
        assert!(
            e.starts_with("config file my.yaml: not valid YAML: "),
            "{e}"
        );
        assert!(e.contains("line"), "{e}");
        let e = explicit("- Version: 2\n").unwrap_err();
        assert!(
            e.contains("expected keys such as \"Version: 2\" at the top level, found a list"),
            "{e}"
        );
        let e = explicit("Version: 2\nRegion: a\nRegion: b\n").unwrap_err();
        assert!(e.contains("duplicate"), "{e}");
    }

    #[test]
    fn load_finds_files_in_order() {
        use std::collections::HashMap;
        let files: HashMap<&str, &str> = HashMap::from([
            ("/etc/amazon/xray/cfg.yaml", "Version: 2\nRegion: etc\n"),
            ("cfg.yaml", "Version: 2\nRegion: cwd\n"),
            ("/my.yaml", "Version: 1\nRegion: mine\n"),
            ("/bad.yaml", "Version: 7\n"),
        ]);
        let read = |with: &'static [&'static str]| {
            let files = files.clone();
            move |p: &str| -> std::io::Result<Option<String>> {
                Ok(with
                    .contains(&p)
                    .then(|| files.get(p).map(|s| s.to_string()))
                    .flatten())
            }
        };
        let paths = |r: Result<Vec<FileConfig>, ConfigError>| -> Vec<String> {
            r.unwrap().into_iter().map(|f| f.path).collect()
        };
        let all = read(&[
            "/etc/amazon/xray/cfg.yaml",
            "cfg.yaml",
            "/my.yaml",
            "/bad.yaml",
        ]);
        assert_eq!(paths(load(None, &all)), vec!["/etc/amazon/xray/cfg.yaml"]);
        assert_eq!(
            paths(load(Some("/my.yaml"), &all)),
            vec!["/my.yaml", "/etc/amazon/xray/cfg.yaml"]
        );
        let cwd_only = read(&["cfg.yaml"]);
        let got = load(None, &cwd_only).unwrap();
        assert_eq!(
            (got[0].path.as_str(), got[0].origin),
            ("cfg.yaml", Origin::Discovered)
        );
        assert_eq!(paths(load(None, &read(&[]))), Vec::<String>::new());
        assert_eq!(
            load(Some("/nope.yaml"), &all).unwrap_err().0,
            "-c/--config: config file /nope.yaml does not exist"
        );
        assert!(
            load(Some("/bad.yaml"), &all)
                .unwrap_err()
                .0
                .contains("/bad.yaml: Version 7")
        );
        let failing = |_: &str| -> std::io::Result<Option<String>> {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "denied",
            ))
        };
        assert_eq!(
            load(Some("/x.yaml"), &failing).unwrap_err().0,
            "-c/--config: cannot read config file /x.yaml: denied"
        );
    }
}
