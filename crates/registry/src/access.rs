//! Who may change the registry: optional HTTP basic authentication configured the way
//! Confluent's registry is (`authentication.method=BASIC`, a realm, roles and a Jetty-style
//! users file), an instance that refuses every write, and a log line for every write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::Registry;
use crate::error::RegistryError;
use crate::store::RegistryMode;

/// Which requests must carry a credential once authentication is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every request, as Confluent's registry does.
    #[default]
    All,
    /// Only requests that change something; reads stay open to every client.
    Writes,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("users file line {line}: expected `user: password[,role...]`")]
    Malformed { line: usize },
    #[error("users file line {line}: only plain passwords are supported, not {kind}: credentials")]
    Obfuscated { line: usize, kind: &'static str },
    #[error("the users file names no user")]
    Empty,
}

#[derive(Clone)]
struct User {
    password: String,
    roles: Vec<String>,
}

/// Users who may authenticate, read from a file in the format Confluent's registry takes
/// through Jetty's `PropertyFileLoginModule`: `user: password[,role...]`, `#` comments.
#[derive(Clone, Default)]
pub struct Users(HashMap<String, User>);

// Passwords never reach a log, even through Debug.
impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Users {
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = AccessError::Malformed { line: i + 1 };
            let (name, rest) = line.split_once(':').ok_or(malformed)?;
            let mut parts = rest.split(',').map(str::trim);
            let password = parts.next().unwrap_or_default();
            let name = name.trim();
            if name.is_empty() || password.is_empty() {
                return Err(AccessError::Malformed { line: i + 1 });
            }
            if let Some(kind) = ["OBF", "MD5", "CRYPT"]
                .into_iter()
                .find(|k| password.starts_with(&format!("{k}:")))
            {
                return Err(AccessError::Obfuscated { line: i + 1, kind });
            }
            let roles = parts.filter(|r| !r.is_empty()).map(str::to_owned).collect();
            users.insert(
                name.to_owned(),
                User {
                    password: password.to_owned(),
                    roles,
                },
            );
        }
        if users.is_empty() {
            return Err(AccessError::Empty);
        }
        Ok(Self(users))
    }

    /// The user a `user:password` pair names, if the password is right and the user holds
    /// one of `roles` (`*` admits any).
    fn authenticate(&self, user: &str, password: &str, roles: &[String]) -> bool {
        // Compare against a dummy for unknown users so that timing does not tell who exists.
        let found = self.0.get(user);
        let stored = found.map_or("\u{0}", |u| u.password.as_str());
        let matches: bool = stored.as_bytes().ct_eq(password.as_bytes()).into();
        let permitted = roles.iter().any(|r| r == "*")
            || found.is_some_and(|u| u.roles.iter().any(|r| roles.contains(r)));
        found.is_some() && matches && permitted
    }
}

/// Basic authentication as configured at start-up.
#[derive(Debug, Clone)]
pub struct Basic {
    pub users: Users,
    pub realm: String,
    /// Roles a user must hold one of; `*` admits every user in the file.
    pub roles: Vec<String>,
    pub scope: Scope,
}

/// What this registry instance lets clients do.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `None`: no credential is asked for.
    pub basic: Option<Basic>,
    /// Refuse every write, whatever the stored mode: a replica that only serves reads.
    pub read_only: bool,
}

/// Whether a request changes the registry. Lookups and compatibility checks are POSTs that
/// change nothing.
pub fn is_write(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        Method::POST => path.starts_with("/subjects/") && path.ends_with("/versions"),
        _ => true,
    }
}

/// The user a request authenticates as, or `None` when its credential is missing or wrong.
fn credential(request: &Request, basic: &Basic) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (kind, encoded) = value.split_once(' ')?;
    if !kind.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    basic
        .users
        .authenticate(user, password, &basic.roles)
        .then(|| user.to_owned())
}

/// Authenticates, enforces read-only, and logs every write, allowed or not, with who made it
/// and how it ended.
pub(crate) async fn guard(
    State((registry, access)): State<(Arc<Registry>, Arc<Access>)>,
    request: Request,
    next: Next,
) -> Response {
    let write = is_write(request.method(), request.uri().path());
    let user = match &access.basic {
        Some(basic) if write || basic.scope == Scope::All => {
            credential(&request, basic).ok_or(basic)
        }
        _ => Ok("anonymous".to_owned()),
    };
    if !write {
        return match user {
            Ok(_) => next.run(request).await,
            Err(basic) => unauthorized(&basic.realm),
        };
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    // The stored mode stops every write but the one that changes the mode back.
    let stored_read_only = registry.read().mode() == RegistryMode::ReadOnly && path != "/mode";
    let (user, response) = match user {
        Err(basic) => ("unauthenticated".to_owned(), unauthorized(&basic.realm)),
        Ok(user) if access.read_only || stored_read_only => {
            (user, RegistryError::ReadOnly.into_response())
        }
        Ok(user) => (user, next.run(request).await),
    };
    let status = response.status().as_u16();
    if response.status().is_success() {
        tracing::info!(%user, %peer, %method, %path, status, "registry write");
    } else {
        tracing::warn!(%user, %peer, %method, %path, status, "registry write refused");
    }
    response
}

fn unauthorized(realm: &str) -> Response {
    let mut response = RegistryError::Unauthorized.into_response();
    let challenge = format!("Basic realm=\"{}\"", realm.replace('"', ""));
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_file_reads_like_jettys() {
        let users =
            Users::parse("# admins\nfred: s3cret,admin,user\n\n barney : pw \n").expect("parses");
        let any = ["*".to_owned()];
        let admin = ["admin".to_owned()];
        assert!(users.authenticate("fred", "s3cret", &any));
        assert!(users.authenticate("fred", "s3cret", &admin));
        assert!(users.authenticate("barney", "pw", &any));
        assert!(
            !users.authenticate("barney", "pw", &admin),
            "barney has no role"
        );
        assert!(!users.authenticate("fred", "wrong", &any));
        assert!(!users.authenticate("wilma", "\u{0}", &any));
        assert!(!format!("{users:?}").contains("s3cret"));
    }

    #[test]
    fn a_bad_users_file_is_refused_without_echoing_it() {
        let err = Users::parse("fred s3cret").expect_err("no colon");
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(!err.to_string().contains("s3cret"));
        let err = Users::parse("fred: MD5:abc").expect_err("hashed");
        assert!(err.to_string().contains("MD5"), "{err}");
        assert!(matches!(
            Users::parse("# nobody\n"),
            Err(AccessError::Empty)
        ));
    }

    #[test]
    fn lookups_and_compatibility_checks_are_reads() {
        assert!(is_write(&Method::POST, "/subjects/a-value/versions"));
        assert!(!is_write(&Method::POST, "/subjects/a-value"));
        assert!(!is_write(
            &Method::POST,
            "/compatibility/subjects/a-value/versions/latest"
        ));
        assert!(!is_write(
            &Method::POST,
            "/compatibility/subjects/a-value/versions"
        ));
        assert!(is_write(&Method::PUT, "/config"));
        assert!(is_write(&Method::PUT, "/mode"));
        assert!(is_write(&Method::DELETE, "/subjects/a-value"));
        assert!(!is_write(&Method::GET, "/subjects"));
    }
}
