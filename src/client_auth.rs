//! How `redstore import` and `redstore bench` prove who they are to a server: an access token
//! given to them (an admin signed in through AuthService), or, on the server's machine, the
//! deployment's signing key, with which they make their own tokens (whoever can read that key
//! can anyway).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use redstore_platform::access_token::{Bearer, Claims, KEY_FILE, Role, SigningKey, TokenKeys};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::edge::Secret;

/// A connection whose calls carry an access token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// How long the tokens a command makes last: longer than any import or benchmark.
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone, Debug, clap::Args)]
pub struct ClientAuth {
    /// The access token to call with (an admin's, from AuthService/VerifyCode).
    #[arg(long, env = "REDSTORE_ACCESS_TOKEN", hide_env_values = true, value_parser = secret)]
    pub access_token: Option<Secret>,
    /// Without an access token: the deployment's signing key (PEM), with which this command makes
    /// its own tokens.
    #[arg(long, env = "REDSTORE_AUTH_SIGNING_KEY_FILE")]
    pub auth_signing_key_file: Option<PathBuf>,
    /// Without either: the data directory of the server on this machine, whose signing key is used.
    #[arg(long, env = "REDSTORE_DATA_DIR", default_value = "./redstore-data")]
    pub data_dir: PathBuf,
}

fn secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret(value.to_owned()))
}

impl Default for ClientAuth {
    fn default() -> Self {
        Self { access_token: None, auth_signing_key_file: None, data_dir: PathBuf::from("./redstore-data") }
    }
}

impl ClientAuth {
    /// The deployment's keys, when this command has them: the key file, or the data directory's
    /// key if there is one (never made here).
    pub fn keys(&self) -> anyhow::Result<Option<TokenKeys>> {
        let path = match &self.auth_signing_key_file {
            Some(path) => path.clone(),
            None => {
                let path = self.data_dir.join(KEY_FILE);
                if !path.exists() {
                    return Ok(None);
                }
                path
            }
        };
        let pem = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let key = SigningKey::from_pem(&pem).with_context(|| format!("the signing key {}", path.display()))?;
        Ok(Some(TokenKeys::new(key, [])))
    }

    /// An admin's token for `who`, to send with every call.
    pub fn admin(&self, who: &str) -> anyhow::Result<Bearer> {
        Bearer::new(&self.admin_token(who)?)
    }

    /// An admin's token for `who`: the access token given, or one made with the keys.
    pub fn admin_token(&self, who: &str) -> anyhow::Result<String> {
        if let Some(Secret(token)) = &self.access_token {
            return Ok(token.trim().to_owned());
        }
        match self.keys()? {
            Some(keys) => Ok(keys.admin_token(who, TOKEN_TTL)),
            None => anyhow::bail!(
                "no access token: give --access-token (REDSTORE_ACCESS_TOKEN; sign in as an admin with \
                 AuthService), or --auth-signing-key-file, or --data-dir of the server on this machine"
            ),
        }
    }
}

/// The token of a cashier signed in at `terminal_id` of `store_id`, made with `keys`.
pub fn cashier_token(keys: &TokenKeys, store_id: &str, terminal_id: &str) -> String {
    let sub = format!("cashier-at-{store_id}-{terminal_id}");
    keys.issue(&Claims::without_session(&sub, Role::Cashier, Some(store_id), Some(terminal_id), TOKEN_TTL))
}

/// Connects to `target`, sending `bearer` with every call.
pub async fn connect(target: &str, bearer: Bearer) -> anyhow::Result<Authed> {
    let channel = Endpoint::from_shared(target.to_owned())
        .with_context(|| format!("{target:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {target}; is the server running?"))?;
    Ok(InterceptedService::new(channel, bearer))
}
