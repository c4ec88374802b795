//! Who is calling: rider bearer tokens, the admin credential, and a per-rider rate limit.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use bimride_auth::{AuthError, Authority};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::ApiState;
use crate::error::ApiError;

/// Keys the limiter remembers before it forgets riders idle long enough to be full again.
const LIMITER_KEYS: usize = 100_000;

/// How the API checks its callers.
#[derive(Debug)]
pub struct Access {
    pub authority: Authority,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// Requests a rider may make: a sustained rate and a burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl Access {
    pub fn new(authority: Authority, limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self {
            authority,
            limiter: RateLimiter::keyed(quota),
        }
    }

    fn admit(&self, rider: &str) -> Result<(), ApiError> {
        if self.limiter.len() > LIMITER_KEYS {
            self.limiter.retain_recent();
        }
        let key = rider.to_owned();
        self.limiter.check_key(&key).map_err(|not_until| {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }
}

fn token(parts: &Parts) -> Result<&str, AuthError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| AuthError::Invalid))
        .transpose()?;
    bimride_auth::bearer(header)
}

/// The rider a valid bearer token names, admitted by the rate limit.
#[derive(Debug, Clone)]
pub struct Rider(pub String);

impl FromRequestParts<Arc<ApiState>> for Rider {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let rider = state.parts.access.authority.rider(token(parts)?)?;
        state.parts.access.admit(&rider)?;
        Ok(Self(rider))
    }
}

/// A caller holding the admin credential.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        state.parts.access.authority.check_admin(token(parts)?)?;
        Ok(Self)
    }
}
