//! Signed access tokens: who calls (a staff member, their role, the store they act in, the
//! terminal they signed in on) and until when. Ed25519 signatures (JWT `EdDSA`, `jsonwebtoken`
//! over aws-lc-rs): any process holding the verifying keys checks a token without a database
//! read. One key signs; the verifying keys of earlier ones are kept, so tokens they signed stay
//! valid until they expire (rotation). Key material never appears in `Debug` output.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// What a staff member may do, each role all that the one before it may and more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Scans, carts and checkouts at their own terminal.
    Cashier,
    /// + refunds and overrides.
    Supervisor,
    /// + stock adjustments, the store's terminals and staff, reports and the audit log.
    Manager,
    /// Every store, the catalog, the stores themselves.
    Admin,
}

impl Role {
    /// The role's name, as stored and as tokens carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cashier => "cashier",
            Self::Supervisor => "supervisor",
            Self::Manager => "manager",
            Self::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Cashier, Self::Supervisor, Self::Manager, Self::Admin].into_iter().find(|role| role.as_str() == name)
    }
}

/// The scope of a stream ticket: it opens one store's live stream and nothing else.
pub const STREAM_SCOPE: &str = "stream";

/// What a token says of its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The staff member.
    pub sub: String,
    pub role: Role,
    /// The one store the bearer acts in; none only for an admin, who acts in every store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The registered terminal the bearer signed in on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Issued and expiring, in seconds since the Unix epoch.
    pub iat: u64,
    pub exp: u64,
    /// The token's own id.
    pub jti: String,
    /// The sign-in session the token belongs to: what signing out (or revoking the staff member
    /// or the terminal) ends.
    #[serde(default)]
    pub sid: String,
    /// What the token is good for beyond an access token: `stream` for a stream ticket, which
    /// opens one store's live stream and nothing else. Access tokens have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Claims {
    /// Whether the token has expired, allowing a few seconds for clocks that differ (as
    /// [`TokenKeys::verify`] does).
    pub fn expired(&self) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.exp + LEEWAY_SECS < now
    }

    /// Whether the bearer may act in `store_id`.
    pub fn acts_in(&self, store_id: &str) -> bool {
        match &self.store {
            Some(store) => store == store_id,
            None => self.role == Role::Admin,
        }
    }
}

/// Why a token is refused. The messages say what is wrong with the token, never its content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the access token is not a token this server issues")]
    Malformed,
    #[error("the access token was signed by a key this server does not know (signed elsewhere, or its key retired)")]
    UnknownKey,
    #[error("the access token's signature does not verify")]
    BadSignature,
    #[error("the access token has expired: sign in again")]
    Expired,
    #[error("the access token names no store and is not an admin's")]
    NoStore,
}

/// Seconds a token may be past its expiry and still pass: clocks of two processes differ a little.
const LEEWAY_SECS: u64 = 5;

/// The key that signs tokens.
pub struct SigningKey {
    id: String,
    pkcs8: Vec<u8>,
    encoding: EncodingKey,
    public: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A key id: the first eight bytes of the SHA-256 of the public key, in hex.
fn key_id(public: &[u8]) -> String {
    sha2::Sha256::digest(public)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> anyhow::Result<Self> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("cannot generate a signing key"))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A key from its PKCS#8 DER.
    fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|_| anyhow::anyhow!("not an Ed25519 private key (PKCS#8)"))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(Self { id: key_id(&public), pkcs8: der.to_vec(), encoding: EncodingKey::from_ed_der(der), public })
    }

    /// A key from a PEM `PRIVATE KEY` (PKCS#8), as `openssl genpkey -algorithm ed25519` writes.
    pub fn from_pem(text: &str) -> anyhow::Result<Self> {
        let block = pem::parse(text).context("not PEM")?;
        anyhow::ensure!(block.tag() == "PRIVATE KEY", "a PEM PRIVATE KEY is needed, not {}", block.tag());
        Self::from_pkcs8(block.contents())
    }

    /// The key as a PEM `PRIVATE KEY`.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// The key that verifies what this one signs.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey { id: self.id.clone(), decoding: DecodingKey::from_ed_der(&self.public) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A key that verifies tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    id: String,
    decoding: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// A key from a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), or the public half of a PEM
    /// `PRIVATE KEY`: a retired key is kept either way.
    pub fn from_pem(text: &str) -> anyhow::Result<Self> {
        let block = pem::parse(text).context("not PEM")?;
        match block.tag() {
            "PRIVATE KEY" => Ok(SigningKey::from_pkcs8(block.contents())?.verifying_key()),
            "PUBLIC KEY" => {
                // An Ed25519 SubjectPublicKeyInfo is a fixed 12-byte prefix and the 32-byte key.
                const PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
                let der = block.contents();
                anyhow::ensure!(der.len() == 44 && der[..12] == PREFIX, "not an Ed25519 public key");
                let public = &der[12..];
                Ok(Self { id: key_id(public), decoding: DecodingKey::from_ed_der(public) })
            }
            other => anyhow::bail!("a PEM PUBLIC KEY or PRIVATE KEY is needed, not {other}"),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The keys of a deployment: the one that signs, and every one that verifies (its own and
/// those of retired keys).
pub struct TokenKeys {
    signing: SigningKey,
    verifying: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.verifying.keys().collect();
        ids.sort();
        f.debug_struct("TokenKeys").field("signing", &self.signing.id).field("verifying", &ids).finish()
    }
}

/// The name of the signing key a data directory keeps when none is configured.
pub const KEY_FILE: &str = "auth-signing-key.pem";

impl TokenKeys {
    pub fn new(signing: SigningKey, retired: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let mut verifying: HashMap<String, DecodingKey> = retired.into_iter().map(|k| (k.id, k.decoding)).collect();
        let own = signing.verifying_key();
        verifying.insert(own.id, own.decoding);
        Self { signing, verifying }
    }

    /// The signing key kept in `dir` ([`KEY_FILE`]), made there (readable by its owner only) the
    /// first time.
    pub fn in_dir(dir: &Path, retired: impl IntoIterator<Item = VerifyingKey>) -> anyhow::Result<Self> {
        let path = dir.join(KEY_FILE);
        let signing = match std::fs::read_to_string(&path) {
            Ok(text) => SigningKey::from_pem(&text).with_context(|| format!("the signing key {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate()?;
                match write_private(&path, &key.to_pem())? {
                    true => key,
                    // Another process starting on the directory made it first: its key is the one.
                    false => SigningKey::from_pem(&std::fs::read_to_string(&path)?)
                        .with_context(|| format!("the signing key {}", path.display()))?,
                }
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read the signing key {}", path.display())),
        };
        Ok(Self::new(signing, retired))
    }

    /// A token of `claims`, signed by the signing key and naming it.
    pub fn issue(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing.id.clone());
        jsonwebtoken::encode(&header, claims, &self.signing.encoding).expect("an Ed25519 key signs any claims")
    }

    /// The claims of a token this deployment signed that has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refused::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(Refused::Malformed);
        }
        let key = header.kid.as_deref().and_then(|kid| self.verifying.get(kid)).ok_or(Refused::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => Refused::Expired,
                ErrorKind::InvalidSignature => Refused::BadSignature,
                _ => Refused::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.store.is_none() && claims.role != Role::Admin {
            return Err(Refused::NoStore);
        }
        Ok(claims)
    }
}

impl Claims {
    /// The claims of a token made by a tool holding the deployment's key (an operator's import,
    /// a benchmark's terminals): issued now, valid for `ttl`, bound to no session.
    pub fn without_session(
        sub: &str,
        role: Role,
        store: Option<&str>,
        device: Option<&str>,
        ttl: std::time::Duration,
    ) -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self {
            sub: sub.to_owned(),
            role,
            store: store.map(Into::into),
            device: device.map(Into::into),
            iat: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
            sid: String::new(),
            scope: None,
        }
    }
}

impl TokenKeys {
    /// An admin's token for `who` (an operator's tool on the server's machine, holding its key),
    /// valid for `ttl`, bound to no session.
    pub fn admin_token(&self, who: &str, ttl: std::time::Duration) -> String {
        self.issue(&Claims::without_session(who, Role::Admin, None, None, ttl))
    }
}

/// Sends an access token with every call (`Client::with_interceptor`, `InterceptedService`).
#[derive(Clone)]
pub struct Bearer(tonic::metadata::AsciiMetadataValue);

impl Bearer {
    pub fn new(token: &str) -> anyhow::Result<Self> {
        let value = format!("Bearer {}", token.trim()).parse().context("an access token is printable ASCII")?;
        Ok(Self(value))
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Writes a new file only its owner may read, whole or not at all: written beside it, then
/// linked in place (which fails when the file exists). Whether this call made it.
fn write_private(path: &Path, text: &str) -> anyhow::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let draft = path.with_extension(format!("pem.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&draft)
        .with_context(|| format!("cannot create the signing key {}", draft.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", draft.display()))?;
    let linked = std::fs::hard_link(&draft, path);
    let _ = std::fs::remove_file(&draft);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create the signing key {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn cashier(store: &str) -> Claims {
        Claims {
            sub: "staff-7".into(),
            role: Role::Cashier,
            store: Some(store.into()),
            device: Some("till-1".into()),
            iat: now(),
            exp: now() + 900,
            jti: "t-1".into(),
            sid: "s-1".into(),
            scope: None,
        }
    }

    fn keys() -> TokenKeys {
        TokenKeys::new(SigningKey::generate().unwrap(), [])
    }

    #[test]
    fn a_token_says_who_where_and_until_when() {
        let keys = keys();
        let claims = cashier("store-1");
        let token = keys.issue(&claims);
        assert_eq!(keys.verify(&token), Ok(claims.clone()));
        assert!(claims.acts_in("store-1") && !claims.acts_in("store-2"));
        let admin = Claims { role: Role::Admin, store: None, ..claims };
        assert!(admin.acts_in("store-2"));
        assert!(Role::Cashier < Role::Supervisor && Role::Manager < Role::Admin);
    }

    #[test]
    fn expired_tampered_foreign_and_unsigned_tokens_are_refused() {
        let keys = keys();
        let expired = Claims { iat: now() - 120, exp: now() - 60, ..cashier("store-1") };
        assert_eq!(keys.verify(&keys.issue(&expired)), Err(Refused::Expired));

        // The payload changed to another store, the signature kept.
        let token = keys.issue(&cashier("store-1"));
        let parts: Vec<&str> = token.split('.').collect();
        let other = keys.issue(&cashier("store-2"));
        let forged = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(keys.verify(&forged), Err(Refused::BadSignature));

        // Another deployment's key, even one that names the same key id.
        let stranger = TokenKeys::new(SigningKey::generate().unwrap(), []);
        assert_eq!(keys.verify(&stranger.issue(&cashier("store-1"))), Err(Refused::UnknownKey));

        // Algorithm confusion: an HMAC token keyed with something public, and `none`.
        let header = Header { kid: Some(keys.signing.id.clone()), ..Header::new(Algorithm::HS256) };
        let hmac = jsonwebtoken::encode(&header, &cashier("store-1"), &EncodingKey::from_secret(&keys.signing.public))
            .unwrap();
        assert_eq!(keys.verify(&hmac), Err(Refused::Malformed));
        let none = format!("eyJhbGciOiJub25lIn0.{}.", parts[1]);
        assert_eq!(keys.verify(&none), Err(Refused::Malformed));
        assert_eq!(keys.verify("not a token"), Err(Refused::Malformed));

        // A store-scoped role must name its store.
        assert_eq!(keys.verify(&keys.issue(&Claims { store: None, ..cashier("x") })), Err(Refused::NoStore));
    }

    #[test]
    fn a_rotated_key_still_verifies_its_tokens_until_they_expire() {
        let old = SigningKey::generate().unwrap();
        let before = TokenKeys::new(SigningKey::from_pem(&old.to_pem()).unwrap(), []);
        let token = before.issue(&cashier("store-1"));
        // The new key signs; the old one is kept, as its private key or its public half.
        let retired = VerifyingKey::from_pem(&old.to_pem()).unwrap();
        let after = TokenKeys::new(SigningKey::generate().unwrap(), [retired]);
        assert_eq!(after.verify(&token).unwrap().sub, "staff-7");
        assert_ne!(after.issue(&cashier("store-1")).split('.').next(), token.split('.').next(), "another key id");
        // Retired for good: refused.
        let later = TokenKeys::new(SigningKey::generate().unwrap(), []);
        assert_eq!(later.verify(&token), Err(Refused::UnknownKey));
    }

    #[test]
    fn a_public_key_pem_verifies_and_key_material_stays_out_of_debug() {
        // `openssl pkey -pubout` of an Ed25519 key: the fixed prefix and the key.
        let key = SigningKey::generate().unwrap();
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(&key.public);
        let public = VerifyingKey::from_pem(&pem::encode(&pem::Pem::new("PUBLIC KEY", spki))).unwrap();
        assert_eq!(public.id(), key.id());
        let keys = TokenKeys::new(SigningKey::generate().unwrap(), [public]);
        let signed_by_old = TokenKeys::new(key, []).issue(&cashier("store-1"));
        assert!(keys.verify(&signed_by_old).is_ok());
        let shown = format!("{keys:?}");
        assert!(!shown.contains("PRIVATE") && shown.contains("signing"), "{shown}");
        assert!(VerifyingKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }

    #[test]
    fn a_data_directory_keeps_its_key_private_and_across_restarts() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = TokenKeys::in_dir(dir.path(), []).unwrap();
        let token = first.issue(&cashier("store-1"));
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = TokenKeys::in_dir(dir.path(), []).unwrap();
        assert!(again.verify(&token).is_ok(), "the same key after a restart");
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let err = TokenKeys::in_dir(dir.path(), []).unwrap_err();
        assert!(format!("{err:#}").contains(KEY_FILE), "{err:#}");
    }

    proptest! {
        #[test]
        fn any_claims_come_back_as_issued(
            sub in "[a-z0-9-]{1,40}",
            store in proptest::option::of("[a-z0-9-]{1,30}"),
            device in proptest::option::of("[a-z0-9-]{1,30}"),
            role in prop_oneof![Just(Role::Cashier), Just(Role::Supervisor), Just(Role::Manager), Just(Role::Admin)],
            ttl in 60u64..100_000,
        ) {
            let keys = keys();
            let store = if role == Role::Admin { store } else { Some(store.unwrap_or_else(|| "s".into())) };
            let claims = Claims { sub, role, store, device, iat: now(), exp: now() + ttl, jti: "j".into(), sid: "s".into(), scope: None };
            prop_assert_eq!(keys.verify(&keys.issue(&claims)), Ok(claims));
        }
    }
}
