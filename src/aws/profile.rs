//! Shared config and credentials files (`~/.aws/config`, `~/.aws/credentials`), read the way the
//! AWS SDKs read them, and the credentials plan of a profile: static keys, `credential_process`,
//! `role_arn` + `web_identity_token_file`, IAM Identity Center (SSO) settings in either form
//! (`sso_session` naming an `[sso-session NAME]` section, or the legacy `sso_start_url` /
//! `sso_region` in the profile), and `role_arn` + `source_profile` / `credential_source`
//! assume-role chains.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::credentials::{Credentials, CredentialsError};
use super::sso::SsoSpec;
use super::sts::{RoleSpec, SESSION_NAME};

pub const ENV_PROFILE: &str = "AWS_PROFILE";
pub const ENV_CONFIG_FILE: &str = "AWS_CONFIG_FILE";
pub const ENV_CREDENTIALS_FILE: &str = "AWS_SHARED_CREDENTIALS_FILE";

/// Properties of one profile (keys lowercased).
pub type Properties = HashMap<String, String>;

/// Both files, merged per profile (the credentials file wins over the config file).
#[derive(Default)]
pub struct ProfileSet {
    profiles: HashMap<String, Properties>,
    /// `[sso-session NAME]` sections of the config file, by name.
    sso_sessions: HashMap<String, Properties>,
    /// The files as looked at, for messages.
    pub config_path: Option<PathBuf>,
    pub credentials_path: Option<PathBuf>,
}

impl fmt::Debug for ProfileSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.profiles.keys().collect();
        names.sort();
        f.debug_struct("ProfileSet")
            .field("profiles", &names)
            .field("sso_sessions", &self.sso_sessions.len())
            .field("config_path", &self.config_path)
            .field("credentials_path", &self.credentials_path)
            .finish()
    }
}

/// The profile to use: `AWS_PROFILE`, else `default`; true when it was chosen explicitly.
pub fn selected_profile(env: &dyn Fn(&str) -> Option<String>) -> (String, bool) {
    match env(ENV_PROFILE)
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
    {
        Some(p) => (p, true),
        None => ("default".to_string(), false),
    }
}

fn expand_home(path: &str, home: Option<&str>) -> Option<PathBuf> {
    if let Some(rest) = path.strip_prefix("~/") {
        return home.map(|h| Path::new(h).join(rest));
    }
    if path == "~" {
        return home.map(PathBuf::from);
    }
    Some(PathBuf::from(path))
}

/// The two file paths: `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`, else under `$HOME/.aws/`.
pub fn file_paths(env: &dyn Fn(&str) -> Option<String>) -> (Option<PathBuf>, Option<PathBuf>) {
    let home = env("HOME").filter(|h| !h.is_empty());
    let pick = |var: &str, default: &str| match env(var).filter(|v| !v.trim().is_empty()) {
        Some(p) => expand_home(p.trim(), home.as_deref()),
        None => home
            .as_deref()
            .map(|h| Path::new(h).join(".aws").join(default)),
    };
    (
        pick(ENV_CONFIG_FILE, "config"),
        pick(ENV_CREDENTIALS_FILE, "credentials"),
    )
}

/// Parses INI text into sections of properties, as the SDKs do: `#`/`;` full-line comments,
/// `[section]` headers (a trailing comment allowed), `key = value` (keys lowercased, values
/// trimmed, no inline comments), indented lines continuing the previous value (sub-properties).
pub fn parse_ini(text: &str) -> Vec<(String, Properties)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<(String, Properties)> = Vec::new();
    let mut last_key: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            last_key = None;
            let Some(end) = trimmed.find(']') else {
                continue;
            };
            let after = trimmed[end + 1..].trim();
            if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                continue;
            }
            let name = trimmed[1..end].trim().to_string();
            sections.push((name, Properties::new()));
            continue;
        }
        let Some((_, props)) = sections.last_mut() else {
            continue;
        };
        let indented = line.starts_with([' ', '\t']);
        if indented && let Some(v) = last_key.as_ref().and_then(|k| props.get_mut(k)) {
            v.push('\n');
            v.push_str(trimmed);
            continue;
        }
        let Some((k, v)) = trimmed.split_once('=') else {
            continue;
        };
        let key = k.trim().to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        props.insert(key.clone(), v.trim().to_string());
        last_key = Some(key);
    }
    sections
}

impl ProfileSet {
    /// Parses the two texts. Config sections are `[default]` and `[profile NAME]` (which wins over
    /// a plain `[default]`), and `[sso-session NAME]` (kept apart, see
    /// [`ProfileSet::sso_session`]); other config sections (`[services]`, bare names) are
    /// ignored. Credentials sections are `[NAME]`.
    pub fn parse(config: &str, credentials: &str) -> ProfileSet {
        let mut profiles: HashMap<String, Properties> = HashMap::new();
        let mut sso_sessions: HashMap<String, Properties> = HashMap::new();
        let mut from_profile_default = false;
        for (section, props) in parse_ini(config) {
            let mut words = section.split_whitespace();
            let name = match (words.next(), words.next(), words.next()) {
                (Some("sso-session"), Some(n), None) => {
                    sso_sessions.entry(n.to_string()).or_default().extend(props);
                    continue;
                }
                (Some("default"), None, _) => {
                    if from_profile_default {
                        continue;
                    }
                    "default".to_string()
                }
                (Some("profile"), Some(n), None) => {
                    if n == "default" {
                        if !from_profile_default {
                            profiles.remove("default");
                        }
                        from_profile_default = true;
                    }
                    n.to_string()
                }
                _ => continue,
            };
            profiles.entry(name).or_default().extend(props);
        }
        let mut from_credentials: HashMap<String, Properties> = HashMap::new();
        for (section, props) in parse_ini(credentials) {
            from_credentials
                .entry(section.trim().to_string())
                .or_default()
                .extend(props);
        }
        for (name, props) in from_credentials {
            profiles.entry(name).or_default().extend(props);
        }
        ProfileSet {
            profiles,
            sso_sessions,
            config_path: None,
            credentials_path: None,
        }
    }

    /// Reads the files named by the environment. Missing files count as empty; unreadable ones are
    /// logged and skipped.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> ProfileSet {
        let (config_path, credentials_path) = file_paths(env);
        let read = |p: &Option<PathBuf>| -> String {
            let Some(p) = p else { return String::new() };
            match std::fs::read_to_string(p) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    crate::warn!(
                        "Cannot read AWS shared file {}: {e}; ignoring it",
                        p.display()
                    );
                    String::new()
                }
            }
        };
        let mut set = ProfileSet::parse(&read(&config_path), &read(&credentials_path));
        set.config_path = config_path;
        set.credentials_path = credentials_path;
        set
    }

    /// A profile's properties.
    pub fn get(&self, name: &str) -> Option<&Properties> {
        self.profiles.get(name)
    }

    /// A non-empty property of a profile.
    pub fn value(&self, profile: &str, key: &str) -> Option<&str> {
        self.get(profile)?
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// An `[sso-session NAME]` section's properties.
    pub fn sso_session(&self, name: &str) -> Option<&Properties> {
        self.sso_sessions.get(name)
    }

    /// A non-empty property of an `[sso-session NAME]` section.
    pub fn sso_session_value(&self, name: &str, key: &str) -> Option<&str> {
        self.sso_session(name)?
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Where the profiles were read from, for messages.
    pub fn files(&self) -> String {
        let shown = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("(no HOME)".to_string(), |p| p.display().to_string())
        };
        format!(
            "{} and {}",
            shown(&self.credentials_path),
            shown(&self.config_path)
        )
    }
}

/// `credential_source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedSource {
    Environment,
    Ec2InstanceMetadata,
    EcsContainer,
}

/// Where the first credentials of a profile chain come from.
#[derive(Debug, Clone)]
pub enum BaseSource {
    /// `aws_access_key_id` / `aws_secret_access_key` / `aws_session_token`.
    Static(Credentials),
    /// `role_arn` + `web_identity_token_file` (+ `role_session_name`).
    WebIdentity {
        role_arn: String,
        token_file: PathBuf,
        session_name: String,
    },
    /// `credential_process` (the command line is not shown in Debug output).
    Process(ProcessCommand),
    /// `credential_source`.
    Named(NamedSource),
    /// IAM Identity Center (SSO): `sso_session` + `[sso-session]`, or the legacy settings.
    Sso(SsoSpec),
}

/// A `credential_process` command line; Debug shows only the program.
#[derive(Clone)]
pub struct ProcessCommand(pub String);

impl fmt::Debug for ProcessCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ProcessCommand({:?})",
            super::process::program_name(&self.0)
        )
    }
}

/// How to get a profile's credentials: the base, then roles to assume in order.
#[derive(Debug, Clone)]
pub struct ProfilePlan {
    /// The selected profile.
    pub profile: String,
    /// The profile that supplies the base credentials.
    pub base_profile: String,
    pub base: BaseSource,
    /// Roles to assume, innermost (assumed with the base credentials) first.
    pub chain: Vec<RoleSpec>,
}

impl ProfilePlan {
    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let base = match &self.base {
            BaseSource::Static(_) => "static keys".to_string(),
            BaseSource::WebIdentity {
                role_arn,
                token_file,
                ..
            } => format!(
                "web identity token file {} for role {role_arn}",
                token_file.display()
            ),
            BaseSource::Process(cmd) => format!(
                "credential_process `{}`",
                super::process::program_name(&cmd.0)
            ),
            BaseSource::Named(n) => format!("credential_source {n:?}"),
            BaseSource::Sso(spec) => spec.describe(),
        };
        let base = if self.base_profile == self.profile {
            base
        } else {
            format!("{base} of profile `{}`", self.base_profile)
        };
        if self.chain.is_empty() {
            format!("profile `{}`: {base}", self.profile)
        } else {
            let roles: Vec<&str> = self.chain.iter().map(|r| r.role_arn.as_str()).collect();
            format!(
                "profile `{}`: assume role {} from {base}",
                self.profile,
                roles.join(" then ")
            )
        }
    }
}

const CREDENTIAL_KEYS: &[&str] = &[
    "aws_access_key_id",
    "role_arn",
    "credential_process",
    "web_identity_token_file",
    "credential_source",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "sso_role_name",
];

fn err<T>(msg: String) -> Result<T, CredentialsError> {
    Err(CredentialsError(msg))
}

fn static_credentials(
    set: &ProfileSet,
    name: &str,
) -> Result<Option<Credentials>, CredentialsError> {
    let Some(id) = set.value(name, "aws_access_key_id") else {
        return Ok(None);
    };
    let Some(secret) = set.value(name, "aws_secret_access_key") else {
        return err(format!(
            "profile `{name}` has aws_access_key_id but no aws_secret_access_key (in {})",
            set.files()
        ));
    };
    let token = set.value(name, "aws_session_token").map(str::to_string);
    Ok(Some(Credentials::new(id, secret, token, None, "profile")))
}

fn base_of(set: &ProfileSet, name: &str) -> Result<BaseSource, CredentialsError> {
    if let Some(source) = set.value(name, "credential_source") {
        return named_source(name, source).map(BaseSource::Named);
    }
    if set.value(name, "web_identity_token_file").is_some() {
        return err(format!(
            "profile `{name}` has web_identity_token_file but no role_arn; add the role to assume"
        ));
    }
    if SSO_KEYS.iter().any(|k| set.value(name, k).is_some()) {
        return sso_spec(set, name).map(BaseSource::Sso);
    }
    if let Some(cmd) = set.value(name, "credential_process") {
        return Ok(BaseSource::Process(ProcessCommand(cmd.to_string())));
    }
    match static_credentials(set, name)? {
        Some(c) => Ok(BaseSource::Static(c)),
        None => err(format!(
            "profile `{name}` has no credentials (no aws_access_key_id, credential_process, role_arn \
             or credential_source) in {}",
            set.files()
        )),
    }
}

/// Settings that make a profile an SSO profile.
const SSO_KEYS: &[&str] = &[
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "sso_role_name",
];

/// The SSO settings of profile `name`, checked as aws-sdk-go-v2's shared config checks them: the
/// `sso_session` form needs `sso_account_id` and `sso_role_name` in the profile and an
/// `[sso-session NAME]` section with `sso_start_url` and `sso_region` (a profile that repeats
/// either must agree with the session); the legacy form needs all four in the profile.
pub fn sso_spec(set: &ProfileSet, name: &str) -> Result<SsoSpec, CredentialsError> {
    let own = |k: &str| set.value(name, k).map(str::to_string);
    let mut missing: Vec<&str> = Vec::new();
    let (session, start_url, region) = match own("sso_session") {
        Some(session) => {
            if set.sso_session(&session).is_none() {
                return err(format!(
                    "profile `{name}` names sso_session `{session}`, but there is no \
                     [sso-session {session}] section in {}",
                    set.config_path
                        .as_ref()
                        .map_or("the config file".to_string(), |p| p.display().to_string())
                ));
            }
            let from_session = |k: &str| set.sso_session_value(&session, k).map(str::to_string);
            let (url, region) = (from_session("sso_start_url"), from_session("sso_region"));
            for (key, theirs) in [("sso_start_url", &url), ("sso_region", &region)] {
                match (own(key), theirs) {
                    (Some(mine), Some(theirs)) if mine != *theirs => {
                        return err(format!(
                            "profile `{name}` sets {key} {mine:?}, which differs from {theirs:?} \
                             in [sso-session {session}]; remove it from the profile"
                        ));
                    }
                    (_, None) => missing.push(if key == "sso_region" {
                        "sso_region (in the sso-session)"
                    } else {
                        "sso_start_url (in the sso-session)"
                    }),
                    _ => {}
                }
            }
            (Some(session), url, region)
        }
        None => {
            let (url, region) = (own("sso_start_url"), own("sso_region"));
            if url.is_none() {
                missing.push("sso_start_url");
            }
            if region.is_none() {
                missing.push("sso_region");
            }
            (None, url, region)
        }
    };
    let account_id = own("sso_account_id");
    let role_name = own("sso_role_name");
    if account_id.is_none() {
        missing.push("sso_account_id");
    }
    if role_name.is_none() {
        missing.push("sso_role_name");
    }
    match (start_url, region, account_id, role_name) {
        (Some(start_url), Some(region), Some(account_id), Some(role_name))
            if missing.is_empty() =>
        {
            Ok(SsoSpec {
                profile: name.to_string(),
                session,
                start_url,
                region,
                account_id,
                role_name,
            })
        }
        _ => err(format!(
            "profile `{name}` uses IAM Identity Center (SSO) but lacks {}",
            missing.join(", ")
        )),
    }
}

fn named_source(profile: &str, value: &str) -> Result<NamedSource, CredentialsError> {
    match value {
        "Environment" => Ok(NamedSource::Environment),
        "Ec2InstanceMetadata" => Ok(NamedSource::Ec2InstanceMetadata),
        "EcsContainer" => Ok(NamedSource::EcsContainer),
        other => err(format!(
            "profile `{profile}`: credential_source {:?} is not one of Environment, Ec2InstanceMetadata, EcsContainer",
            other.chars().take(40).collect::<String>()
        )),
    }
}

/// The plan of profile `start`: `Ok(None)` when the profile is not defined or holds no credential
/// settings (the chain moves on); an error when its settings are unusable (a missing
/// `source_profile`, a loop, both or neither of `source_profile` / `credential_source`...).
pub fn plan(set: &ProfileSet, start: &str) -> Result<Option<ProfilePlan>, CredentialsError> {
    let Some(first) = set.get(start) else {
        return Ok(None);
    };
    if !CREDENTIAL_KEYS
        .iter()
        .any(|k| first.get(*k).is_some_and(|v| !v.trim().is_empty()))
    {
        return Ok(None);
    }
    let mut visited: Vec<String> = Vec::new();
    let mut chain: Vec<RoleSpec> = Vec::new();
    let mut name = start.to_string();
    let base = loop {
        if set.get(&name).is_none() {
            return err(format!(
                "profile `{}` names source_profile `{name}`, which is not defined in {}",
                visited.last().map_or(start, String::as_str),
                set.files()
            ));
        }
        if visited.contains(&name) {
            visited.push(name);
            return err(format!(
                "the source_profile chain loops: {}",
                visited.join(" -> ")
            ));
        }
        if !visited.is_empty() {
            // Past the first profile, static keys end the chain.
            if let Some(c) = static_credentials(set, &name)? {
                break BaseSource::Static(c);
            }
        }
        visited.push(name.clone());
        let session_name = set
            .value(&name, "role_session_name")
            .unwrap_or(SESSION_NAME)
            .to_string();
        let Some(role_arn) = set.value(&name, "role_arn").map(str::to_string) else {
            break base_of(set, &name)?;
        };
        if let Some(file) = set.value(&name, "web_identity_token_file") {
            break BaseSource::WebIdentity {
                role_arn,
                token_file: PathBuf::from(file),
                session_name,
            };
        }
        chain.push(RoleSpec {
            role_arn,
            session_name,
            external_id: set.value(&name, "external_id").map(str::to_string),
        });
        match (
            set.value(&name, "source_profile"),
            set.value(&name, "credential_source"),
        ) {
            (Some(_), Some(_)) => {
                return err(format!(
                    "profile `{name}` sets both source_profile and credential_source; keep one"
                ));
            }
            (None, None) => {
                return err(format!(
                    "profile `{name}` has role_arn but neither source_profile nor credential_source \
                     (nor web_identity_token_file); add one"
                ));
            }
            (Some(sp), None) if sp == name => match static_credentials(set, &name)? {
                Some(c) => break BaseSource::Static(c),
                None => {
                    return err(format!(
                        "profile `{name}` is its own source_profile but has no static keys"
                    ));
                }
            },
            (Some(sp), None) => name = sp.to_string(),
            (None, Some(cs)) => break BaseSource::Named(named_source(&name, cs)?),
        }
    };
    chain.reverse();
    Ok(Some(ProfilePlan {
        profile: start.to_string(),
        base_profile: name,
        base,
        chain,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_parsing_rules() {
        let s = parse_ini(
            "\u{feff}# c\n[default] ; note\nRegion = eu-west-1 \n  ; x\ns3 =\n  max = 1\n[broken\nk=v\n[ other ]\nk = a=b\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "default");
        assert_eq!(s[0].1["region"], "eu-west-1");
        assert_eq!(s[0].1["s3"], "\nmax = 1");
        assert_eq!(s[1].0, "other");
        assert_eq!(s[1].1["k"], "a=b");
    }

    #[test]
    fn config_sections_and_merge() {
        let set = ProfileSet::parse(
            "[default]\nregion=a\n[profile default]\nregion=b\n[dev]\nregion=ignored\n[profile dev]\nregion=c\n[sso-session s]\nx=1\n",
            "[dev]\naws_access_key_id=AKID\naws_secret_access_key=S\nregion=d\n",
        );
        assert_eq!(set.value("default", "region"), Some("b"));
        assert_eq!(set.value("dev", "region"), Some("d"));
        assert!(set.get("sso-session s").is_none());
        assert!(set.get("s").is_none());
    }

    #[test]
    fn chains_and_errors() {
        let set = ProfileSet::parse(
            "[profile a]\nrole_arn=arn:a\nsource_profile=b\nexternal_id=ext\n\
             [profile b]\nrole_arn=arn:b\nsource_profile=c\nrole_session_name=sb\n\
             [profile c]\naws_access_key_id=AKIDC\naws_secret_access_key=SC\nrole_arn=arn:ignored\nsource_profile=a\n\
             [profile self]\nrole_arn=arn:self\nsource_profile=self\naws_access_key_id=AKIDS\naws_secret_access_key=SS\n\
             [profile loop1]\nrole_arn=arn:1\nsource_profile=loop2\n[profile loop2]\nrole_arn=arn:2\nsource_profile=loop1\n\
             [profile wi]\nrole_arn=arn:wi\nweb_identity_token_file=/t\n\
             [profile proc]\ncredential_process=/bin/creds --secret x\n\
             [profile ecs]\nrole_arn=arn:e\ncredential_source=EcsContainer\n\
             [profile both]\nrole_arn=arn:x\ncredential_source=Environment\nsource_profile=c\n\
             [profile none]\nrole_arn=arn:x\n\
             [profile missing]\nrole_arn=arn:x\nsource_profile=nope\n\
             [profile regiononly]\nregion=x\n\
             [profile sso]\nsso_session=s\n",
            "",
        );
        let p = plan(&set, "a").unwrap().unwrap();
        assert_eq!(p.base_profile, "c");
        assert!(matches!(&p.base, BaseSource::Static(c) if c.access_key_id() == "AKIDC"));
        let roles: Vec<_> = p.chain.iter().map(|r| r.role_arn.as_str()).collect();
        assert_eq!(roles, ["arn:b", "arn:a"]);
        assert_eq!(p.chain[0].session_name, "sb");
        assert_eq!(p.chain[1].session_name, SESSION_NAME);
        assert_eq!(p.chain[1].external_id.as_deref(), Some("ext"));
        assert!(
            p.describe().contains("assume role arn:b then arn:a"),
            "{}",
            p.describe()
        );

        let p = plan(&set, "self").unwrap().unwrap();
        assert!(matches!(&p.base, BaseSource::Static(c) if c.access_key_id() == "AKIDS"));
        assert_eq!(p.chain.len(), 1);

        let e = plan(&set, "loop1").unwrap_err();
        assert!(e.0.contains("loop1 -> loop2 -> loop1"), "{e}");
        assert!(matches!(
            plan(&set, "wi").unwrap().unwrap().base,
            BaseSource::WebIdentity { .. }
        ));
        let p = plan(&set, "proc").unwrap().unwrap();
        assert!(matches!(p.base, BaseSource::Process(_)));
        assert!(!format!("{p:?}").contains("--secret"));
        let p = plan(&set, "ecs").unwrap().unwrap();
        assert!(matches!(
            p.base,
            BaseSource::Named(NamedSource::EcsContainer)
        ));
        assert!(plan(&set, "both").unwrap_err().0.contains("both"));
        assert!(plan(&set, "none").unwrap_err().0.contains("neither"));
        assert!(plan(&set, "missing").unwrap_err().0.contains("`nope`"));
        assert!(
            plan(&set, "sso")
                .unwrap_err()
                .0
                .contains("no [sso-session s] section")
        );
        assert!(plan(&set, "regiononly").unwrap().is_none());
        assert!(plan(&set, "undefined").unwrap().is_none());
    }

    #[test]
    fn sso_profiles_in_both_forms() {
        let set = ProfileSet::parse(
            "[profile dev]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = Writer\nregion = us-east-1\n\
             [sso-session corp]\nsso_start_url = https://d-1.awsapps.com/start\nsso_region = eu-west-1\nsso_registration_scopes = sso:account:access\n\
             [profile legacy]\nsso_start_url = https://d-2.awsapps.com/start\nsso_region = us-west-2\nsso_account_id = 444455556666\nsso_role_name = Reader\n\
             [profile agrees]\nsso_session = corp\nsso_region = eu-west-1\nsso_account_id = 1\nsso_role_name = R\n\
             [profile differs]\nsso_session = corp\nsso_region = us-east-1\nsso_account_id = 1\nsso_role_name = R\n\
             [profile norole]\nsso_session = corp\nsso_account_id = 1\n\
             [profile halflegacy]\nsso_start_url = https://d-2.awsapps.com/start\nsso_role_name = R\n\
             [profile nosession]\nsso_session = nope\nsso_account_id = 1\nsso_role_name = R\n\
             [sso-session bare]\nsso_start_url = https://d-3.awsapps.com/start\n\
             [profile bare]\nsso_session = bare\nsso_account_id = 1\nsso_role_name = R\n\
             [profile chained]\nrole_arn = arn:aws:iam::1:role/up\nsource_profile = dev\n",
            "",
        );
        let p = plan(&set, "dev").unwrap().unwrap();
        let BaseSource::Sso(spec) = &p.base else {
            panic!("{p:?}")
        };
        assert_eq!(
            spec,
            &SsoSpec {
                profile: "dev".into(),
                session: Some("corp".into()),
                start_url: "https://d-1.awsapps.com/start".into(),
                region: "eu-west-1".into(),
                account_id: "111122223333".into(),
                role_name: "Writer".into(),
            }
        );
        assert!(
            p.describe().contains("role Writer in account 111122223333"),
            "{}",
            p.describe()
        );

        let p = plan(&set, "legacy").unwrap().unwrap();
        let BaseSource::Sso(spec) = &p.base else {
            panic!("{p:?}")
        };
        assert_eq!(spec.session, None);
        assert_eq!(spec.start_url, "https://d-2.awsapps.com/start");
        assert_eq!(spec.region, "us-west-2");

        assert!(matches!(
            plan(&set, "agrees").unwrap().unwrap().base,
            BaseSource::Sso(_)
        ));
        let e = plan(&set, "differs").unwrap_err().0;
        assert!(e.contains("sso_region") && e.contains("differs"), "{e}");
        let e = plan(&set, "norole").unwrap_err().0;
        assert!(e.ends_with("lacks sso_role_name"), "{e}");
        let e = plan(&set, "halflegacy").unwrap_err().0;
        assert!(e.ends_with("lacks sso_region, sso_account_id"), "{e}");
        let e = plan(&set, "nosession").unwrap_err().0;
        assert!(e.contains("no [sso-session nope] section"), "{e}");
        let e = plan(&set, "bare").unwrap_err().0;
        assert!(e.ends_with("lacks sso_region (in the sso-session)"), "{e}");

        // An SSO profile as the source of an assume-role chain.
        let p = plan(&set, "chained").unwrap().unwrap();
        assert_eq!(p.base_profile, "dev");
        assert!(matches!(&p.base, BaseSource::Sso(s) if s.profile == "dev"));
        assert_eq!(p.chain.len(), 1);
        assert!(set.get("corp").is_none() && set.get("sso-session corp").is_none());
    }

    #[test]
    fn paths_from_env() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/u".to_string()),
            ENV_CONFIG_FILE => Some("~/cfg".to_string()),
            _ => None,
        };
        let (c, k) = file_paths(&env);
        assert_eq!(c.unwrap(), PathBuf::from("/home/u/cfg"));
        assert_eq!(k.unwrap(), PathBuf::from("/home/u/.aws/credentials"));
    }
}
