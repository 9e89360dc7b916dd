//! Hermetic environments: [`Env`], an injected environment for code under test that reads
//! variables through a lookup function, and [`hermetic_command`], which strips a command of the
//! host's AWS settings and proxies so that a child process sees only what the test sets.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// An injected environment: only what the test sets. Profile files point nowhere and IMDS is
/// disabled unless the test sets them.
#[derive(Clone, Default, Debug)]
pub struct Env(pub HashMap<String, String>);

impl Env {
    /// The hermetic base: no HOME, no profile files, IMDS disabled.
    pub fn hermetic() -> Env {
        Env::default()
            .set("AWS_CONFIG_FILE", "/nonexistent/xrayd-test/config")
            .set(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/xrayd-test/credentials",
            )
            .set("AWS_EC2_METADATA_DISABLED", "true")
    }
    pub fn set(mut self, k: &str, v: &str) -> Env {
        self.0.insert(k.to_string(), v.to_string());
        self
    }
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`.
    pub fn web_identity(self, token_file: &Path, role_arn: &str) -> Env {
        self.set(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            &token_file.display().to_string(),
        )
        .set("AWS_ROLE_ARN", role_arn)
    }
    pub fn unset(mut self, k: &str) -> Env {
        self.0.remove(k);
        self
    }
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |k| self.0.get(k).cloned()
    }
    /// Sets these variables on `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in &self.0 {
            cmd.env(k, v);
        }
    }
}

/// Removes the host's AWS configuration and proxies from `cmd`'s environment (which it otherwise
/// inherits), points the profile files nowhere, disables instance metadata and keeps loopback
/// off any proxy, so that only what the test sets is used.
pub fn hermetic_command(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("AWS_") || upper.ends_with("_PROXY") {
            cmd.env_remove(&key);
        }
    }
    Env::hermetic().apply(cmd);
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
}
