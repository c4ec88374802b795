//! Who may call the API: riders carry signed bearer tokens (HS256 JWTs) naming them, and
//! operators carry one admin credential. Secrets and tokens live in [`Secret`], whose `Debug`
//! and `Display` never show the value, so that no log line can carry one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Shortest signing secret accepted: 32 bytes, the HS256 output size.
pub const MIN_SECRET_BYTES: usize = 32;
/// Shortest admin credential accepted.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;
const ISSUER: &str = "bimride";
/// Longest token life.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3_600);
/// Longest bearer token checked; ours are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 4_096;

/// A rider id: 1 to 64 ASCII letters, digits, '-' or '_'.
pub fn valid_rider_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token signing secret must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
    #[error("the admin token must be at least {MIN_ADMIN_TOKEN_BYTES} bytes")]
    WeakAdminToken,
    #[error("no bearer token")]
    Missing,
    #[error("the bearer token is invalid or expired")]
    Invalid,
    #[error("the token does not grant this")]
    Forbidden,
    #[error("could not sign a token")]
    Signing,
    #[error("{0}")]
    Unsignable(&'static str),
}

/// What a rider token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The rider id.
    pub sub: String,
    pub iss: String,
    /// Seconds since the epoch; optional, as identity providers may omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not valid before, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
}

/// Signs and checks rider tokens, and checks the admin credential.
#[derive(Clone)]
pub struct Authority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    admin: Option<Secret>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("admin", &self.admin.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// An authority signing with `secret`; without an admin token, admin calls are refused.
    pub fn new(secret: &Secret, admin: Option<Secret>) -> Result<Self, AuthError> {
        if secret.expose().len() < MIN_SECRET_BYTES {
            return Err(AuthError::WeakSecret);
        }
        if admin
            .as_ref()
            .is_some_and(|a| a.expose().len() < MIN_ADMIN_TOKEN_BYTES)
        {
            return Err(AuthError::WeakAdminToken);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            admin,
        })
    }

    /// A token for `rider`, valid for `ttl`.
    pub fn rider_token(&self, rider: &str, ttl: Duration) -> Result<Secret, AuthError> {
        if !valid_rider_id(rider) {
            return Err(AuthError::Unsignable(
                "a rider id is 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if ttl > MAX_TOKEN_TTL {
            return Err(AuthError::Unsignable("a token lives 30 days at most"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: rider.to_owned(),
            iss: ISSUER.to_owned(),
            iat: Some(now),
            nbf: None,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(Secret)
            .map_err(|_| AuthError::Signing)
    }

    /// The rider a bearer token names, if its signature, issuer and expiry hold.
    pub fn rider(&self, token: &str) -> Result<String, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid);
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims.sub)
            .filter(|sub| valid_rider_id(sub))
            .ok_or(AuthError::Invalid)
    }

    /// Whether `token` is the admin credential, compared in constant time.
    pub fn check_admin(&self, token: &str) -> Result<(), AuthError> {
        let admin = self.admin.as_ref().ok_or(AuthError::Forbidden)?;
        if bool::from(admin.expose().as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn authority() -> Authority {
        Authority::new(
            &Secret::new("0123456789abcdef0123456789abcdef"),
            Some(Secret::new("admin-credential-0001")),
        )
        .expect("authority")
    }

    #[test]
    fn a_token_names_its_rider_and_only_its_signer_accepts_it() {
        let a = authority();
        let token = a.rider_token("rider-7", Duration::from_secs(60)).unwrap();
        assert_eq!(a.rider(token.expose()).unwrap(), "rider-7");
        let other = Authority::new(&Secret::new("x".repeat(40)), None).unwrap();
        assert_eq!(other.rider(token.expose()), Err(AuthError::Invalid));
        let mut tampered = token.expose().to_owned();
        tampered.pop();
        assert_eq!(a.rider(&tampered), Err(AuthError::Invalid));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let a = authority();
        let token = a.rider_token("r", Duration::ZERO).unwrap();
        // Past the leeway.
        let mut claims = Claims {
            sub: "r".into(),
            iss: ISSUER.into(),
            iat: Some(0),
            nbf: None,
            exp: 1,
        };
        let old = jsonwebtoken::encode(&Header::default(), &claims, &a.encoding).unwrap();
        assert_eq!(a.rider(&old), Err(AuthError::Invalid));
        claims.iss = "elsewhere".into();
        claims.exp = u64::MAX / 2;
        let foreign = jsonwebtoken::encode(&Header::default(), &claims, &a.encoding).unwrap();
        assert_eq!(a.rider(&foreign), Err(AuthError::Invalid));
        assert_eq!(a.rider(token.expose()).as_deref(), Ok("r"), "within leeway");
    }

    fn forged(a: &Authority, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims =
            serde_json::json!({"sub": "rider-1", "iss": ISSUER, "iat": now, "exp": now + 60});
        edit(&mut claims);
        jsonwebtoken::encode(&Header::default(), &claims, &a.encoding).unwrap()
    }

    #[test]
    fn claims_are_checked_as_issued_elsewhere_would_be() {
        let a = authority();
        assert_eq!(a.rider(&forged(&a, |_| {})).as_deref(), Ok("rider-1"));
        // An identity provider may leave `iat` out.
        let no_iat = forged(&a, |c| drop(c.as_object_mut().unwrap().remove("iat")));
        assert_eq!(a.rider(&no_iat).as_deref(), Ok("rider-1"));
        // Not valid before an hour from now.
        let later = forged(&a, |c| {
            c["nbf"] = c["iat"].as_u64().unwrap().saturating_add(3_600).into()
        });
        assert_eq!(a.rider(&later), Err(AuthError::Invalid));
        for sub in ["", " rider-1", "rider-1 ", "rïder", &"r".repeat(65)] {
            let token = forged(&a, |c| c["sub"] = sub.into());
            assert_eq!(a.rider(&token), Err(AuthError::Invalid), "sub {sub:?}");
        }
        let huge = forged(&a, |c| c["pad"] = "x".repeat(MAX_TOKEN_BYTES).into());
        assert_eq!(a.rider(&huge), Err(AuthError::Invalid));
    }

    #[test]
    fn only_tokens_a_rider_could_use_are_signed() {
        let a = authority();
        for rider in ["", " ", "rïder"] {
            assert!(
                matches!(
                    a.rider_token(rider, Duration::from_secs(60)),
                    Err(AuthError::Unsignable(_))
                ),
                "{rider:?}"
            );
        }
        let forever = Duration::from_secs(u64::MAX);
        assert!(matches!(
            a.rider_token("rider-1", forever),
            Err(AuthError::Unsignable(_))
        ));
    }

    #[test]
    fn weak_settings_are_refused_at_start() {
        assert_eq!(
            Authority::new(&Secret::new("short"), None).err(),
            Some(AuthError::WeakSecret)
        );
        assert_eq!(
            Authority::new(&Secret::new("s".repeat(32)), Some(Secret::new("abc"))).err(),
            Some(AuthError::WeakAdminToken)
        );
    }

    #[test]
    fn the_admin_credential_is_checked_and_absent_means_refused() {
        let a = authority();
        assert!(a.check_admin("admin-credential-0001").is_ok());
        assert_eq!(
            a.check_admin("admin-credential-0002"),
            Err(AuthError::Forbidden)
        );
        let none = Authority::new(&Secret::new("s".repeat(32)), None).unwrap();
        assert_eq!(
            none.check_admin("admin-credential-0001"),
            Err(AuthError::Forbidden)
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert!(!format!("{:?}", authority()).contains("admin-credential"));
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer(None), Err(AuthError::Missing));
        for bad in ["Basic abc", "Bearer", "Bearer  ", "abc"] {
            assert_eq!(bearer(Some(bad)), Err(AuthError::Invalid), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_are_refused_not_panicked_on(token in ".{0,300}") {
            prop_assert_eq!(authority().rider(&token), Err(AuthError::Invalid));
        }
    }
}
