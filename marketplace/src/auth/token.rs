//! Minting tokens with the HS256 secret (`marketplace token`, tests).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;
use uuid::Uuid;

use super::{
    keys::{KeyError, MIN_SECRET_BYTES},
    Claims,
};

/// Why no token was minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The secret is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A lifetime of zero, or past the year 9999.
    #[error("a token's lifetime must be between 1 second and 100 years")]
    Lifetime,
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Longest lifetime of a minted token.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Serialize)]
struct Minted<'a> {
    sub: Uuid,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// A token for `user` signed with `secret` (HS256), valid from now for
/// `ttl`, with `claims`' issuer and audience.
pub fn mint(
    secret: &[u8],
    user: Uuid,
    claims: &Claims,
    ttl: Duration,
) -> Result<String, MintError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::ShortSecret { len: secret.len() }.into());
    }
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(MintError::Lifetime);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let minted = Minted {
        sub: user,
        iss: &claims.issuer,
        aud: &claims.audience,
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs().max(1),
    };
    let key = EncodingKey::from_secret(secret)?;
    Ok(encode(&Header::new(Algorithm::HS256), &minted, &key)?)
}
