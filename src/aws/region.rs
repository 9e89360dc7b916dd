//! The region steps after the flag / config / `AWS_REGION` / `AWS_DEFAULT_REGION`: the profile's
//! `region`, then (not in local mode) the ECS container metadata file and IMDS
//! `placement/region`.

use std::time::Duration;

use simd_json::prelude::*;

use super::imds::{self, ImdsClient};
use super::profile::{ProfileSet, selected_profile};

pub const ENV_ECS_METADATA_ENABLED: &str = "ECS_ENABLE_CONTAINER_METADATA";
pub const ENV_ECS_METADATA_FILE: &str = "ECS_CONTAINER_METADATA_FILE";

/// `resolve_region_extra`'s source names.
pub const SOURCE_PROFILE: &str = "profile region";
pub const SOURCE_ECS_METADATA: &str = "ECS container metadata file";
pub const SOURCE_IMDS: &str = "EC2 instance metadata";

/// What the extra region steps found, and what each step that found nothing said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionLookup {
    /// The region and its source (one of the `SOURCE_*` constants).
    pub region: Option<(String, &'static str)>,
    /// One entry per step tried without success: where it looked and why it found nothing.
    pub tried: Vec<String>,
}

/// The profile region, then (unless `local_mode`) the ECS metadata file, then IMDS; first hit
/// wins. Returns the region and its source.
pub fn resolve_region_extra(
    env: &dyn Fn(&str) -> Option<String>,
    local_mode: bool,
) -> Option<(String, &'static str)> {
    lookup_region_extra(env, local_mode).region
}

/// As [`resolve_region_extra`], also saying what was tried, for an error message when nothing
/// is found.
pub fn lookup_region_extra(env: &dyn Fn(&str) -> Option<String>, local_mode: bool) -> RegionLookup {
    lookup_region_extra_with(env, local_mode, imds::DEFAULT_TIMEOUT)
}

/// As [`lookup_region_extra`] with a chosen IMDS timeout.
pub fn lookup_region_extra_with(
    env: &dyn Fn(&str) -> Option<String>,
    local_mode: bool,
    imds_timeout: Duration,
) -> RegionLookup {
    let mut out = RegionLookup::default();
    let profiles = ProfileSet::load(env);
    let (profile, _) = selected_profile(env);
    match profiles.value(&profile, "region") {
        Some(r) => {
            out.region = Some((r.to_string(), SOURCE_PROFILE));
            return out;
        }
        None => out.tried.push(format!(
            "region of profile `{profile}` in {}: not set",
            profiles.files()
        )),
    }
    if local_mode {
        out.tried.push(
            "ECS metadata file and EC2 instance metadata: skipped in local mode (-o)".to_string(),
        );
        return out;
    }
    match ecs_metadata_region(env) {
        Ok(r) => {
            out.region = Some((r, SOURCE_ECS_METADATA));
            return out;
        }
        Err(why) => out.tried.push(why),
    }
    match ImdsClient::from_env(env, imds_timeout) {
        Ok(Some(client)) => match client.region() {
            Ok(r) => {
                out.region = Some((r, SOURCE_IMDS));
                return out;
            }
            Err(e) => out.tried.push(e),
        },
        Ok(None) => out.tried.push(format!(
            "EC2 instance metadata: disabled by {}",
            imds::ENV_DISABLED
        )),
        Err(e) => out.tried.push(e.0),
    }
    out
}

/// The region in the ECS container metadata file (`ECS_ENABLE_CONTAINER_METADATA=true`, file at
/// `ECS_CONTAINER_METADATA_FILE`): the 4th `:` field of its `TaskARN`. Every problem (not enabled,
/// unreadable, not JSON, no `TaskARN`, a malformed ARN) is an error message, never a panic.
pub fn ecs_metadata_region(env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let enabled =
        env(ENV_ECS_METADATA_ENABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !enabled {
        return Err(format!(
            "ECS metadata file: not enabled ({ENV_ECS_METADATA_ENABLED} is not true)"
        ));
    }
    let Some(path) = env(ENV_ECS_METADATA_FILE).filter(|p| !p.trim().is_empty()) else {
        return Err(format!(
            "ECS metadata file: {ENV_ECS_METADATA_FILE} is not set"
        ));
    };
    let mut bytes = std::fs::read(path.trim())
        .map_err(|e| format!("ECS metadata file {}: cannot read it: {e}", path.trim()))?;
    let v = simd_json::to_borrowed_value(&mut bytes)
        .map_err(|_| format!("ECS metadata file {}: not a JSON document", path.trim()))?;
    let arn = v
        .get("TaskARN")
        .and_then(|a| a.as_str())
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            format!(
                "ECS metadata file {}: no TaskARN (the file may not be ready yet)",
                path.trim()
            )
        })?;
    let region = arn.split(':').nth(3).unwrap_or("").trim();
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "ECS metadata file {}: TaskARN {:?} holds no region",
            path.trim(),
            arn.chars().take(120).collect::<String>()
        ));
    }
    Ok(region.to_string())
}
