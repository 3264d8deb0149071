//! Who is asking: bearer tokens (RFC 6750) verified into a [`Principal`].
//!
//! A token is a JWT signed by one of three key sources ([`KeySource`]):
//! an HS256 secret shared with `marketplace token` (development), a PEM
//! public key (RS256 or ES256, told apart by the key itself), or the JWKS
//! of an OIDC issuer, cached and refetched when a token names a key id the
//! cache does not hold ([`jwks`]). [`Verifier`] checks the signature and
//! the `iss`, `aud`, `exp` and `nbf` claims, give or take [`LEEWAY`], and
//! reads the user id from `sub`.
//!
//! - [`keys`]: the key sources and loading them;
//! - [`jwks`]: the JWKS cache;
//! - [`verify`]: the verifier and why a token is refused;
//! - [`token`]: minting tokens with the HS256 secret.

pub mod jwks;
pub mod keys;
pub mod token;
pub mod verify;

use std::time::Duration;

use uuid::Uuid;

pub use keys::{KeyError, KeySource};
pub use token::{mint, MintError};
pub use verify::{TokenError, Verifier};

/// Clock skew tolerated between the issuer and this process when checking
/// `exp` and `nbf`: a token is still accepted this long after it expired,
/// and this long before it becomes valid.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The signed-in user of a request: the verified token's `sub`.
///
/// The authentication layer puts it in the request's extensions when the
/// request carries a valid token; the edge (rate limits) and the routes
/// read it from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The user id (`sub`).
    pub user: Uuid,
}

/// What a token must say besides its signature: who issued it, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The expected `iss`.
    pub issuer: String,
    /// The expected `aud` (one of the token's audiences).
    pub audience: String,
}

/// How the JWKS of an issuer is fetched and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksPolicy {
    /// Longest wait for the issuer to answer one fetch.
    pub fetch_timeout: Duration,
    /// Least time between two fetches: a flood of tokens naming unknown
    /// key ids makes at most one fetch per interval.
    pub min_refetch_interval: Duration,
    /// Keys older than this are fetched again at the next token, so a key
    /// the issuer withdrew stops being accepted.
    pub max_age: Duration,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            min_refetch_interval: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
        }
    }
}
