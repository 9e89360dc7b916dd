//! Endpoint resolution for X-Ray and STS, the way the AWS SDKs do it.
//!
//! Pure: no I/O and no access to the process environment. The environment comes in as a lookup
//! closure, so tests (and callers) decide exactly what is "set".
//!
//! X-Ray: `--endpoint` / config `Endpoint` → `AWS_ENDPOINT_URL_XRAY` → `AWS_ENDPOINT_URL` → built from
//! the region and its partition, honouring `AWS_USE_FIPS_ENDPOINT` and `AWS_USE_DUALSTACK_ENDPOINT`.
//! STS: `AWS_ENDPOINT_URL_STS` → `AWS_ENDPOINT_URL` → the regional STS endpoint (same flags).
//! IAM Identity Center (SSO profiles): the portal `AWS_ENDPOINT_URL_SSO` → `AWS_ENDPOINT_URL` →
//! `https://portal.sso.{region}.{suffix}`, and OIDC `AWS_ENDPOINT_URL_SSO_OIDC` →
//! `AWS_ENDPOINT_URL` → `https://oidc.{region}.{suffix}` (no FIPS or dual-stack variants).
//!
//! Empty (or all-blank) values count as unset. Override URLs are validated (http/https, a host, no
//! query, fragment or user info) and returned without a trailing slash. FIPS and dual-stack flags
//! only shape the built endpoint; an explicit override is used as given.

use std::fmt;

/// An AWS partition: a group of regions that share DNS suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Partition id, e.g. `aws`, `aws-cn`, `aws-us-gov`.
    pub name: &'static str,
    /// DNS suffix of the regular endpoints, e.g. `amazonaws.com`.
    pub dns_suffix: &'static str,
    /// DNS suffix of the dual-stack (IPv4 + IPv6) endpoints, `None` where the partition has none.
    pub dual_stack_dns_suffix: Option<&'static str>,
}

static AWS: Partition = Partition {
    name: "aws",
    dns_suffix: "amazonaws.com",
    dual_stack_dns_suffix: Some("api.aws"),
};
static AWS_CN: Partition = Partition {
    name: "aws-cn",
    dns_suffix: "amazonaws.com.cn",
    dual_stack_dns_suffix: Some("api.amazonwebservices.com.cn"),
};
static AWS_US_GOV: Partition = Partition {
    name: "aws-us-gov",
    dns_suffix: "amazonaws.com",
    dual_stack_dns_suffix: Some("api.aws"),
};
static AWS_ISO: Partition = Partition {
    name: "aws-iso",
    dns_suffix: "c2s.ic.gov",
    dual_stack_dns_suffix: None,
};
static AWS_ISO_B: Partition = Partition {
    name: "aws-iso-b",
    dns_suffix: "sc2s.sgov.gov",
    dual_stack_dns_suffix: None,
};
static AWS_ISO_E: Partition = Partition {
    name: "aws-iso-e",
    dns_suffix: "cloud.adc-e.uk",
    dual_stack_dns_suffix: None,
};
static AWS_ISO_F: Partition = Partition {
    name: "aws-iso-f",
    dns_suffix: "csp.hci.ic.gov",
    dual_stack_dns_suffix: None,
};
static AWS_EUSC: Partition = Partition {
    name: "aws-eusc",
    dns_suffix: "amazonaws.eu",
    dual_stack_dns_suffix: Some("api.amazonwebservices.eu"),
};

/// Region prefixes of the non-`aws` partitions, most specific first (`us-gov-` and the `us-iso*`
/// prefixes must win over the plain `us-` regions of `aws`, `us-isob-` over `us-iso-`).
static PARTITION_PREFIXES: [(&str, &Partition); 7] = [
    ("us-gov-", &AWS_US_GOV),
    ("us-isob-", &AWS_ISO_B),
    ("us-isof-", &AWS_ISO_F),
    ("us-iso-", &AWS_ISO),
    ("eu-isoe-", &AWS_ISO_E),
    ("eusc-", &AWS_EUSC),
    ("cn-", &AWS_CN),
];

impl Partition {
    /// The partition a region belongs to, by region prefix; anything unrecognised is `aws`.
    #[must_use]
    pub fn for_region(region: &str) -> &'static Partition {
        PARTITION_PREFIXES
            .iter()
            .find(|(prefix, _)| region.starts_with(prefix))
            .map_or(&AWS, |(_, partition)| *partition)
    }
}

/// Regions with published FIPS endpoints (for both `xray` and `sts`).
pub const FIPS_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-west-1",
    "us-gov-east-1",
];

/// `ResolvedEndpoint::source` when the URL came from `--endpoint` or the config key `Endpoint`.
pub const SOURCE_FLAG_OR_CONFIG: &str = "--endpoint";
/// `ResolvedEndpoint::source` (and env variable) for the X-Ray specific override.
pub const SOURCE_ENV_XRAY: &str = "AWS_ENDPOINT_URL_XRAY";
/// `ResolvedEndpoint::source` (and env variable) for the STS specific override.
pub const SOURCE_ENV_STS: &str = "AWS_ENDPOINT_URL_STS";
/// `ResolvedEndpoint::source` (and env variable) for the IAM Identity Center portal override.
pub const SOURCE_ENV_SSO: &str = "AWS_ENDPOINT_URL_SSO";
/// `ResolvedEndpoint::source` (and env variable) for the IAM Identity Center OIDC override.
pub const SOURCE_ENV_SSO_OIDC: &str = "AWS_ENDPOINT_URL_SSO_OIDC";
/// `ResolvedEndpoint::source` (and env variable) for the all-services override.
pub const SOURCE_ENV_ALL: &str = "AWS_ENDPOINT_URL";
/// `ResolvedEndpoint::source` when the URL was built from the region and its partition.
pub const SOURCE_REGION: &str = "region";

/// Environment variable that selects FIPS endpoints (value `true`, any case).
pub const ENV_USE_FIPS: &str = "AWS_USE_FIPS_ENDPOINT";
/// Environment variable that selects dual-stack endpoints (value `true`, any case).
pub const ENV_USE_DUALSTACK: &str = "AWS_USE_DUALSTACK_ENDPOINT";

/// Longest region code accepted (a region is a single DNS label).
const MAX_REGION_LEN: usize = 63;
/// Longest excerpt of a bad value quoted in an error message.
const MAX_SHOWN_CHARS: usize = 100;

/// An endpoint URL and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    /// Base URL: scheme, host, optional port and path, never a trailing slash.
    pub url: String,
    /// What supplied it: one of the `SOURCE_*` constants (e.g. `--endpoint`,
    /// `AWS_ENDPOINT_URL_XRAY`, `region`).
    pub source: &'static str,
}

/// Why no endpoint could be determined; `Display` says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// The region is empty: nothing to build an endpoint from.
    MissingRegion,
    /// The region is not a plausible region code.
    InvalidRegion {
        /// The offending value, escaped and shortened for display.
        region: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The service name is not lowercase letters, digits and dashes (a caller bug).
    InvalidService {
        /// The offending value, escaped and shortened for display.
        service: String,
    },
    /// FIPS was requested in a region without a FIPS endpoint.
    FipsUnavailable {
        /// Service asked for (`xray`, `sts`).
        service: String,
        /// Region asked for.
        region: String,
    },
    /// Dual-stack was requested in a partition without dual-stack endpoints.
    DualStackUnavailable {
        /// Partition of the region.
        partition: &'static str,
        /// Region asked for.
        region: String,
    },
    /// An endpoint override is not a usable URL.
    InvalidEndpointUrl {
        /// Where the value came from (a `SOURCE_*` constant).
        setting: &'static str,
        /// The value, escaped, shortened, with any user info redacted.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Human name of a setting for error messages.
fn setting_label(setting: &str) -> &str {
    if setting == SOURCE_FLAG_OR_CONFIG {
        "--endpoint (or config `Endpoint`)"
    } else {
        setting
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingRegion => write!(
                f,
                "no AWS region to build the endpoint from; set -n/--region, the config key `Region` \
                 or AWS_REGION, or give an explicit endpoint URL"
            ),
            Self::InvalidRegion { region, problem } => write!(
                f,
                "invalid AWS region {region}: {problem}; use a region code such as us-east-1 \
                 (lowercase letters, digits and dashes)"
            ),
            Self::InvalidService { service } => write!(
                f,
                "invalid service name {service}: use lowercase letters, digits and dashes \
                 (e.g. xray, sts)"
            ),
            Self::FipsUnavailable { service, region } => write!(
                f,
                "{service} has no FIPS endpoint in region {region} (FIPS endpoints exist in {}); \
                 unset {ENV_USE_FIPS}, use one of those regions, or give an explicit endpoint URL",
                FIPS_REGIONS.join(", ")
            ),
            Self::DualStackUnavailable { partition, region } => write!(
                f,
                "partition {partition} (region {region}) has no dual-stack endpoints; \
                 unset {ENV_USE_DUALSTACK} or give an explicit endpoint URL"
            ),
            Self::InvalidEndpointUrl {
                setting,
                value,
                problem,
            } => write!(
                f,
                "{} = {value} is not a usable endpoint URL: {problem}; write it like \
                 https://xray.us-east-1.amazonaws.com or http://127.0.0.1:4566",
                setting_label(setting)
            ),
        }
    }
}

impl std::error::Error for EndpointError {}

/// Quote a value for an error message: escaped (no control characters reach the log) and shortened.
fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(MAX_SHOWN_CHARS).collect();
    let truncated = out.len() < value.len();
    out = format!("{out:?}");
    if truncated {
        out.push('…');
    }
    out
}

/// `shown`, with any `user:password@` part of a URL's authority replaced by `***@`.
fn shown_redacted(value: &str) -> String {
    if let Some((scheme, rest)) = value.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((_, host)) = authority.rsplit_once('@') {
            return shown(&format!("{scheme}://***@{host}{tail}"));
        }
    } else if let Some((_, host)) = value.rsplit_once('@') {
        return shown(&format!("***@{host}"));
    }
    shown(value)
}

/// Check that `region` is a plausible region code: non-empty, at most 63 characters of lowercase
/// letters, digits and dashes, not starting or ending with a dash, and not a `fips-` pseudo-region.
///
/// This keeps an injected value (`us-east-1.evil.example/`) from steering requests to another host.
///
/// # Errors
/// [`EndpointError::MissingRegion`] when empty, [`EndpointError::InvalidRegion`] otherwise.
pub fn validate_region(region: &str) -> Result<(), EndpointError> {
    let invalid = |problem: String| EndpointError::InvalidRegion {
        region: shown(region),
        problem,
    };
    if region.is_empty() {
        return Err(EndpointError::MissingRegion);
    }
    if let Some(c) = region
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(invalid(format!(
            "it contains {c:?}, but only lowercase letters, digits and dashes are allowed"
        )));
    }
    if region.len() > MAX_REGION_LEN {
        return Err(invalid(format!(
            "it is {} characters long, the limit is {MAX_REGION_LEN}",
            region.len()
        )));
    }
    if region.starts_with('-') || region.ends_with('-') {
        return Err(invalid("it starts or ends with a dash".to_owned()));
    }
    if region.starts_with("fips-") || region.ends_with("-fips") {
        return Err(invalid(format!(
            "it is a FIPS pseudo-region; give the real region and set {ENV_USE_FIPS}=true"
        )));
    }
    Ok(())
}

/// Check a service name (`xray`, `sts`): non-empty lowercase letters, digits and dashes.
fn validate_service(service: &str) -> Result<(), EndpointError> {
    let ok = !service.is_empty()
        && !service.starts_with('-')
        && !service.ends_with('-')
        && service
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(EndpointError::InvalidService {
            service: shown(service),
        })
    }
}

/// The regional endpoint of `service`: `https://{service}[-fips].{region}.{suffix}`, where suffix is
/// the partition's DNS suffix, or its dual-stack suffix when `dualstack` is set.
///
/// # Errors
/// Empty or malformed region or service, FIPS outside [`FIPS_REGIONS`], dual-stack in a partition
/// without it.
pub fn service_endpoint(
    service: &str,
    region: &str,
    fips: bool,
    dualstack: bool,
) -> Result<String, EndpointError> {
    validate_service(service)?;
    validate_region(region)?;
    let partition = Partition::for_region(region);
    if fips && !FIPS_REGIONS.contains(&region) {
        return Err(EndpointError::FipsUnavailable {
            service: service.to_owned(),
            region: region.to_owned(),
        });
    }
    let suffix = if dualstack {
        partition
            .dual_stack_dns_suffix
            .ok_or_else(|| EndpointError::DualStackUnavailable {
                partition: partition.name,
                region: region.to_owned(),
            })?
    } else {
        partition.dns_suffix
    };
    let fips_part = if fips { "-fips" } else { "" };
    Ok(format!("https://{service}{fips_part}.{region}.{suffix}"))
}

/// Resolve the X-Ray base URL: `flag_or_config` (`--endpoint` / config `Endpoint`) →
/// `AWS_ENDPOINT_URL_XRAY` → `AWS_ENDPOINT_URL` → built from `region` honouring
/// `AWS_USE_FIPS_ENDPOINT` / `AWS_USE_DUALSTACK_ENDPOINT`. Empty values count as unset; `region`
/// is only needed (and checked) when no override is set.
///
/// # Errors
/// The first set override is not a valid URL ([`EndpointError::InvalidEndpointUrl`] naming it), or
/// no override is set and [`service_endpoint`] fails.
pub fn resolve_xray_endpoint(
    flag_or_config: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<ResolvedEndpoint, EndpointError> {
    if let Some(value) = flag_or_config.filter(|v| !v.trim().is_empty()) {
        return override_endpoint(SOURCE_FLAG_OR_CONFIG, value);
    }
    resolve_from_env("xray", SOURCE_ENV_XRAY, env, region)
}

/// Resolve the STS base URL: `AWS_ENDPOINT_URL_STS` → `AWS_ENDPOINT_URL` → the regional STS
/// endpoint honouring `AWS_USE_FIPS_ENDPOINT` / `AWS_USE_DUALSTACK_ENDPOINT`. Empty values count as
/// unset; `region` is only needed (and checked) when no override is set.
///
/// # Errors
/// As [`resolve_xray_endpoint`].
pub fn resolve_sts_endpoint(
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<ResolvedEndpoint, EndpointError> {
    resolve_from_env("sts", SOURCE_ENV_STS, env, region)
}

/// Resolve the IAM Identity Center portal base URL (`GetRoleCredentials`) for `sso_region`:
/// `AWS_ENDPOINT_URL_SSO` → `AWS_ENDPOINT_URL` → `https://portal.sso.{region}.{suffix}`.
///
/// # Errors
/// An override is not a valid URL, or no override is set and the region is malformed.
pub fn resolve_sso_portal_endpoint(
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<ResolvedEndpoint, EndpointError> {
    resolve_sso_like(SOURCE_ENV_SSO, "portal.sso", env, region)
}

/// Resolve the IAM Identity Center OIDC base URL (`CreateToken`) for `sso_region`:
/// `AWS_ENDPOINT_URL_SSO_OIDC` → `AWS_ENDPOINT_URL` → `https://oidc.{region}.{suffix}`.
///
/// # Errors
/// As [`resolve_sso_portal_endpoint`].
pub fn resolve_sso_oidc_endpoint(
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<ResolvedEndpoint, EndpointError> {
    resolve_sso_like(SOURCE_ENV_SSO_OIDC, "oidc", env, region)
}

/// The SSO hosts carry a dotted prefix (`portal.sso`), which [`service_endpoint`] does not build.
fn resolve_sso_like(
    service_var: &'static str,
    host_prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<ResolvedEndpoint, EndpointError> {
    for var in [service_var, SOURCE_ENV_ALL] {
        if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
            return override_endpoint(var, &value);
        }
    }
    validate_region(region)?;
    let suffix = Partition::for_region(region).dns_suffix;
    Ok(ResolvedEndpoint {
        url: format!("https://{host_prefix}.{region}.{suffix}"),
        source: SOURCE_REGION,
    })
}

/// The shared tail of both resolvers: service override, global override, then the built endpoint.
fn resolve_from_env(
    service: &str,
    service_var: &'static str,
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<ResolvedEndpoint, EndpointError> {
    for var in [service_var, SOURCE_ENV_ALL] {
        if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
            return override_endpoint(var, &value);
        }
    }
    let fips = env_flag(env, ENV_USE_FIPS);
    let dualstack = env_flag(env, ENV_USE_DUALSTACK);
    Ok(ResolvedEndpoint {
        url: service_endpoint(service, region, fips, dualstack)?,
        source: SOURCE_REGION,
    })
}

/// A boolean environment flag: on only for `true` (any case, surrounding blanks ignored), like the
/// AWS SDK for Go that the original daemon uses; anything else, or unset, is off.
fn env_flag(env: &dyn Fn(&str) -> Option<String>, name: &str) -> bool {
    env(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Validate an override and wrap it as a `ResolvedEndpoint`.
fn override_endpoint(
    setting: &'static str,
    value: &str,
) -> Result<ResolvedEndpoint, EndpointError> {
    match normalize_endpoint_url(value) {
        Ok(url) => Ok(ResolvedEndpoint {
            url,
            source: setting,
        }),
        Err(problem) => Err(EndpointError::InvalidEndpointUrl {
            setting,
            value: shown_redacted(value.trim()),
            problem,
        }),
    }
}

/// Check an endpoint URL and return it normalised: outer blanks and trailing slashes removed,
/// scheme lowercased. The error is the problem, phrased for a message.
fn normalize_endpoint_url(raw: &str) -> Result<String, String> {
    let value = raw.trim();
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err("it has no scheme; start it with http:// or https://".to_owned());
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "the scheme {} is not supported; use http:// or https://",
            shown(&scheme)
        ));
    }
    if rest.contains('?') {
        return Err("it has a query string (`?…`); remove it".to_owned());
    }
    if rest.contains('#') {
        return Err("it has a fragment (`#…`); remove it".to_owned());
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(
            "it has user info (`user@`); remove it, credentials come from the credential chain"
                .to_owned(),
        );
    }
    check_authority(authority)?;
    check_path(path)?;
    Ok(format!(
        "{scheme}://{authority}{}",
        path.trim_end_matches('/')
    ))
}

/// Check `host[:port]` or `[ipv6][:port]`.
fn check_authority(authority: &str) -> Result<(), String> {
    if authority.is_empty() {
        return Err("it has no host".to_owned());
    }
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((address, tail)) = bracketed.split_once(']') else {
            return Err("the IPv6 address has no closing `]`".to_owned());
        };
        let ipv6_ok = address.contains(':')
            && address
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if !ipv6_ok {
            return Err(format!(
                "{} is not an IPv6 address",
                shown(&format!("[{address}]"))
            ));
        }
        if tail.is_empty() {
            None
        } else if let Some(port) = tail.strip_prefix(':') {
            Some(port)
        } else {
            return Err("unexpected characters after the IPv6 address".to_owned());
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        check_host(host)?;
        port
    };
    if let Some(port) = port {
        check_port(port)?;
    }
    Ok(())
}

/// Check a host name or IPv4 address: dot-separated non-empty labels of ASCII letters, digits,
/// `-` and `_`.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("it has no host".to_owned());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "the host contains {c:?}; use ASCII letters, digits, `-`, `_` and `.` \
             (punycode for international names)"
        ));
    }
    if host.split('.').any(str::is_empty) {
        return Err("the host has an empty label (`..` or a leading/trailing dot)".to_owned());
    }
    Ok(())
}

/// Check a port: 1 to 65535, digits only.
fn check_port(port: &str) -> Result<(), String> {
    if port.is_empty() {
        return Err("the port after `:` is empty".to_owned());
    }
    if !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("the port {} is not a number", shown(port)));
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("the port {port} is not in 1-65535")),
    }
}

/// Check a path: printable ASCII without spaces, `\`, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`;
/// every `%` starts a two-hex-digit escape.
fn check_path(path: &str) -> Result<(), String> {
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        let allowed = c.is_ascii_graphic()
            && !matches!(c, '\\' | '"' | '<' | '>' | '^' | '`' | '{' | '|' | '}');
        if !allowed {
            return Err(format!(
                "the path contains {c:?}; percent-encode it or remove it"
            ));
        }
        if c == '%' {
            let escape_ok = chars.next().is_some_and(|h| h.is_ascii_hexdigit())
                && chars.next().is_some_and(|h| h.is_ascii_hexdigit());
            if !escape_ok {
                return Err("the path has a `%` not followed by two hex digits".to_owned());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An environment lookup backed by a fixed list of variables.
    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn xray(
        flag: Option<&str>,
        pairs: &[(&str, &str)],
        region: &str,
    ) -> Result<ResolvedEndpoint, EndpointError> {
        resolve_xray_endpoint(flag, &env_of(pairs), region)
    }

    fn sts(pairs: &[(&str, &str)], region: &str) -> Result<ResolvedEndpoint, EndpointError> {
        resolve_sts_endpoint(&env_of(pairs), region)
    }

    fn ok(url: &str, source: &'static str) -> Result<ResolvedEndpoint, EndpointError> {
        Ok(ResolvedEndpoint {
            url: url.to_owned(),
            source,
        })
    }

    /// The problem reported for an override given via `AWS_ENDPOINT_URL_XRAY`.
    fn url_problem(value: &str) -> String {
        match xray(None, &[(SOURCE_ENV_XRAY, value)], "us-east-1") {
            Err(EndpointError::InvalidEndpointUrl {
                setting, problem, ..
            }) => {
                assert_eq!(setting, SOURCE_ENV_XRAY);
                problem
            }
            other => panic!("{value:?} should be rejected, got {other:?}"),
        }
    }

    /// The normalised URL for an accepted override.
    fn url_ok(value: &str) -> String {
        match xray(Some(value), &[], "us-east-1") {
            Ok(resolved) => {
                assert_eq!(resolved.source, SOURCE_FLAG_OR_CONFIG);
                resolved.url
            }
            Err(e) => panic!("{value:?} should be accepted, got {e}"),
        }
    }

    // ---- partitions ----

    #[test]
    fn aws_partition_covers_commercial_prefixes() {
        for region in [
            "us-east-1",
            "us-west-2",
            "eu-west-1",
            "eu-central-2",
            "ap-southeast-5",
            "ca-west-1",
            "sa-east-1",
            "me-central-1",
            "af-south-1",
            "il-central-1",
            "mx-central-1",
        ] {
            let p = Partition::for_region(region);
            assert_eq!(p.name, "aws", "{region}");
            assert_eq!(p.dns_suffix, "amazonaws.com");
            assert_eq!(p.dual_stack_dns_suffix, Some("api.aws"));
        }
    }

    #[test]
    fn unknown_prefix_falls_back_to_aws() {
        for region in ["xx-nowhere-1", "local", "", "usgov-west-1", "cnnorth-1"] {
            assert_eq!(Partition::for_region(region).name, "aws", "{region}");
        }
    }

    #[test]
    fn every_other_partition_by_prefix() {
        let cases = [
            (
                "cn-north-1",
                "aws-cn",
                "amazonaws.com.cn",
                Some("api.amazonwebservices.com.cn"),
            ),
            (
                "cn-northwest-1",
                "aws-cn",
                "amazonaws.com.cn",
                Some("api.amazonwebservices.com.cn"),
            ),
            (
                "us-gov-west-1",
                "aws-us-gov",
                "amazonaws.com",
                Some("api.aws"),
            ),
            (
                "us-gov-east-1",
                "aws-us-gov",
                "amazonaws.com",
                Some("api.aws"),
            ),
            ("us-iso-east-1", "aws-iso", "c2s.ic.gov", None),
            ("us-iso-west-1", "aws-iso", "c2s.ic.gov", None),
            ("us-isob-east-1", "aws-iso-b", "sc2s.sgov.gov", None),
            ("eu-isoe-west-1", "aws-iso-e", "cloud.adc-e.uk", None),
            ("us-isof-south-1", "aws-iso-f", "csp.hci.ic.gov", None),
            ("us-isof-east-1", "aws-iso-f", "csp.hci.ic.gov", None),
            (
                "eusc-de-east-1",
                "aws-eusc",
                "amazonaws.eu",
                Some("api.amazonwebservices.eu"),
            ),
        ];
        for (region, name, suffix, dual) in cases {
            let p = Partition::for_region(region);
            assert_eq!(p.name, name, "{region}");
            assert_eq!(p.dns_suffix, suffix, "{region}");
            assert_eq!(p.dual_stack_dns_suffix, dual, "{region}");
        }
    }

    #[test]
    fn prefix_order_specific_before_general() {
        // us-gov-/us-iso*- are not the plain us- regions of aws.
        assert_eq!(Partition::for_region("us-gov-west-1").name, "aws-us-gov");
        assert_eq!(Partition::for_region("us-isob-east-1").name, "aws-iso-b");
        assert_eq!(Partition::for_region("us-isof-south-1").name, "aws-iso-f");
        assert_eq!(Partition::for_region("us-iso-east-1").name, "aws-iso");
        // eu-isoe- and eusc- are not the eu- regions of aws; eu-west stays aws.
        assert_eq!(Partition::for_region("eu-isoe-west-1").name, "aws-iso-e");
        assert_eq!(Partition::for_region("eusc-de-east-1").name, "aws-eusc");
        assert_eq!(Partition::for_region("eu-west-1").name, "aws");
        // Prefixes need their trailing dash.
        assert_eq!(Partition::for_region("us-isobar-1").name, "aws");
        assert_eq!(Partition::for_region("us-government-1").name, "aws");
    }

    // ---- service_endpoint ----

    #[test]
    fn standard_endpoints_per_partition() {
        let cases = [
            ("us-east-1", "https://xray.us-east-1.amazonaws.com"),
            ("eu-west-1", "https://xray.eu-west-1.amazonaws.com"),
            ("cn-north-1", "https://xray.cn-north-1.amazonaws.com.cn"),
            ("us-gov-west-1", "https://xray.us-gov-west-1.amazonaws.com"),
            ("us-iso-east-1", "https://xray.us-iso-east-1.c2s.ic.gov"),
            (
                "us-isob-east-1",
                "https://xray.us-isob-east-1.sc2s.sgov.gov",
            ),
            (
                "eu-isoe-west-1",
                "https://xray.eu-isoe-west-1.cloud.adc-e.uk",
            ),
            (
                "us-isof-south-1",
                "https://xray.us-isof-south-1.csp.hci.ic.gov",
            ),
            ("eusc-de-east-1", "https://xray.eusc-de-east-1.amazonaws.eu"),
        ];
        for (region, url) in cases {
            assert_eq!(
                service_endpoint("xray", region, false, false).as_deref(),
                Ok(url)
            );
        }
        assert_eq!(
            service_endpoint("sts", "cn-northwest-1", false, false).as_deref(),
            Ok("https://sts.cn-northwest-1.amazonaws.com.cn")
        );
    }

    #[test]
    fn dual_stack_where_available() {
        let cases = [
            ("us-east-1", "https://xray.us-east-1.api.aws"),
            ("ap-south-1", "https://xray.ap-south-1.api.aws"),
            (
                "cn-north-1",
                "https://xray.cn-north-1.api.amazonwebservices.com.cn",
            ),
            ("us-gov-east-1", "https://xray.us-gov-east-1.api.aws"),
            (
                "eusc-de-east-1",
                "https://xray.eusc-de-east-1.api.amazonwebservices.eu",
            ),
        ];
        for (region, url) in cases {
            assert_eq!(
                service_endpoint("xray", region, false, true).as_deref(),
                Ok(url)
            );
        }
    }

    #[test]
    fn dual_stack_unavailable_in_iso_partitions() {
        for (region, partition) in [
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eu-isoe-west-1", "aws-iso-e"),
            ("us-isof-south-1", "aws-iso-f"),
        ] {
            let err = service_endpoint("xray", region, false, true).unwrap_err();
            assert_eq!(
                err,
                EndpointError::DualStackUnavailable {
                    partition,
                    region: region.to_owned()
                }
            );
            let msg = err.to_string();
            assert!(msg.contains(partition) && msg.contains(region), "{msg}");
            assert!(msg.contains("AWS_USE_DUALSTACK_ENDPOINT"), "{msg}");
        }
    }

    #[test]
    fn fips_in_every_published_region() {
        for region in FIPS_REGIONS {
            for service in ["xray", "sts"] {
                let suffix = "amazonaws.com";
                assert_eq!(
                    service_endpoint(service, region, true, false),
                    Ok(format!("https://{service}-fips.{region}.{suffix}"))
                );
                assert_eq!(
                    service_endpoint(service, region, true, true),
                    Ok(format!("https://{service}-fips.{region}.api.aws"))
                );
            }
        }
    }

    #[test]
    fn fips_refused_elsewhere() {
        for region in [
            "eu-west-1",
            "ap-northeast-1",
            "ca-central-1",
            "cn-north-1",
            "us-iso-east-1",
            "us-isob-east-1",
            "eu-isoe-west-1",
            "us-isof-south-1",
            "eusc-de-east-1",
            "us-gov-central-1",
        ] {
            for service in ["xray", "sts"] {
                let err = service_endpoint(service, region, true, false).unwrap_err();
                assert_eq!(
                    err,
                    EndpointError::FipsUnavailable {
                        service: service.to_owned(),
                        region: region.to_owned()
                    }
                );
                let msg = err.to_string();
                assert!(msg.contains(region) && msg.contains(service), "{msg}");
                assert!(msg.contains("AWS_USE_FIPS_ENDPOINT"), "{msg}");
                assert!(msg.contains("us-gov-west-1"), "{msg}");
            }
        }
    }

    #[test]
    fn fips_checked_before_dual_stack() {
        assert!(matches!(
            service_endpoint("xray", "us-iso-east-1", true, true),
            Err(EndpointError::FipsUnavailable { .. })
        ));
    }

    #[test]
    fn bad_service_names() {
        for service in [
            "", "XRAY", "x.ray", "x/ray", "-xray", "xray-", "x ray", "xräy",
        ] {
            let err = service_endpoint(service, "us-east-1", false, false).unwrap_err();
            assert!(
                matches!(err, EndpointError::InvalidService { .. }),
                "{service:?}: {err:?}"
            );
        }
        assert!(service_endpoint("x-ray2", "us-east-1", false, false).is_ok());
    }

    // ---- region validation ----

    #[test]
    fn empty_region_is_missing() {
        assert_eq!(validate_region(""), Err(EndpointError::MissingRegion));
        assert_eq!(
            service_endpoint("xray", "", false, false),
            Err(EndpointError::MissingRegion)
        );
        let err = xray(None, &[], "").unwrap_err();
        assert_eq!(err, EndpointError::MissingRegion);
        let msg = err.to_string();
        assert!(
            msg.contains("--region") && msg.contains("AWS_REGION"),
            "{msg}"
        );
    }

    #[test]
    fn valid_regions_accepted() {
        for region in [
            "us-east-1",
            "ap-southeast-7",
            "us-isob-east-1",
            "local",
            "a",
            &"a".repeat(63),
        ] {
            assert_eq!(validate_region(region), Ok(()), "{region}");
        }
    }

    #[test]
    fn bad_regions_rejected() {
        let bad = [
            "US-EAST-1",
            "us_east_1",
            "us-east-1.evil.example",
            "evil.example/",
            "us-east-1/",
            "us-east-1 ",
            " us-east-1",
            "us-east-1\n",
            "us-east-1\r\nHost: evil",
            "us-east-1@evil",
            "us-east-1:443",
            "us-east-1?x",
            "us-east-1#x",
            "-us-east-1",
            "us-east-1-",
            "-",
            "ús-east-1",
            "us-east-1\u{0}",
            "fips-us-gov-west-1",
            "us-east-1-fips",
        ];
        for region in bad {
            let err = validate_region(region).unwrap_err();
            assert!(
                matches!(err, EndpointError::InvalidRegion { .. }),
                "{region:?}: {err:?}"
            );
            assert!(service_endpoint("xray", region, false, false).is_err());
            let msg = err.to_string();
            assert!(msg.contains("us-east-1"), "{msg}");
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg}");
        }
        assert!(validate_region(&"a".repeat(64)).is_err());
    }

    #[test]
    fn fips_pseudo_region_message_points_at_flag() {
        let msg = validate_region("fips-us-gov-west-1")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("AWS_USE_FIPS_ENDPOINT=true"), "{msg}");
    }

    #[test]
    fn long_bad_region_is_shortened_in_message() {
        let region = format!("{}!", "a".repeat(10_000));
        let msg = validate_region(&region).unwrap_err().to_string();
        assert!(msg.len() < 600, "{}", msg.len());
        assert!(msg.contains('…'));
    }

    // ---- precedence ----

    #[test]
    fn xray_default_is_built_from_region() {
        assert_eq!(
            xray(None, &[], "us-west-2"),
            ok("https://xray.us-west-2.amazonaws.com", SOURCE_REGION)
        );
        assert_eq!(
            resolve_xray_endpoint(None, &no_env, "cn-north-1"),
            ok("https://xray.cn-north-1.amazonaws.com.cn", SOURCE_REGION)
        );
    }

    #[test]
    fn xray_precedence_order() {
        let all = [
            (SOURCE_ENV_XRAY, "http://xray-env:1"),
            (SOURCE_ENV_ALL, "http://all-env:2"),
            (SOURCE_ENV_STS, "http://sts-env:3"),
        ];
        assert_eq!(
            xray(Some("http://flag:9"), &all, "us-east-1"),
            ok("http://flag:9", SOURCE_FLAG_OR_CONFIG)
        );
        assert_eq!(
            xray(None, &all, "us-east-1"),
            ok("http://xray-env:1", SOURCE_ENV_XRAY)
        );
        assert_eq!(
            xray(None, &all[1..], "us-east-1"),
            ok("http://all-env:2", SOURCE_ENV_ALL)
        );
        assert_eq!(
            xray(None, &all[2..], "us-east-1"),
            ok("https://xray.us-east-1.amazonaws.com", SOURCE_REGION)
        );
    }

    #[test]
    fn sts_precedence_order() {
        let all = [
            (SOURCE_ENV_STS, "http://sts-env:3"),
            (SOURCE_ENV_ALL, "http://all-env:2"),
            (SOURCE_ENV_XRAY, "http://xray-env:1"),
        ];
        assert_eq!(
            sts(&all, "us-east-1"),
            ok("http://sts-env:3", SOURCE_ENV_STS)
        );
        assert_eq!(
            sts(&all[1..], "us-east-1"),
            ok("http://all-env:2", SOURCE_ENV_ALL)
        );
        assert_eq!(
            sts(&all[2..], "eu-west-1"),
            ok("https://sts.eu-west-1.amazonaws.com", SOURCE_REGION)
        );
        assert_eq!(
            resolve_sts_endpoint(&no_env, "us-gov-west-1"),
            ok("https://sts.us-gov-west-1.amazonaws.com", SOURCE_REGION)
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        for empty in ["", " ", "\t\n"] {
            let pairs = [(SOURCE_ENV_XRAY, empty), (SOURCE_ENV_ALL, "http://all-env")];
            assert_eq!(
                xray(Some(empty), &pairs, "us-east-1"),
                ok("http://all-env", SOURCE_ENV_ALL)
            );
            let pairs = [(SOURCE_ENV_XRAY, empty), (SOURCE_ENV_ALL, empty)];
            assert_eq!(
                xray(Some(empty), &pairs, "us-east-1"),
                ok("https://xray.us-east-1.amazonaws.com", SOURCE_REGION)
            );
            let pairs = [(SOURCE_ENV_STS, empty), (SOURCE_ENV_ALL, "http://all-env")];
            assert_eq!(
                sts(&pairs, "us-east-1"),
                ok("http://all-env", SOURCE_ENV_ALL)
            );
            let pairs = [(SOURCE_ENV_STS, empty), (SOURCE_ENV_ALL, empty)];
            assert_eq!(
                sts(&pairs, "us-east-1"),
                ok("https://sts.us-east-1.amazonaws.com", SOURCE_REGION)
            );
        }
    }

    #[test]
    fn override_does_not_need_a_region() {
        assert_eq!(
            xray(Some("http://127.0.0.1:4566"), &[], ""),
            ok("http://127.0.0.1:4566", SOURCE_FLAG_OR_CONFIG)
        );
        assert_eq!(
            sts(&[(SOURCE_ENV_ALL, "http://127.0.0.1:4566/")], ""),
            ok("http://127.0.0.1:4566", SOURCE_ENV_ALL)
        );
    }

    #[test]
    fn first_set_override_wins_even_if_invalid() {
        // A broken higher-priority value is an error, not silently skipped.
        let pairs = [(SOURCE_ENV_XRAY, "ftp://x"), (SOURCE_ENV_ALL, "http://ok")];
        assert!(matches!(
            xray(None, &pairs, "us-east-1"),
            Err(EndpointError::InvalidEndpointUrl {
                setting: SOURCE_ENV_XRAY,
                ..
            })
        ));
        assert!(matches!(
            xray(Some("nope"), &pairs, "us-east-1"),
            Err(EndpointError::InvalidEndpointUrl {
                setting: SOURCE_FLAG_OR_CONFIG,
                ..
            })
        ));
        let pairs = [(SOURCE_ENV_STS, "http://"), (SOURCE_ENV_ALL, "http://ok")];
        assert!(matches!(
            sts(&pairs, "us-east-1"),
            Err(EndpointError::InvalidEndpointUrl {
                setting: SOURCE_ENV_STS,
                ..
            })
        ));
    }

    // ---- FIPS / dual-stack flags ----

    #[test]
    fn fips_flag_values() {
        for on in ["true", "TRUE", "True", " true\n"] {
            assert_eq!(
                xray(None, &[(ENV_USE_FIPS, on)], "us-east-1"),
                ok("https://xray-fips.us-east-1.amazonaws.com", SOURCE_REGION),
                "{on:?}"
            );
        }
        for off in ["", "false", "FALSE", "1", "yes", "on", "truee"] {
            assert_eq!(
                xray(None, &[(ENV_USE_FIPS, off)], "us-east-1"),
                ok("https://xray.us-east-1.amazonaws.com", SOURCE_REGION),
                "{off:?}"
            );
        }
    }

    #[test]
    fn dual_stack_flag_values() {
        for on in ["true", "TrUe"] {
            assert_eq!(
                xray(None, &[(ENV_USE_DUALSTACK, on)], "eu-west-1"),
                ok("https://xray.eu-west-1.api.aws", SOURCE_REGION)
            );
        }
        assert_eq!(
            xray(None, &[(ENV_USE_DUALSTACK, "false")], "eu-west-1"),
            ok("https://xray.eu-west-1.amazonaws.com", SOURCE_REGION)
        );
    }

    #[test]
    fn fips_and_dual_stack_together() {
        let flags = [(ENV_USE_FIPS, "true"), (ENV_USE_DUALSTACK, "true")];
        assert_eq!(
            xray(None, &flags, "us-gov-west-1"),
            ok("https://xray-fips.us-gov-west-1.api.aws", SOURCE_REGION)
        );
        assert_eq!(
            sts(&flags, "us-east-2"),
            ok("https://sts-fips.us-east-2.api.aws", SOURCE_REGION)
        );
    }

    #[test]
    fn flags_errors_surface_through_resolvers() {
        assert!(matches!(
            xray(None, &[(ENV_USE_FIPS, "true")], "eu-west-1"),
            Err(EndpointError::FipsUnavailable { .. })
        ));
        assert!(matches!(
            sts(&[(ENV_USE_FIPS, "true")], "ap-south-1"),
            Err(EndpointError::FipsUnavailable { .. })
        ));
        assert!(matches!(
            xray(None, &[(ENV_USE_DUALSTACK, "true")], "us-isob-east-1"),
            Err(EndpointError::DualStackUnavailable {
                partition: "aws-iso-b",
                ..
            })
        ));
        assert!(matches!(
            sts(&[(ENV_USE_DUALSTACK, "true")], "us-iso-east-1"),
            Err(EndpointError::DualStackUnavailable {
                partition: "aws-iso",
                ..
            })
        ));
    }

    #[test]
    fn overrides_ignore_fips_and_dual_stack() {
        let pairs = [
            (ENV_USE_FIPS, "true"),
            (ENV_USE_DUALSTACK, "true"),
            (SOURCE_ENV_ALL, "https://vpce.example.com"),
        ];
        // Even where FIPS/dual-stack would be an error for the built endpoint.
        assert_eq!(
            xray(None, &pairs, "us-iso-east-1"),
            ok("https://vpce.example.com", SOURCE_ENV_ALL)
        );
        assert_eq!(
            sts(&pairs, "eu-west-1"),
            ok("https://vpce.example.com", SOURCE_ENV_ALL)
        );
    }

    #[test]
    fn env_lookup_only_asks_known_names() {
        let asked = std::cell::RefCell::new(Vec::new());
        let env = |name: &str| {
            asked.borrow_mut().push(name.to_owned());
            None
        };
        resolve_xray_endpoint(None, &env, "us-east-1").unwrap();
        resolve_sts_endpoint(&env, "us-east-1").unwrap();
        let asked = asked.into_inner();
        for name in &asked {
            assert!(
                [
                    SOURCE_ENV_XRAY,
                    SOURCE_ENV_STS,
                    SOURCE_ENV_ALL,
                    ENV_USE_FIPS,
                    ENV_USE_DUALSTACK
                ]
                .contains(&name.as_str()),
                "{name}"
            );
        }
        assert!(asked.iter().any(|n| n == SOURCE_ENV_XRAY));
        assert!(asked.iter().any(|n| n == SOURCE_ENV_STS));
    }

    // ---- override URL validation ----

    #[test]
    fn good_urls_normalised() {
        let cases = [
            ("http://localhost:4566", "http://localhost:4566"),
            ("http://localhost:4566/", "http://localhost:4566"),
            ("http://localhost:4566///", "http://localhost:4566"),
            ("https://example.com", "https://example.com"),
            ("HTTPS://Example.COM:443/", "https://Example.COM:443"),
            ("Http://127.0.0.1:2000", "http://127.0.0.1:2000"),
            ("http://[::1]:4566/", "http://[::1]:4566"),
            ("http://[fd00:ec2::23]", "http://[fd00:ec2::23]"),
            (
                "http://[::ffff:127.0.0.1]:80",
                "http://[::ffff:127.0.0.1]:80",
            ),
            ("http://my_service:8080", "http://my_service:8080"),
            (
                "https://proxy.example/base/xray/",
                "https://proxy.example/base/xray",
            ),
            (
                "https://proxy.example/a%20b/",
                "https://proxy.example/a%20b",
            ),
            ("https://h/a:b@c;d=e,f~g", "https://h/a:b@c;d=e,f~g"),
            ("  http://host:1 \n", "http://host:1"),
            ("http://host:65535", "http://host:65535"),
            (
                "https://vpce-0123-abcd.xray.us-east-1.vpce.amazonaws.com",
                "https://vpce-0123-abcd.xray.us-east-1.vpce.amazonaws.com",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(url_ok(input), expected, "{input:?}");
        }
    }

    #[test]
    fn bad_urls_rejected_with_reason() {
        let cases = [
            ("localhost:4566", "no scheme"),
            ("xray.us-east-1.amazonaws.com", "no scheme"),
            ("//host", "no scheme"),
            ("ftp://host", "scheme"),
            ("unix://host", "scheme"),
            ("://host", "scheme"),
            ("http://", "no host"),
            ("http:///path", "no host"),
            ("http://:4566", "no host"),
            ("http://host?x=1", "query"),
            ("http://host/?", "query"),
            ("http://host#frag", "fragment"),
            ("http://host/p#", "fragment"),
            ("http://user:secret@host", "user info"),
            ("http://@host", "user info"),
            ("http://host:", "port"),
            ("http://host:abc", "port"),
            ("http://host:-1", "port"),
            ("http://host:0", "port"),
            ("http://host:65536", "port"),
            ("http://host:99999999999999999999", "port"),
            ("http://host:1:2", "port"),
            ("http://ho st", "host"),
            ("http://host\\evil.example", "host"),
            ("http://évil.example", "host"),
            ("http://a..b", "empty label"),
            ("http://.host", "empty label"),
            ("http://host.", "empty label"),
            ("http://[::1", "`]`"),
            ("http://[]", "IPv6"),
            ("http://[zz::1]", "IPv6"),
            ("http://[127.0.0.1]", "IPv6"),
            ("http://[::1]x", "after the IPv6"),
            ("http://[::1]:", "port"),
            ("http://host/pa th", "path"),
            ("http://host/a\\b", "path"),
            ("http://host/%zz", "%"),
            ("http://host/%4", "%"),
            ("http://host/é", "path"),
            ("http://host/a\u{0}b", "path"),
            ("http://host/{x}", "path"),
        ];
        for (input, expected) in cases {
            let problem = url_problem(input);
            assert!(
                problem.contains(expected),
                "{input:?}: {problem:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn url_errors_name_the_setting() {
        let flag_msg = xray(Some("ftp://x"), &[], "us-east-1")
            .unwrap_err()
            .to_string();
        assert!(flag_msg.contains("--endpoint"), "{flag_msg}");
        assert!(flag_msg.contains("`Endpoint`"), "{flag_msg}");
        assert!(flag_msg.contains("ftp://x"), "{flag_msg}");
        assert!(flag_msg.contains("http://"), "{flag_msg}");
        for (var, resolve) in [
            (
                SOURCE_ENV_XRAY,
                &(|e: &[(&str, &str)]| xray(None, e, "us-east-1"))
                    as &dyn Fn(&[(&str, &str)]) -> Result<ResolvedEndpoint, EndpointError>,
            ),
            (SOURCE_ENV_ALL, &|e: &[(&str, &str)]| {
                xray(None, e, "us-east-1")
            }),
            (SOURCE_ENV_STS, &|e: &[(&str, &str)]| sts(e, "us-east-1")),
            (SOURCE_ENV_ALL, &|e: &[(&str, &str)]| sts(e, "us-east-1")),
        ] {
            let msg = resolve(&[(var, "http://host?x")]).unwrap_err().to_string();
            assert!(msg.starts_with(var), "{msg}");
            assert!(msg.contains("query"), "{msg}");
        }
    }

    #[test]
    fn url_errors_redact_user_info() {
        for value in [
            "http://AKIAXXXX:s3cr3t@host/",
            "ftp://AKIAXXXX:s3cr3t@host",
            "AKIAXXXX:s3cr3t@host",
            "http://AKIAXXXX:s3cr3t@host?q",
        ] {
            let err = xray(Some(value), &[], "us-east-1").unwrap_err();
            let msg = err.to_string();
            let debug = format!("{err:?}");
            assert!(!msg.contains("s3cr3t") && !msg.contains("AKIA"), "{msg}");
            assert!(!debug.contains("s3cr3t"), "{debug}");
            assert!(msg.contains("***@host"), "{msg}");
        }
    }

    #[test]
    fn url_errors_escape_control_characters() {
        let msg = xray(Some("http://host/\r\nX-Injected: 1"), &[], "us-east-1")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains('\r') && !msg.contains('\n'), "{msg}");
    }

    // ---- errors ----

    #[test]
    fn every_error_displays_a_fix() {
        let errors = [
            EndpointError::MissingRegion,
            validate_region("US").unwrap_err(),
            service_endpoint("X", "us-east-1", false, false).unwrap_err(),
            service_endpoint("xray", "eu-west-1", true, false).unwrap_err(),
            service_endpoint("xray", "us-iso-east-1", false, true).unwrap_err(),
            xray(Some("ftp://x"), &[], "us-east-1").unwrap_err(),
        ];
        for err in errors {
            let msg = err.to_string();
            assert!(
                ["set ", "use ", "unset ", "write it"]
                    .iter()
                    .any(|fix| msg.contains(fix)),
                "{msg}"
            );
            let dyn_err: &dyn std::error::Error = &err;
            assert!(dyn_err.source().is_none());
        }
    }

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<T: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<EndpointError>();
        let boxed: Box<dyn std::error::Error + Send + Sync> =
            Box::new(EndpointError::MissingRegion);
        assert!(!boxed.to_string().is_empty());
    }

    // ---- robustness ----

    /// Tiny deterministic generator, so the "never panics" test needs no extra crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        const ALPHABET: &[&str] = &[
            "a", "z", "0", "9", "-", ".", ":", "/", "[", "]", "@", "?", "#", "%", " ", "\\", "\n",
            "\u{0}", "é", "€", "😀", "http", "https", "://", "us-", "gov-", "iso", "fips", "A",
            "_", "[::1]", "%4", "65536",
        ];
        let mut rng = Lcg(0x5eed);
        for _ in 0..20_000 {
            let len = (rng.next() % 12) as usize;
            let s: String = (0..len)
                .map(|_| ALPHABET[(rng.next() as usize) % ALPHABET.len()])
                .collect();
            let flags = [
                (ENV_USE_FIPS, "true"),
                (
                    ENV_USE_DUALSTACK,
                    if rng.next() & 1 == 0 { "true" } else { "" },
                ),
            ];
            let _ = Partition::for_region(&s);
            let _ = validate_region(&s);
            let _ = service_endpoint(&s, "us-east-1", false, false);
            let _ = service_endpoint("xray", &s, true, true);
            let _ = xray(Some(&s), &[], &s).map_err(|e| e.to_string());
            let _ = xray(None, &[(SOURCE_ENV_XRAY, &s)], "us-east-1").map_err(|e| e.to_string());
            let _ = xray(None, &flags, &s).map_err(|e| e.to_string());
            let _ = sts(&[(SOURCE_ENV_ALL, &s)], &s).map_err(|e| e.to_string());
            // Whatever is accepted is a clean URL: no trailing slash, no query, no blanks.
            if let Ok(r) = xray(Some(&s), &[], "us-east-1") {
                assert!(!r.url.ends_with('/'), "{s:?} -> {}", r.url);
                assert!(r.url.starts_with("http://") || r.url.starts_with("https://"));
                assert!(
                    !r.url.contains(['?', '#', '@', ' ', '\n', '\\']),
                    "{}",
                    r.url
                );
            }
            // A built endpoint never escapes the partition's domain.
            if let Ok(url) = service_endpoint("xray", &s, false, false) {
                let p = Partition::for_region(&s);
                assert_eq!(url, format!("https://xray.{s}.{}", p.dns_suffix));
            }
        }
    }

    #[test]
    fn sso_portal_and_oidc_endpoints() {
        let none = env_of(&[]);
        let e = resolve_sso_portal_endpoint(&none, "eu-west-1").unwrap();
        assert_eq!(e.url, "https://portal.sso.eu-west-1.amazonaws.com");
        assert_eq!(e.source, SOURCE_REGION);
        let e = resolve_sso_oidc_endpoint(&none, "cn-north-1").unwrap();
        assert_eq!(e.url, "https://oidc.cn-north-1.amazonaws.com.cn");
        let all = env_of(&[(SOURCE_ENV_ALL, "http://127.0.0.1:4566/")]);
        let e = resolve_sso_portal_endpoint(&all, "eu-west-1").unwrap();
        assert_eq!(
            (e.url.as_str(), e.source),
            ("http://127.0.0.1:4566", SOURCE_ENV_ALL)
        );
        let both = env_of(&[
            (SOURCE_ENV_ALL, "http://127.0.0.1:1"),
            (SOURCE_ENV_SSO, "http://127.0.0.1:2"),
            (SOURCE_ENV_SSO_OIDC, "http://127.0.0.1:3"),
        ]);
        assert_eq!(
            resolve_sso_portal_endpoint(&both, "x").unwrap().url,
            "http://127.0.0.1:2"
        );
        assert_eq!(
            resolve_sso_oidc_endpoint(&both, "x").unwrap().url,
            "http://127.0.0.1:3"
        );
        assert!(resolve_sso_portal_endpoint(&none, "eu-west-1.evil.example/").is_err());
    }
}
