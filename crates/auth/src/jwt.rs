//! etcd's JWT tokens (`--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`):
//! a signed token carrying the user name and the auth revision it was
//! issued at, valid until its expiry. Any member with the public key
//! verifies it without state; a member without the private key verifies
//! but cannot issue ("verify-only"). Unlike simple tokens they survive
//! restarts, and are voided by a change of the auth state (revision) rather
//! than dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// etcd's default JWT lifetime.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(5 * 60);

/// A bad `--auth-token`, or keys that cannot be used: start-up errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenConfigError {
    /// etcd's ErrInvalidAuthOpts.
    #[error("auth: invalid auth options: {0}")]
    InvalidOptions(String),
    /// etcd's ErrInvalidAuthMethod.
    #[error("auth: invalid auth signature method {0:?}")]
    InvalidMethod(String),
    #[error("auth: cannot read {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("auth: {}: not a usable {method} key: {reason}", path.display())]
    BadKey { path: PathBuf, method: String, reason: String },
    /// etcd's ErrMissingKey.
    #[error("auth: missing key data")]
    MissingKey,
    /// etcd's ErrKeyMismatch.
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
}

/// What `--auth-token` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSpec {
    Simple,
    Jwt(JwtOptions),
    /// `--auth-token ""`: nobody can log in (etcd's nop provider).
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtOptions {
    pub public_key: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub sign_method: String,
    pub ttl: Duration,
}

impl TokenSpec {
    /// Parses etcd's `--auth-token` value: `simple`, or `jwt` followed by
    /// comma-separated `key=value` options.
    pub fn parse(spec: &str) -> Result<TokenSpec, TokenConfigError> {
        let mut parts = spec.split(',');
        let kind = parts.next().unwrap_or_default();
        match kind {
            "" if spec.is_empty() => return Ok(TokenSpec::None),
            "simple" if parts.clone().next().is_none() => return Ok(TokenSpec::Simple),
            "jwt" => {}
            other => return Err(TokenConfigError::InvalidOptions(format!("unknown token type {other:?}"))),
        }
        let mut options =
            JwtOptions { public_key: None, private_key: None, sign_method: String::new(), ttl: DEFAULT_JWT_TTL };
        let mut seen = std::collections::HashSet::new();
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| TokenConfigError::InvalidOptions(format!("{part:?} is not key=value")))?;
            if !seen.insert(key) {
                return Err(TokenConfigError::InvalidOptions(format!("{key} given twice")));
            }
            match key {
                "pub-key" => options.public_key = Some(PathBuf::from(value)),
                "priv-key" => options.private_key = Some(PathBuf::from(value)),
                "sign-method" => options.sign_method = value.to_owned(),
                "ttl" => {
                    options.ttl = parse_go_duration(value)
                        .ok_or_else(|| TokenConfigError::InvalidOptions(format!("ttl {value:?} is not a duration")))?
                }
                other => return Err(TokenConfigError::InvalidOptions(format!("unknown option {other:?}"))),
            }
        }
        if options.sign_method.is_empty() {
            return Err(TokenConfigError::InvalidMethod(String::new()));
        }
        Ok(TokenSpec::Jwt(options))
    }
}

/// Go's `time.ParseDuration` for the forms a TTL takes (`5m`, `1h30m`, `90s`, `500ms`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = tail;
    }
    Some(total)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

pub struct JwtTokens {
    algorithm: Algorithm,
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens").field("algorithm", &self.algorithm).field("ttl", &self.ttl).finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TokenConfigError> {
    std::fs::read(path).map_err(|e| TokenConfigError::Unreadable { path: path.to_owned(), reason: e.to_string() })
}

impl JwtTokens {
    /// Loads the keys `options` names (blocking: at start only). HMAC
    /// methods use the private key file's bytes as the shared secret.
    pub fn load(options: &JwtOptions) -> Result<JwtTokens, TokenConfigError> {
        let method = options.sign_method.as_str();
        let algorithm: Algorithm = method.parse().map_err(|_| TokenConfigError::InvalidMethod(method.to_owned()))?;
        let bad = |path: &Path, reason: jsonwebtoken::errors::Error| TokenConfigError::BadKey {
            path: path.to_owned(),
            method: method.to_owned(),
            reason: reason.to_string(),
        };
        let (signing, verifying) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let path = options.private_key.as_deref().ok_or(TokenConfigError::MissingKey)?;
                let secret = read(path)?;
                (Some(EncodingKey::from_secret(&secret)), DecodingKey::from_secret(&secret))
            }
            _ => {
                let public = options.public_key.as_deref().ok_or(TokenConfigError::MissingKey)?;
                let public_pem = read(public)?;
                let verifying = match algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&public_pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&public_pem),
                    _ => DecodingKey::from_rsa_pem(&public_pem),
                }
                .map_err(|e| bad(public, e))?;
                let signing = match options.private_key.as_deref() {
                    None => None,
                    Some(private) => {
                        let pem = read(private)?;
                        Some(
                            match algorithm {
                                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                                _ => EncodingKey::from_rsa_pem(&pem),
                            }
                            .map_err(|e| bad(private, e))?,
                        )
                    }
                };
                (signing, verifying)
            }
        };
        let tokens = JwtTokens { algorithm, signing, verifying, ttl: options.ttl };
        // A token signed with the private key must verify with the public one.
        if tokens.signing.is_some() {
            let probe = tokens.assign("probe", 1, 0).map_err(|_| TokenConfigError::KeyMismatch)?;
            tokens.verify_at(&probe, 0).map_err(|_| TokenConfigError::KeyMismatch)?;
        }
        Ok(tokens)
    }

    /// A token for `user` at auth revision `revision`, issued at
    /// `now_unix` (seconds); refused on a verify-only member.
    pub fn assign(&self, user: &str, revision: u64, now_unix: u64) -> Result<String, AuthError> {
        let signing = self.signing.as_ref().ok_or(AuthError::VerifyOnly)?;
        let claims = Claims { username: user.to_owned(), revision, exp: now_unix + self.ttl.as_secs().max(1) };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, signing).map_err(|_| AuthError::VerifyOnly)
    }

    /// The user and auth revision a token names, if its signature holds,
    /// its algorithm is ours and it has not expired at `now_unix`.
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<(String, u64), AuthError> {
        let mut validation = Validation::new(self.algorithm);
        // Expiry is checked against the caller's clock below.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation)
            .map_err(|_| AuthError::InvalidAuthToken)?;
        if data.claims.exp <= now_unix && now_unix != 0 {
            return Err(AuthError::InvalidAuthToken);
        }
        Ok((data.claims.username, data.claims.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_token_specs_parse_as_etcd_reads_them() {
        assert_eq!(TokenSpec::parse("simple"), Ok(TokenSpec::Simple));
        assert_eq!(TokenSpec::parse(""), Ok(TokenSpec::None));
        let TokenSpec::Jwt(jwt) =
            TokenSpec::parse("jwt,pub-key=/a.pub,priv-key=/a,sign-method=RS256,ttl=1h30m").unwrap()
        else {
            panic!("a jwt spec")
        };
        assert_eq!(jwt.public_key.as_deref(), Some(Path::new("/a.pub")));
        assert_eq!(jwt.ttl, Duration::from_secs(5400));
        assert!(matches!(TokenSpec::parse("bogus"), Err(TokenConfigError::InvalidOptions(_))));
        assert!(matches!(TokenSpec::parse("jwt,pub-key=/a"), Err(TokenConfigError::InvalidMethod(_))));
        assert!(matches!(TokenSpec::parse("jwt,sign-method=RS256,ttl=5x"), Err(TokenConfigError::InvalidOptions(_))));
        assert!(matches!(
            TokenSpec::parse("jwt,sign-method=RS256,sign-method=RS256"),
            Err(TokenConfigError::InvalidOptions(_))
        ));
    }

    fn hmac(dir: &Path, secret: &[u8]) -> JwtOptions {
        let path = dir.join("secret");
        std::fs::write(&path, secret).unwrap();
        JwtOptions {
            public_key: None,
            private_key: Some(path),
            sign_method: "HS256".into(),
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_token_carries_its_user_and_revision_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JwtTokens::load(&hmac(dir.path(), b"s3cret")).unwrap();
        let token = tokens.assign("alice", 7, 1_000).unwrap();
        assert_eq!(tokens.verify_at(&token, 1_030), Ok(("alice".to_string(), 7)));
        assert_eq!(tokens.verify_at(&token, 1_060), Err(AuthError::InvalidAuthToken));
        let other = JwtTokens::load(&hmac(dir.path(), b"other")).unwrap();
        assert_eq!(other.verify_at(&token, 1_030), Err(AuthError::InvalidAuthToken), "another key");
        assert_eq!(tokens.verify_at("not.a.token", 1_030), Err(AuthError::InvalidAuthToken));
    }

    fn es256_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let pair = rcgen::KeyPair::generate().unwrap();
        let (private, public) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
        std::fs::write(&private, pair.serialize_pem()).unwrap();
        std::fs::write(&public, pair.public_key_pem()).unwrap();
        (private, public)
    }

    #[test]
    fn public_key_members_verify_and_only_private_key_members_sign() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = es256_pair(dir.path(), "a");
        let signer = JwtOptions {
            public_key: Some(public.clone()),
            private_key: Some(private),
            sign_method: "ES256".into(),
            ttl: DEFAULT_JWT_TTL,
        };
        let token = JwtTokens::load(&signer).unwrap().assign("root", 3, 100).unwrap();
        let verifier = JwtTokens::load(&JwtOptions { private_key: None, ..signer.clone() }).unwrap();
        assert_eq!(verifier.verify_at(&token, 101), Ok(("root".into(), 3)));
        assert_eq!(verifier.assign("root", 3, 100), Err(AuthError::VerifyOnly));

        let (other_private, _) = es256_pair(dir.path(), "b");
        let mismatched = JwtOptions { private_key: Some(other_private), ..signer };
        assert_eq!(JwtTokens::load(&mismatched).unwrap_err(), TokenConfigError::KeyMismatch);
    }

    #[test]
    fn unusable_keys_are_named_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let options = JwtOptions {
            public_key: Some(missing.clone()),
            private_key: None,
            sign_method: "RS256".into(),
            ttl: DEFAULT_JWT_TTL,
        };
        match JwtTokens::load(&options) {
            Err(TokenConfigError::Unreadable { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let options = JwtOptions { public_key: Some(garbage.clone()), ..options };
        match JwtTokens::load(&options) {
            Err(TokenConfigError::BadKey { path, .. }) => assert_eq!(path, garbage),
            other => panic!("{other:?}"),
        }
        let options = JwtOptions { sign_method: "XX999".into(), ..options };
        assert_eq!(JwtTokens::load(&options).unwrap_err(), TokenConfigError::InvalidMethod("XX999".into()));
    }
}
