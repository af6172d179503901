//! Who a connection is: JWT checked before the upgrade, or `?user=` on a
//! loopback development server without auth.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use thiserror::Error;

use crate::config::Config;

/// The identity a connection acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// The token carried `"broadcast": true`.
    pub broadcast_claim: bool,
}

/// Why a handshake is refused with 401. The message is sent to the client,
/// so it says what to fix without echoing secrets.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token: pass ?token=JWT or Authorization: Bearer JWT")]
    MissingToken,
    #[error("missing ?user=ID (this development server has no auth configured)")]
    MissingUser,
    #[error("bad user id: 1 to 128 bytes, no control characters")]
    BadUser,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token audience not accepted")]
    BadAudience,
    #[error("token issuer not accepted")]
    BadIssuer,
    #[error("token signature invalid")]
    BadSignature,
    #[error("token algorithm {0} not accepted by this server")]
    BadAlgorithm(String),
    #[error("malformed token: {0}")]
    Malformed(String),
}

/// A public key file that can't be used.
#[derive(Debug, Error)]
#[error("RINGHUB_JWT_PUBLIC_KEY ({path}): {reason}")]
pub struct KeyError {
    path: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    broadcast: bool,
}

/// Checks tokens; built once from the config and shared by every core.
pub struct Authenticator {
    hmac: Option<DecodingKey>,
    public: Option<(DecodingKey, &'static [Algorithm])>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hmac", &self.hmac.is_some())
            .field("public", &self.public.as_ref().map(|(_, algs)| algs))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Authenticator {
    /// `None` when no auth is configured (the development mode).
    pub fn from_config(config: &Config) -> Result<Option<Authenticator>, KeyError> {
        if !config.auth_enabled() {
            return Ok(None);
        }
        let hmac = config
            .jwt_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let public = match &config.jwt_public_key {
            None => None,
            Some(path) => {
                let key_error = |reason: String| KeyError {
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| key_error(e.to_string()))?;
                Some(public_key_from_pem(&pem).map_err(key_error)?)
            }
        };
        Ok(Some(Authenticator {
            hmac,
            public,
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
            leeway: config.jwt_leeway_secs,
        }))
    }

    /// Verifies a token's signature, `exp`, `nbf`, `aud` and `iss`, and takes
    /// the user from `sub`.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref(),
            alg => self
                .public
                .as_ref()
                .filter(|(_, algs)| algs.contains(&alg))
                .map(|(key, _)| key),
        }
        .ok_or_else(|| AuthError::BadAlgorithm(format!("{:?}", header.alg)))?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = decode::<Claims>(token, key, &validation).map_err(map_jwt_error)?;
        check_user(&data.claims.sub)?;
        Ok(Identity {
            user: data.claims.sub,
            broadcast_claim: data.claims.broadcast,
        })
    }
}

/// The development identity: `?user=` taken as is, no broadcast claim.
pub fn dev_identity(user: Option<&str>) -> Result<Identity, AuthError> {
    let user = user.ok_or(AuthError::MissingUser)?;
    check_user(user)?;
    Ok(Identity {
        user: user.to_owned(),
        broadcast_claim: false,
    })
}

fn check_user(user: &str) -> Result<(), AuthError> {
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err(AuthError::BadUser);
    }
    Ok(())
}

fn public_key_from_pem(pem: &[u8]) -> Result<(DecodingKey, &'static [Algorithm]), String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, &[Algorithm::RS256]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, &[Algorithm::ES256]));
    }
    Err("not a PEM RSA or P-256 EC public key".into())
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidAudience => AuthError::BadAudience,
        K::InvalidIssuer => AuthError::BadIssuer,
        K::InvalidSignature => AuthError::BadSignature,
        K::InvalidAlgorithm => AuthError::BadAlgorithm("mismatch".into()),
        K::MissingRequiredClaim(c) => AuthError::Malformed(format!("missing claim {c}")),
        _ => AuthError::Malformed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn auth(extra: &[&str]) -> Authenticator {
        let mut args = vec!["ringhub", "--jwt-secret", SECRET];
        args.extend_from_slice(extra);
        let config = Config::from_args(args).unwrap();
        Authenticator::from_config(&config).unwrap().unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn valid_hs256_token_gives_the_subject() {
        let id = auth(&[])
            .verify(&token(
                json!({"sub": "alice", "exp": now() + 60, "broadcast": true}),
            ))
            .unwrap();
        assert_eq!(id.user, "alice");
        assert!(id.broadcast_claim);
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let a = auth(&["--jwt-leeway-secs", "0"]);
        assert_eq!(
            a.verify(&token(json!({"sub": "a", "exp": now() - 10}))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            a.verify(&token(
                json!({"sub": "a", "exp": now() + 60, "nbf": now() + 30})
            )),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let a = auth(&[
            "--jwt-audience",
            "chat",
            "--jwt-issuer",
            "https://id.example",
        ]);
        let ok = json!({"sub": "a", "exp": now() + 60, "aud": "chat", "iss": "https://id.example"});
        assert!(a.verify(&token(ok)).is_ok());
        let wrong_aud =
            json!({"sub": "a", "exp": now() + 60, "aud": "other", "iss": "https://id.example"});
        assert_eq!(a.verify(&token(wrong_aud)), Err(AuthError::BadAudience));
        let wrong_iss = json!({"sub": "a", "exp": now() + 60, "aud": "chat", "iss": "evil"});
        assert_eq!(a.verify(&token(wrong_iss)), Err(AuthError::BadIssuer));
    }

    #[test]
    fn wrong_key_missing_claims_and_garbage_are_refused() {
        let a = auth(&[]);
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert_eq!(a.verify(&forged), Err(AuthError::BadSignature));
        assert!(matches!(
            a.verify(&token(json!({"exp": now() + 60}))),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            a.verify(&token(json!({"sub": "a"}))),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            a.verify("not.a.jwt"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(a.verify(""), Err(AuthError::Malformed(_))));
        assert_eq!(
            a.verify(&token(json!({"sub": "", "exp": now() + 60}))),
            Err(AuthError::BadUser)
        );
    }

    #[test]
    fn algorithm_without_a_configured_key_is_refused() {
        // An HS384 token is refused even though it is signed with the secret:
        // only the algorithms configured are accepted.
        let t = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "a", "exp": now() + 60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            auth(&[]).verify(&t),
            Err(AuthError::BadAlgorithm(_))
        ));
    }

    #[test]
    fn dev_identity_needs_a_user() {
        assert_eq!(dev_identity(None), Err(AuthError::MissingUser));
        assert_eq!(dev_identity(Some("bob")).unwrap().user, "bob");
        assert_eq!(dev_identity(Some("a\nb")), Err(AuthError::BadUser));
    }

    fn public_key_auth(public: &str) -> Authenticator {
        let path = format!("{}/tests/keys/{public}", env!("CARGO_MANIFEST_DIR"));
        let config = Config::from_args(["ringhub", "--jwt-public-key", &path]).unwrap();
        Authenticator::from_config(&config).unwrap().unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_verify_against_public_keys() {
        let claims = json!({"sub": "carol", "exp": now() + 60});
        let rsa =
            EncodingKey::from_rsa_pem(include_bytes!("../tests/keys/rsa-private.pem")).unwrap();
        let rs = encode(&Header::new(Algorithm::RS256), &claims, &rsa).unwrap();
        assert_eq!(
            public_key_auth("rsa-public.pem").verify(&rs).unwrap().user,
            "carol"
        );

        let ec = EncodingKey::from_ec_pem(include_bytes!("../tests/keys/ec-private.pem")).unwrap();
        let es = encode(&Header::new(Algorithm::ES256), &claims, &ec).unwrap();
        assert_eq!(
            public_key_auth("ec-public.pem").verify(&es).unwrap().user,
            "carol"
        );

        // A key of one kind doesn't verify the other kind's tokens, and an
        // HS256 token is refused when only a public key is configured (the
        // classic "alg confusion" attack signs HS256 with the public key).
        assert!(matches!(
            public_key_auth("ec-public.pem").verify(&rs),
            Err(AuthError::BadAlgorithm(_))
        ));
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(include_bytes!("../tests/keys/rsa-public.pem")),
        )
        .unwrap();
        assert!(matches!(
            public_key_auth("rsa-public.pem").verify(&confused),
            Err(AuthError::BadAlgorithm(_))
        ));
    }

    #[test]
    fn unreadable_or_bad_key_file_names_the_variable() {
        let config =
            Config::from_args(["ringhub", "--jwt-public-key", "/nonexistent.pem"]).unwrap();
        let err = Authenticator::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("RINGHUB_JWT_PUBLIC_KEY"), "{err}");
        let readme = format!("{}/tests/keys/README.md", env!("CARGO_MANIFEST_DIR"));
        let config = Config::from_args(["ringhub", "--jwt-public-key", &readme]).unwrap();
        assert!(Authenticator::from_config(&config).is_err());
    }
}
