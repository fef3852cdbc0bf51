//! Sign-in settings of `redstore up` and `serve`: the keys that sign and verify access tokens,
//! how long tokens and sessions last, and where one-time codes go.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use redstore_auth::domain::Policy;
use redstore_auth::{CodeSender, LogSender};
use redstore_platform::access_token::{SigningKey, TokenKeys, VerifyingKey};

/// Flags of sign-in.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthOptions {
    /// The Ed25519 private key (PEM, `openssl genpkey -algorithm ed25519`) that signs access
    /// tokens; every process of a deployment is given the same. Without it, the key in the data
    /// directory (`auth-signing-key.pem`, made on first start) is used.
    #[arg(long, env = "REDSTORE_AUTH_SIGNING_KEY_FILE")]
    pub auth_signing_key_file: Option<PathBuf>,
    /// A key that signed tokens before the current one (PEM, public or private): its tokens stay
    /// valid until they expire. Repeat, or separate with commas.
    #[arg(long = "auth-retired-key-file", env = "REDSTORE_AUTH_RETIRED_KEY_FILES", value_delimiter = ',')]
    pub auth_retired_key_files: Vec<PathBuf>,
    /// How long an access token lasts; a terminal refreshes it before then.
    #[arg(long, env = "REDSTORE_AUTH_ACCESS_TTL", default_value = "15m", value_parser = duration_within(Duration::from_secs(30), Duration::from_secs(3600)))]
    pub auth_access_ttl: Duration,
    /// How long a session lasts from sign-in (a shift); then its staff member signs in again.
    #[arg(long, env = "REDSTORE_AUTH_SESSION_TTL", default_value = "12h", value_parser = duration_within(Duration::from_secs(300), Duration::from_secs(7 * 86_400)))]
    pub auth_session_ttl: Duration,
    /// How long a terminal nobody uses stays unlocked: then its PIN screen shows, and a PIN
    /// (UnlockTerminal) opens it again. `0s` never locks.
    #[arg(long, env = "REDSTORE_AUTH_IDLE_LOCK", default_value = "5m", value_parser = zero_or_within(Duration::from_secs(1), Duration::from_secs(12 * 3600)))]
    pub auth_idle_lock: Duration,
}

impl Default for AuthOptions {
    fn default() -> Self {
        let policy = Policy::default();
        Self {
            auth_signing_key_file: None,
            auth_retired_key_files: Vec::new(),
            auth_access_ttl: policy.access_ttl,
            auth_session_ttl: policy.session_ttl,
            auth_idle_lock: policy.idle_lock,
        }
    }
}

fn duration_within(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |value| {
        let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
        if d < min || d > max {
            return Err(format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(d)
    }
}

fn zero_or_within(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    let within = duration_within(min, max);
    move |value| match humantime::parse_duration(value) {
        Ok(d) if d.is_zero() => Ok(d),
        _ => within(value).map_err(|e| format!("{e} (or 0s: never)")),
    }
}

impl AuthOptions {
    /// The token keys: the configured signing key, or the data directory's; and the retired ones.
    pub fn token_keys(&self, data_dir: &Path) -> anyhow::Result<TokenKeys> {
        let retired = self
            .auth_retired_key_files
            .iter()
            .map(|path| {
                let text = read(path, "--auth-retired-key-file")?;
                VerifyingKey::from_pem(&text).with_context(|| format!("--auth-retired-key-file {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        match &self.auth_signing_key_file {
            Some(path) => {
                let text = read(path, "--auth-signing-key-file")?;
                let signing = SigningKey::from_pem(&text)
                    .with_context(|| format!("--auth-signing-key-file {}", path.display()))?;
                Ok(TokenKeys::new(signing, retired))
            }
            None => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
                TokenKeys::in_dir(data_dir, retired)
            }
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            access_ttl: self.auth_access_ttl,
            session_ttl: self.auth_session_ttl,
            idle_lock: self.auth_idle_lock,
            ..Policy::default()
        }
    }
}

fn read(path: &Path, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

/// Where one-time codes go: the development sender (the log) unless a program embedding the
/// server gives its own.
#[derive(Clone)]
pub struct Sender(pub Arc<dyn CodeSender>);

impl Default for Sender {
    fn default() -> Self {
        Self(Arc::new(LogSender))
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sender")
    }
}
