//! Verifying a bearer token into a [`Principal`], and why one is refused.

use std::sync::Arc;

use jsonwebtoken::{decode, decode_header, Validation};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    jwks::{Jwks, JwksError},
    keys::{KeyError, KeySource, StaticKey},
    Claims, JwksPolicy, Principal, LEEWAY,
};

/// Longest token verified; a longer `Authorization` value is refused
/// unread (an issuer's access tokens are well under 2 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token is refused. The HTTP edge answers each with the same fixed
/// `401` and logs this.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// Not a JWT (three base64url parts, a JSON header).
    #[error("not a JWT: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    /// No key to check its signature with.
    #[error(transparent)]
    Key(#[from] JwksError),
    /// Bad signature, another algorithm than the key's, expired, not yet
    /// valid, another issuer or audience, a required claim missing.
    #[error("refused: {0}")]
    Refused(jsonwebtoken::errors::Error),
    /// `sub` is not a user id.
    #[error("the subject {0:?} is not a user id (UUID)")]
    Subject(String),
}

impl TokenError {
    /// The keys could not be fetched: the token may be good, but cannot be
    /// checked right now.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Key(JwksError::Unavailable(_)))
    }
}

/// Checks tokens against one key source and the expected claims.
#[derive(Clone)]
pub struct Verifier {
    keys: Keys,
    validation: Arc<Validation>,
    source: &'static str,
}

#[derive(Clone)]
enum Keys {
    Static(StaticKey),
    Jwks(Jwks),
}

/// The claims read from a verified token (the validation reads the others).
#[derive(Deserialize)]
struct Subject {
    sub: String,
}

impl Verifier {
    /// A verifier of tokens signed by `source` for `claims`. A JWKS is
    /// fetched once before this returns (a failure is logged, not fatal).
    pub async fn new(
        source: &KeySource,
        claims: &Claims,
        policy: JwksPolicy,
    ) -> Result<Self, KeyError> {
        let keys = match source {
            KeySource::Secret(secret) => Keys::Static(StaticKey::secret(secret)?),
            KeySource::PemFile(path) => Keys::Static(StaticKey::pem_file(path)?),
            KeySource::Jwks(url) => {
                let jwks = Jwks::new(url, policy)?;
                jwks.prefetch().await;
                Keys::Jwks(jwks)
            }
        };
        // The algorithm is set per key, in `verify`.
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&claims.issuer]);
        validation.set_audience(&[&claims.audience]);
        Ok(Self {
            keys,
            validation: Arc::new(validation),
            source: source.describe(),
        })
    }

    /// What verifies tokens: `HS256 secret`, `public key file` or `JWKS`.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The user `token` was issued to, if its signature and claims hold.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let header = decode_header(token).map_err(TokenError::Malformed)?;
        let key = match &self.keys {
            Keys::Static(key) => key.clone(),
            Keys::Jwks(jwks) => jwks.key(header.kid.as_deref()).await?,
        };
        // Only the key's own algorithm: a token signed with HS256 never
        // meets an RSA public key used as an HMAC secret.
        let mut validation = Validation::clone(&self.validation);
        validation.algorithms = vec![key.algorithm];
        let data = decode::<Subject>(token, &key.key, &validation).map_err(TokenError::Refused)?;
        let user = Uuid::try_parse(&data.claims.sub)
            .map_err(|_| TokenError::Subject(data.claims.sub.clone()))?;
        Ok(Principal { user })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::mint;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims {
            issuer: "marketplace".to_owned(),
            audience: "marketplace".to_owned(),
        }
    }

    async fn verifier() -> Verifier {
        Verifier::new(
            &KeySource::Secret(SECRET.to_vec()),
            &claims(),
            JwksPolicy::default(),
        )
        .await
        .expect("a verifier")
    }

    #[tokio::test]
    async fn a_minted_token_names_its_user() {
        let user = Uuid::new_v4();
        let token = mint(SECRET, user, &claims(), Duration::from_secs(60)).expect("minted");
        let principal = verifier().await.verify(&token).await.expect("verified");
        assert_eq!(principal, Principal { user });
    }

    #[tokio::test]
    async fn a_token_for_another_audience_or_issuer_is_refused() {
        let user = Uuid::new_v4();
        for other in [
            Claims {
                audience: "billing".to_owned(),
                ..claims()
            },
            Claims {
                issuer: "someone-else".to_owned(),
                ..claims()
            },
        ] {
            let token = mint(SECRET, user, &other, Duration::from_secs(60)).expect("minted");
            let error = verifier().await.verify(&token).await.expect_err("refused");
            assert!(matches!(error, TokenError::Refused(_)), "{error}");
        }
    }

    #[tokio::test]
    async fn garbage_is_refused_as_malformed() {
        let error = verifier()
            .await
            .verify("not.a.jwt")
            .await
            .expect_err("refused");
        assert!(matches!(error, TokenError::Malformed(_)), "{error}");
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let error = verifier().await.verify(&long).await.expect_err("refused");
        assert!(matches!(error, TokenError::TooLong), "{error}");
    }
}
