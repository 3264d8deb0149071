//! The signing keys of an OIDC issuer, fetched from its JWKS URL and cached.
//!
//! Keys are looked up by the token's `kid`. A `kid` the cache does not hold
//! (the issuer rotated its keys) fetches the set again, at most once per
//! [`JwksPolicy::min_refetch_interval`] whatever the tokens say, so a flood
//! of tokens with made-up key ids cannot make this process hammer the
//! issuer; one fetch runs at a time and the requests waiting on it share
//! its result. A set older than [`JwksPolicy::max_age`] is fetched again at
//! the next token, so withdrawn keys stop being accepted. While the issuer
//! does not answer, the keys already known keep working.

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{Arc, RwLock},
    time::Instant,
};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse},
    Algorithm, DecodingKey,
};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{keys::StaticKey, JwksPolicy, KeyError};

/// Largest JWKS document read; an issuer publishes a few keys (a few KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why no key was found for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The issuer publishes no key with this id (after a fetch, or while
    /// fetches are held back by the minimum interval).
    #[error("no signing key with id {0:?}")]
    UnknownKey(String),
    /// The token names no key and the issuer publishes more than one.
    #[error("the token names no key id and the JWKS holds {0} keys")]
    NoKeyId(usize),
    /// The set could not be fetched and holds no such key.
    #[error("the JWKS cannot be fetched: {0}")]
    Unavailable(String),
}

/// The cached signing keys of one issuer.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: reqwest::Client,
    policy: JwksPolicy,
    cached: RwLock<Cached>,
    /// When the last fetch started; held while a fetch runs.
    last_fetch: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, StaticKey>,
    /// Keys without a `kid`, usable only when they are the only key.
    anonymous: Vec<StaticKey>,
    fetched_at: Option<Instant>,
}

impl Cached {
    fn find(&self, kid: Option<&str>) -> Result<StaticKey, JwksError> {
        match kid {
            Some(kid) => self
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| JwksError::UnknownKey(kid.to_owned())),
            None => {
                let mut all = self.keys.values().chain(&self.anonymous);
                match (all.next(), all.next()) {
                    (Some(only), None) => Ok(only.clone()),
                    _ => Err(JwksError::NoKeyId(self.keys.len() + self.anonymous.len())),
                }
            }
        }
    }

    fn is_fresh(&self, policy: &JwksPolicy) -> bool {
        self.fetched_at
            .is_some_and(|at| at.elapsed() < policy.max_age)
    }
}

impl Jwks {
    /// The keys published at `url` (not fetched yet: see [`Jwks::prefetch`]).
    pub fn new(url: &str, policy: JwksPolicy) -> Result<Self, KeyError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(KeyError::BadJwksUrl(url.to_owned()));
        }
        // One rustls provider for the whole process: aws-lc-rs, as lapin's
        // TLS uses (reqwest would fall back to ring). Already installed is
        // fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(policy.fetch_timeout)
            .connect_timeout(policy.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|error| KeyError::Client(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                client,
                policy,
                cached: RwLock::new(Cached::default()),
                last_fetch: Mutex::new(None),
            }),
        })
    }

    /// Fetches the keys once, at start; a failure is logged, and the next
    /// token tries again.
    pub async fn prefetch(&self) {
        let mut last_fetch = self.inner.last_fetch.lock().await;
        self.fetch(&mut last_fetch).await;
    }

    /// The key `kid` (or the only key, when the token names none).
    pub async fn key(&self, kid: Option<&str>) -> Result<StaticKey, JwksError> {
        if let Some(found) = self.cached_key(kid, true) {
            return found;
        }
        let mut last_fetch = self.inner.last_fetch.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.cached_key(kid, true) {
            return found;
        }
        let held_back =
            last_fetch.is_some_and(|at| at.elapsed() < self.inner.policy.min_refetch_interval);
        let failure = if held_back {
            None
        } else {
            self.fetch(&mut last_fetch).await
        };
        drop(last_fetch);
        match (self.cached_key(kid, false), failure) {
            (Some(Ok(key)), _) => Ok(key),
            (_, Some(reason)) => Err(JwksError::Unavailable(reason)),
            (Some(Err(error)), None) => Err(error),
            (None, None) => Err(JwksError::Unavailable("no keys fetched yet".to_owned())),
        }
    }

    /// The cached answer: `None` when the cache cannot answer (stale or
    /// never filled, or, with `fresh_hit_only`, no such key).
    fn cached_key(
        &self,
        kid: Option<&str>,
        fresh_hit_only: bool,
    ) -> Option<Result<StaticKey, JwksError>> {
        let cached = self.inner.cached.read().unwrap_or_else(|p| p.into_inner());
        cached.fetched_at?;
        let found = cached.find(kid);
        if fresh_hit_only && !(found.is_ok() && cached.is_fresh(&self.inner.policy)) {
            return None;
        }
        Some(found)
    }

    /// Fetches the set and replaces the cache; returns why it failed, if it
    /// did (the cache is then left as it was).
    async fn fetch(&self, last_fetch: &mut Option<Instant>) -> Option<String> {
        *last_fetch = Some(Instant::now());
        match self.download().await {
            Ok(fetched) => {
                tracing::info!(
                    url = %self.inner.url,
                    keys = fetched.keys.len() + fetched.anonymous.len(),
                    "JWKS fetched"
                );
                *self.inner.cached.write().unwrap_or_else(|p| p.into_inner()) = fetched;
                None
            }
            Err(reason) => {
                tracing::warn!(url = %self.inner.url, error = %reason, "cannot fetch the JWKS; known keys stay in use");
                Some(reason)
            }
        }
    }

    async fn download(&self) -> Result<Cached, String> {
        let mut response = self
            .inner
            .client
            .get(&self.inner.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| error.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the issuer answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body)
    }
}

/// The signing keys of a JWKS document; keys of unsupported types or
/// meant for encryption are skipped.
fn parse(body: &[u8]) -> Result<Cached, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut cached = Cached {
        fetched_at: Some(Instant::now()),
        ..Cached::default()
    };
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(key) = signing_key(&jwk) else {
            tracing::debug!(kid = ?jwk.common.key_id, "JWKS key skipped: not an RSA or EC signing key");
            continue;
        };
        match jwk.common.key_id {
            Some(kid) => {
                cached.keys.insert(kid, key);
            }
            None => cached.anonymous.push(key),
        }
    }
    Ok(cached)
}

/// The key of `jwk` and the one algorithm it verifies: its `alg` when it
/// names one, else RS256 for RSA and ES256/ES384 by the EC curve.
fn signing_key(jwk: &Jwk) -> Option<StaticKey> {
    if matches!(jwk.common.public_key_use, Some(ref usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (_, Some(named)) => Algorithm::from_str(&named.to_string()).ok()?,
        (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        _ => return None,
    };
    let fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            algorithm,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
        ),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (algorithm, &ec.curve),
            (Algorithm::ES256, EllipticCurve::P256) | (Algorithm::ES384, EllipticCurve::P384)
        ),
        _ => false,
    };
    if !fits {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(StaticKey { key, algorithm })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_keeps_the_signing_keys_it_can_use() {
        let body = serde_json::json!({ "keys": [
            { "kty": "EC", "crv": "P-256", "kid": "a", "use": "sig",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "weird", "kid": "unknown" },
        ]});
        let cached = parse(body.to_string().as_bytes()).expect("a JWKS");
        assert_eq!(cached.keys.len(), 1);
        assert_eq!(
            cached.find(Some("a")).expect("key a").algorithm,
            Algorithm::ES256
        );
        assert_eq!(
            cached.find(None).expect("the only key").algorithm,
            Algorithm::ES256
        );
        assert_eq!(
            cached.find(Some("hmac")).map(|_| ()),
            Err(JwksError::UnknownKey("hmac".to_owned()))
        );
    }

    #[test]
    fn a_jwks_url_must_be_http() {
        assert!(matches!(
            Jwks::new("file:///etc/passwd", JwksPolicy::default()),
            Err(KeyError::BadJwksUrl(_))
        ));
    }
}
