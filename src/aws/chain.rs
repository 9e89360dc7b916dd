//! The default credential chain in SDK order, an optional role to assume on top, and the single
//! entry point the daemon calls: [`build_provider`].
//!
//! Order (the first source that is *configured* wins; which one is decided once, at start-up):
//! 1. environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`);
//! 2. shared config / credentials files, profile `AWS_PROFILE` or `default` (static keys,
//!    `credential_process`, `role_arn` + `web_identity_token_file`, IAM Identity Center (SSO)
//!    `sso_session` / legacy `sso_start_url` profiles, `role_arn` + `source_profile` /
//!    `credential_source` chains);
//! 3. web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, IRSA);
//! 4. the container endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` / `_FULL_URI`);
//! 5. EC2 instance metadata (IMDSv2), unless `AWS_EC2_METADATA_DISABLED=true`.
//!
//! Anything that expires is served by a [`CachingProvider`] that refreshes on its own thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cache::{CacheConfig, CachingProvider};
use super::container::{self, ContainerFetch};
use super::credentials::{
    Credentials, CredentialsError, EnvironmentProvider, ProvideCredentials, StaticProvider,
    UnavailableCredentials,
};
use super::endpoint::resolve_sts_endpoint;
use super::fetch::{FetchCredentials, StaticFetch};
use super::imds::{self, ImdsClient, ImdsFetch};
use super::process::{self, ProcessFetch};
use super::profile::{self, BaseSource, NamedSource, ProfilePlan, ProfileSet};
use super::sso::SsoFetch;
use super::sts::{AssumeRoleFetch, RoleSpec, SESSION_NAME, StsClient, WebIdentityFetch};

pub const ENV_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
pub const ENV_ROLE_ARN: &str = "AWS_ROLE_ARN";
pub const ENV_ROLE_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";

/// Timeouts, endpoints and refresh settings of the chain. The defaults are what the daemon uses;
/// tests shorten them and point the container base at a loopback fake (every other endpoint is
/// already overridable through the environment: `AWS_ENDPOINT_URL[_STS]`,
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_CONTAINER_CREDENTIALS_FULL_URI`).
#[derive(Debug, Clone)]
pub struct ChainOptions {
    /// Where `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is resolved (`http://169.254.170.2`).
    pub container_base: String,
    /// Whole-call timeout of STS calls (and of the SSO portal and OIDC calls).
    pub sts_timeout: Duration,
    /// Timeout of each IMDS call.
    pub imds_timeout: Duration,
    /// Timeout of container endpoint calls.
    pub container_timeout: Duration,
    /// How long a `credential_process` may run.
    pub process_timeout: Duration,
    /// Refresh and retry schedule.
    pub cache: CacheConfig,
    /// Where fetches and refreshes are counted (the daemon's stats), if anywhere.
    pub stats: Option<Arc<crate::stats::Stats>>,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            container_base: container::ECS_CONTAINER_BASE.to_string(),
            sts_timeout: Duration::from_secs(10),
            imds_timeout: imds::DEFAULT_TIMEOUT,
            container_timeout: Duration::from_secs(2),
            process_timeout: process::DEFAULT_TIMEOUT,
            cache: CacheConfig::default(),
            stats: None,
        }
    }
}

/// What the chain picked, before caching.
enum Picked {
    /// Never expires: served as is.
    Static(Credentials, &'static str, String),
    /// Fetched (and refreshed) by a caching provider.
    Dynamic(Box<dyn FetchCredentials>, &'static str, String),
    /// Nothing configured: why.
    Nothing(String),
}

/// Builds the STS client on first use (only some sources need it).
struct StsFactory<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    region: &'a str,
    proxy: Option<&'a str>,
    timeout: Duration,
    client: Option<Arc<StsClient>>,
}

impl StsFactory<'_> {
    fn get(&mut self) -> Result<Arc<StsClient>, CredentialsError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoint = resolve_sts_endpoint(self.env, self.region)
            .map_err(|e| CredentialsError(format!("STS endpoint: {e}")))?;
        let no_proxy = (self.env)("NO_PROXY")
            .or_else(|| (self.env)("no_proxy"))
            .filter(|v| !v.trim().is_empty());
        let client = Arc::new(StsClient::new(
            &endpoint.url,
            self.region,
            self.timeout,
            self.proxy,
            no_proxy.as_deref(),
        )?);
        self.client = Some(client.clone());
        Ok(client)
    }
}

/// The daemon's entry point: the default chain, with `role_arn` (`-r` / `RoleARN`) assumed on
/// top (STS `AssumeRole`, session `xray-daemon`, regional STS endpoint for `region`). `proxy` is
/// the outbound proxy for STS (`NO_PROXY` / `no_proxy` honoured); metadata endpoints are always
/// reached directly.
///
/// Returns the provider and a one-line description of the source for the start-up log (never a
/// secret). When nothing is configured, the provider's `source()` is `"none"`, the description is
/// the reason (naming every place looked at; log it as a warning: segments stay buffered) and every
/// `credentials()` call fails with it.
///
/// # Errors
/// A configured source is unusable: `AWS_PROFILE` names an undefined profile, a profile chain is
/// broken, `AWS_CONTAINER_CREDENTIALS_FULL_URI` points at a forbidden host, the STS endpoint
/// cannot be resolved...
pub fn build_provider(
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
    role_arn: Option<&str>,
    proxy: Option<&str>,
) -> Result<(Arc<dyn ProvideCredentials>, String), CredentialsError> {
    build_provider_with(env, region, role_arn, proxy, &ChainOptions::default())
}

/// [`build_provider`] with explicit options.
pub fn build_provider_with(
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
    role_arn: Option<&str>,
    proxy: Option<&str>,
    opts: &ChainOptions,
) -> Result<(Arc<dyn ProvideCredentials>, String), CredentialsError> {
    let mut sts = StsFactory {
        env,
        region,
        proxy: proxy.filter(|p| !p.trim().is_empty()),
        timeout: opts.sts_timeout,
        client: None,
    };
    let picked = default_chain(env, opts, &mut sts)?;
    let role_arn = role_arn.map(str::trim).filter(|r| !r.is_empty());
    let (picked, role_desc): (Picked, Option<(&str, String)>) = match (picked, role_arn) {
        (p, None) => (p, None),
        (Picked::Nothing(why), Some(role)) => (
            Picked::Nothing(format!(
                "cannot assume role {role}: no base credentials: {why}"
            )),
            None,
        ),
        (Picked::Static(c, _, desc), Some(role)) => {
            let client = sts.get()?;
            let url = client.url().to_string();
            let f = AssumeRoleFetch::new(
                client,
                RoleSpec::new(role),
                Box::new(StaticFetch(c)),
                opts.cache.refresh_before_expiry,
            );
            (
                Picked::Dynamic(Box::new(f), "assume-role", desc),
                Some((role, url)),
            )
        }
        (Picked::Dynamic(base, _, desc), Some(role)) => {
            let client = sts.get()?;
            let url = client.url().to_string();
            let f = AssumeRoleFetch::new(
                client,
                RoleSpec::new(role),
                base,
                opts.cache.refresh_before_expiry,
            );
            (
                Picked::Dynamic(Box::new(f), "assume-role", desc),
                Some((role, url)),
            )
        }
    };
    let with_role = |desc: String| match role_desc {
        Some((role, url)) => format!(
            "role {role} (STS AssumeRole at {url}, session {SESSION_NAME}) with base credentials from {desc}"
        ),
        None => desc,
    };
    match picked {
        Picked::Static(c, name, desc) => Ok((Arc::new(StaticProvider::new(c, name)), desc)),
        Picked::Dynamic(fetch, name, desc) => {
            let desc = with_role(desc);
            let provider = CachingProvider::start_counted(
                fetch,
                name,
                desc.clone(),
                opts.cache,
                opts.stats.clone(),
            )?;
            Ok((Arc::new(provider), desc))
        }
        Picked::Nothing(why) => Ok((Arc::new(UnavailableCredentials::new(why.clone())), why)),
    }
}

fn default_chain(
    env: &dyn Fn(&str) -> Option<String>,
    opts: &ChainOptions,
    sts: &mut StsFactory<'_>,
) -> Result<Picked, CredentialsError> {
    let get = |k: &str| {
        env(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut looked = Vec::new();

    // 1. Environment.
    if let Some(p) = EnvironmentProvider::from_env(env) {
        let c = p.credentials()?;
        return Ok(Picked::Static(
            c,
            "environment",
            "the environment (AWS_ACCESS_KEY_ID)".to_string(),
        ));
    }
    if get("AWS_ACCESS_KEY_ID").is_some() {
        crate::warn!(
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: ignoring the environment credentials"
        );
    }
    looked.push("the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)".to_string());

    // 2. Shared files.
    let set = ProfileSet::load(env);
    let (profile_name, explicit) = profile::selected_profile(env);
    match profile::plan(&set, &profile_name)? {
        Some(plan) => return from_plan(&plan, env, opts, sts),
        None if explicit && set.get(&profile_name).is_none() => {
            return Err(CredentialsError(format!(
                "AWS_PROFILE names profile `{profile_name}`, which is not defined in {}",
                set.files()
            )));
        }
        None => looked.push(format!(
            "profile `{profile_name}` in {} (no credentials there)",
            set.files()
        )),
    }

    // 3. Web identity (IRSA).
    match (get(ENV_WEB_IDENTITY_TOKEN_FILE), get(ENV_ROLE_ARN)) {
        (Some(file), Some(role_arn)) => {
            let session_name = get(ENV_ROLE_SESSION_NAME).unwrap_or_else(|| SESSION_NAME.into());
            let client = sts.get()?;
            let desc = format!(
                "web identity token file {file} for role {role_arn} (STS AssumeRoleWithWebIdentity at {})",
                client.url()
            );
            let f = WebIdentityFetch {
                sts: client,
                role_arn,
                session_name,
                token_file: PathBuf::from(file),
            };
            return Ok(Picked::Dynamic(Box::new(f), "web-identity", desc));
        }
        (Some(_), None) => {
            return Err(CredentialsError(format!(
                "{ENV_WEB_IDENTITY_TOKEN_FILE} is set but {ENV_ROLE_ARN} is not; set the role to assume"
            )));
        }
        _ => looked.push(format!(
            "web identity ({ENV_WEB_IDENTITY_TOKEN_FILE} + {ENV_ROLE_ARN})"
        )),
    }

    // 4. Container endpoint.
    if let Some(f) = ContainerFetch::from_env(env, &opts.container_base, opts.container_timeout)? {
        let desc = f.description().to_string();
        return Ok(Picked::Dynamic(Box::new(f), "container", desc));
    }
    looked.push(format!(
        "the container endpoint ({} / {})",
        container::ENV_RELATIVE_URI,
        container::ENV_FULL_URI
    ));

    // 5. IMDSv2.
    match ImdsClient::from_env(env, opts.imds_timeout)? {
        Some(client) => {
            let desc = format!("EC2 instance metadata (IMDSv2 at {})", client.endpoint());
            Ok(Picked::Dynamic(Box::new(ImdsFetch(client)), "imds", desc))
        }
        None => {
            looked.push(format!(
                "EC2 instance metadata (disabled by {}=true)",
                imds::ENV_DISABLED
            ));
            Ok(Picked::Nothing(format!(
                "No AWS credentials found; looked at {}",
                looked.join(", ")
            )))
        }
    }
}

fn from_plan(
    plan: &ProfilePlan,
    env: &dyn Fn(&str) -> Option<String>,
    opts: &ChainOptions,
    sts: &mut StsFactory<'_>,
) -> Result<Picked, CredentialsError> {
    let mut desc = plan.describe();
    let base: Box<dyn FetchCredentials> = match &plan.base {
        BaseSource::Sso(spec) => {
            let f = SsoFetch::new(spec, env, opts.sts_timeout, sts.proxy)?;
            desc = format!(
                "{desc} (token cache {}, portal {})",
                f.cache_path().display(),
                f.portal_url()
            );
            Box::new(f)
        }
        BaseSource::Static(c) if plan.chain.is_empty() => {
            return Ok(Picked::Static(c.clone(), "profile", desc));
        }
        BaseSource::Static(c) => Box::new(StaticFetch(c.clone())),
        BaseSource::WebIdentity {
            role_arn,
            token_file,
            session_name,
        } => Box::new(WebIdentityFetch {
            sts: sts.get()?,
            role_arn: role_arn.clone(),
            session_name: session_name.clone(),
            token_file: token_file.clone(),
        }),
        BaseSource::Process(cmd) => Box::new(ProcessFetch::new(
            &cmd.0,
            &plan.base_profile,
            opts.process_timeout,
        )),
        BaseSource::Named(NamedSource::Environment) => match EnvironmentProvider::from_env(env) {
            Some(p) => Box::new(StaticFetch(p.credentials()?)),
            None => {
                return Err(CredentialsError(format!(
                    "profile `{}` has credential_source Environment, but AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set",
                    plan.base_profile
                )));
            }
        },
        BaseSource::Named(NamedSource::Ec2InstanceMetadata) => {
            let client = ImdsClient::new(&imds::endpoint_from_env(env), opts.imds_timeout)?;
            Box::new(ImdsFetch(client))
        }
        BaseSource::Named(NamedSource::EcsContainer) => {
            match ContainerFetch::from_env(env, &opts.container_base, opts.container_timeout)? {
                Some(f) => Box::new(f),
                None => {
                    return Err(CredentialsError(format!(
                        "profile `{}` has credential_source EcsContainer, but neither {} nor {} is set",
                        plan.base_profile,
                        container::ENV_RELATIVE_URI,
                        container::ENV_FULL_URI
                    )));
                }
            }
        }
    };
    let mut fetch = base;
    for role in &plan.chain {
        fetch = Box::new(AssumeRoleFetch::new(
            sts.get()?,
            role.clone(),
            fetch,
            opts.cache.refresh_before_expiry,
        ));
    }
    Ok(Picked::Dynamic(fetch, "profile", desc))
}
