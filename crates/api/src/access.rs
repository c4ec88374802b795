//! Who is calling: rider bearer tokens, the admin credential, a per-rider rate limit, and a
//! per-address limit on failed authentication.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
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
    /// Failed authentications per client address.
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses that failed too often, and until when their credentials go unchecked.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

/// Requests a rider may make: a sustained rate and a burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
    /// Failed authentications an address may make in a burst; then one a second. Past
    /// that, its requests get 429 with no credential checked, so guessing is slow.
    pub failure_burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            failure_burst: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl Access {
    pub fn new(authority: Authority, limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        let failures = Quota::per_second(NonZeroU32::MIN).allow_burst(limit.failure_burst);
        Self {
            authority,
            limiter: RateLimiter::keyed(quota),
            failures: RateLimiter::keyed(failures),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a request's credential with `check`, unless its address has failed too often.
    fn authenticate<T>(
        &self,
        parts: &Parts,
        check: impl FnOnce(&str) -> Result<T, AuthError>,
    ) -> Result<T, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let now = Instant::now();
        if let Some(until) = self.blocked().get(&peer).copied()
            && until > now
        {
            return Err(ApiError::RateLimited {
                retry_after_secs: (until - now).as_secs().max(1),
            });
        }
        let failure = match token(parts).and_then(check) {
            Ok(found) => return Ok(found),
            Err(e) => e,
        };
        if let Err(not_until) = self.failures.check_key(&peer) {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(self.failures.clock().now());
            let mut blocked = self.blocked();
            if blocked.len() > LIMITER_KEYS {
                blocked.retain(|_, until| *until > now);
            }
            blocked.insert(peer, now + wait);
            tracing::warn!(%peer, "too many failed authentications; refusing for a while");
            return Err(ApiError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        Err(failure.into())
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        // The map holds deadlines only; a panic elsewhere cannot leave it inconsistent.
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
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
        let access = &state.parts.access;
        let rider = access.authenticate(parts, |token| access.authority.rider(token))?;
        access.admit(&rider)?;
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
        let access = &state.parts.access;
        access.authenticate(parts, |token| access.authority.check_admin(token))?;
        Ok(Self)
    }
}
