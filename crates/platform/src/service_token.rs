//! The service identity: a shared secret that inventory's internal RPCs (`ApplySale`,
//! `ApplySales`, `ApplyRefund`, `ListAppliedCheckouts`) require, so that only another Red Store
//! process (a sales service calling its inventory) can apply sales and refunds to stock.
//! It travels as `authorization: Bearer <token>` gRPC metadata; it never appears in logs or
//! `Debug` output.

use std::sync::Arc;

use subtle::ConstantTimeEq as _;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The metadata key that carries the token.
pub const METADATA_KEY: &str = "authorization";

const BEARER: &str = "Bearer ";

/// Fewest characters a token may have: a secret guessed or typed by hand is no identity.
pub const MIN_LEN: usize = 32;

/// A service token, checked when it is made: printable ASCII, no spaces, at least [`MIN_LEN`]
/// characters.
#[derive(Clone)]
pub struct ServiceToken {
    /// `Bearer <token>`, as it is sent and compared.
    bearer: Arc<str>,
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceToken(<redacted>)")
    }
}

impl ServiceToken {
    /// Parses a configured token (surrounding whitespace, as a file's final newline, is dropped).
    /// The error says what is wrong without repeating the secret.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let secret = secret.trim();
        if let Some(bad) = secret.chars().position(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "the service token may hold only printable ASCII without spaces (character {} is not)",
                bad + 1
            ));
        }
        if secret.len() < MIN_LEN {
            return Err(format!(
                "the service token has {} characters: give at least {MIN_LEN} (for example `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        Ok(Self { bearer: format!("{BEARER}{secret}").into() })
    }

    /// Whether `presented` (an `authorization` value) carries this token, in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.bearer.as_bytes().ct_eq(presented).into()
    }

    /// Whether `token` (a bearer token without its scheme) is this one, in constant time.
    pub fn is(&self, token: &str) -> bool {
        self.bearer.as_bytes()[BEARER.len()..].ct_eq(token.as_bytes()).into()
    }

    /// Adds the token to a call's metadata.
    pub fn attach(&self, metadata: &mut MetadataMap) {
        let value: AsciiMetadataValue = self.bearer.parse().expect("checked as printable ASCII when parsed");
        metadata.insert(METADATA_KEY, value);
    }

    /// An interceptor that attaches the token to every call of a client.
    pub fn interceptor(&self) -> WithServiceToken {
        WithServiceToken(self.clone())
    }
}

/// Attaches a [`ServiceToken`] to every call (`Client::with_interceptor`).
#[derive(Clone, Debug)]
pub struct WithServiceToken(ServiceToken);

impl tonic::service::Interceptor for WithServiceToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.attach(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_matches_only_its_own_bearer_value() {
        let token = ServiceToken::parse(&format!("{SECRET}\n")).expect("a good token");
        assert!(token.matches(format!("Bearer {SECRET}").as_bytes()));
        assert!(!token.matches(SECRET.as_bytes()), "the bearer scheme is part of the value");
        assert!(!token.matches(format!("Bearer {SECRET}x").as_bytes()));
        assert!(token.is(SECRET) && !token.is(&format!("{SECRET}x")) && !token.is(""));
        assert!(!token.matches(b""));
        let mut metadata = MetadataMap::new();
        token.attach(&mut metadata);
        assert!(token.matches(metadata.get(METADATA_KEY).expect("attached").as_bytes()));
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused_without_echoing_them() {
        let short = ServiceToken::parse("hunter2").unwrap_err();
        assert!(short.contains("7 characters") && short.contains("32"), "{short}");
        assert!(!short.contains("hunter2"));
        let spaced = ServiceToken::parse(&format!("{SECRET} more")).unwrap_err();
        assert!(spaced.contains("character 33"), "{spaced}");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let token = ServiceToken::parse(SECRET).unwrap();
        let shown = format!("{token:?} {:?}", token.interceptor());
        assert!(!shown.contains(SECRET) && shown.contains("redacted"), "{shown}");
    }
}
