//! How a connection of a ringhub workload says which user it is: `?user=`
//! against a development server (loopback, no auth configured), or an
//! HS256 token minted here from the servers' shared secret.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::payload::Name;

/// How long minted tokens stay valid: longer than any bounded run.
const TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Login {
    /// `?user=<name>`: what a server without auth on 127.0.0.1 accepts.
    DevUser,
    /// `?token=<HS256 JWT>` with `sub` = the user, signed with `secret`
    /// (the servers' `RINGHUB_JWT_SECRET`).
    Hs256 { secret: String },
}

impl std::fmt::Debug for Login {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::DevUser => f.write_str("DevUser"),
            Login::Hs256 { .. } => f.write_str("Hs256 { secret: <hidden> }"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cannot sign a token for {user}: {source}")]
    Sign {
        user: String,
        source: jsonwebtoken::errors::Error,
    },
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

impl Login {
    /// The query that logs `user` in (no `?`).
    pub fn query(&self, user: Name<'_>) -> Result<String, LoginError> {
        match self {
            Login::DevUser => Ok(format!("user={user}")),
            Login::Hs256 { secret } => {
                let sub = user.to_string();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let claims = Claims {
                    sub: &sub,
                    iat: now,
                    exp: now + TOKEN_LIFETIME_SECS,
                };
                let token = jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    &claims,
                    &EncodingKey::from_secret(secret.as_bytes()),
                )
                .map_err(|source| LoginError::Sign {
                    user: sub.clone(),
                    source,
                })?;
                Ok(format!("token={token}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation, decode};

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Decoded {
        sub: String,
        exp: u64,
    }

    const USER: Name<'static> = Name {
        prefix: "s",
        number: 12,
    };

    #[test]
    fn dev_mode_names_the_user() {
        assert_eq!(Login::DevUser.query(USER).unwrap(), "user=s12");
    }

    #[test]
    fn tokens_verify_with_the_secret_and_carry_the_user() {
        let login = Login::Hs256 {
            secret: "sesame-sesame-sesame-sesame-sesame".into(),
        };
        let query = login.query(USER).unwrap();
        let token = query.strip_prefix("token=").unwrap();
        // URL-safe as it is: base64url and dots.
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        let claims = decode::<Decoded>(
            token,
            &DecodingKey::from_secret(b"sesame-sesame-sesame-sesame-sesame"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap()
        .claims;
        assert_eq!(claims.sub, "s12");
        assert!(claims.exp > TOKEN_LIFETIME_SECS);
        assert!(
            decode::<Decoded>(
                token,
                &DecodingKey::from_secret(b"other"),
                &Validation::new(Algorithm::HS256),
            )
            .is_err()
        );
        assert!(!format!("{login:?}").contains("sesame"));
    }
}
