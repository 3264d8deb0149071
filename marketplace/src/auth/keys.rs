//! Where the keys that verify tokens come from, and loading them.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

/// Fewest bytes of an HS256 secret: as many as the hash's output (RFC 7518,
/// section 3.2); a shorter secret is refused at start.
pub const MIN_SECRET_BYTES: usize = 32;

/// Where the keys that verify tokens come from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A secret shared with whoever mints tokens (HS256; development).
    Secret(Vec<u8>),
    /// A PEM file holding the issuer's public key (RS256, ES256 or ES384,
    /// told apart by the key), or a certificate holding it.
    PemFile(PathBuf),
    /// The URL of an OIDC issuer's JWKS (`jwks_uri`).
    Jwks(String),
}

impl fmt::Debug for KeySource {
    /// Never prints the secret.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(secret) => write!(formatter, "Secret({} bytes)", secret.len()),
            Self::PemFile(path) => formatter.debug_tuple("PemFile").field(path).finish(),
            Self::Jwks(url) => formatter.debug_tuple("Jwks").field(url).finish(),
        }
    }
}

impl KeySource {
    /// What the readiness probe and the start-up log call this source.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Secret(_) => "HS256 secret",
            Self::PemFile(_) => "public key file",
            Self::Jwks(_) => "JWKS",
        }
    }
}

/// Why the configured keys cannot be used (at start).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Two key sources at once: which one verifies would be a guess.
    #[error("more than one token key source is configured ({0}); configure exactly one")]
    Conflicting(String),
    /// A key or secret file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HS256 secret is too short to be safe.
    #[error("the HS256 secret is {len} bytes long; at least {MIN_SECRET_BYTES} are required")]
    ShortSecret {
        /// Its length in bytes.
        len: usize,
    },
    /// The PEM file holds no key this API verifies with.
    #[error("{path} holds no RSA or EC (P-256, P-384) public key in PEM: {reason}")]
    NotAPublicKey {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The JWKS URL is not an `http(s)://` URL.
    #[error("the JWKS URL {0:?} is not an http:// or https:// URL")]
    BadJwksUrl(String),
    /// The HTTP client for the JWKS cannot be built.
    #[error("cannot build the JWKS client: {0}")]
    Client(String),
}

/// One key and the one algorithm it verifies: a token whose header names
/// another algorithm is refused, so a public key is never used as an HMAC
/// secret.
#[derive(Clone)]
pub struct StaticKey {
    /// The key.
    pub key: DecodingKey,
    /// Its algorithm.
    pub algorithm: Algorithm,
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "StaticKey({:?})", self.algorithm)
    }
}

impl StaticKey {
    /// The HS256 key of `secret`, at least [`MIN_SECRET_BYTES`] long.
    pub fn secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret { len: secret.len() });
        }
        let key = DecodingKey::from_secret(secret)
            .map_err(|_| KeyError::ShortSecret { len: secret.len() })?;
        Ok(Self {
            key,
            algorithm: Algorithm::HS256,
        })
    }

    /// The public key in the PEM file at `path`: RSA (RS256) or EC (ES256
    /// on P-256, ES384 on P-384).
    pub fn pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::pem(&pem).map_err(|reason| KeyError::NotAPublicKey {
            path: path.to_owned(),
            reason,
        })
    }

    /// The public key in `pem`, its algorithm told by its type (and curve).
    pub fn pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            let algorithm = match key.kind() {
                // The uncompressed point: 0x04, then x and y.
                DecodingKeyKind::SecretOrDer(point) if point.len() == 65 => Algorithm::ES256,
                DecodingKeyKind::SecretOrDer(point) if point.len() == 97 => Algorithm::ES384,
                _ => return Err("an EC key on a curve other than P-256 or P-384".to_owned()),
            };
            return Ok(Self { key, algorithm });
        }
        DecodingKey::from_rsa_pem(pem)
            .map(|key| Self {
                key,
                algorithm: Algorithm::RS256,
            })
            .map_err(|error| error.to_string())
    }
}

/// Reads a secret from `path`, without the line break that ends the file.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut secret = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    while secret
        .last()
        .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
    {
        secret.pop();
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_secret_is_refused() {
        assert!(matches!(
            StaticKey::secret(b"too short"),
            Err(KeyError::ShortSecret { len: 9 })
        ));
        assert!(StaticKey::secret(&[7; MIN_SECRET_BYTES]).is_ok());
    }

    #[test]
    fn a_file_that_is_no_pem_key_is_refused() {
        assert!(StaticKey::pem(b"not a key").is_err());
    }

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let source = KeySource::Secret(b"hunter2hunter2hunter2hunter2hunter2".to_vec());
        assert_eq!(format!("{source:?}"), "Secret(35 bytes)");
    }
}
