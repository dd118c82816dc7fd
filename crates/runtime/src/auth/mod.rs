//! Who is calling: Bearer JSON Web Tokens on an actix-web API.
//!
//! [`AuthArgs`] is the configuration every public API flattens. There is no default:
//! a service starts only once told either `AUTH=jwt` (tokens checked against a key set,
//! an issuer and an audience) or `AUTH=off` (everyone is an anonymous administrator: for
//! a developer's machine, never for a deployment). With `jwt`, a request's
//! `Authorization: Bearer <token>` must carry a token
//!
//! - signed with RS256 or ES256 by a key of the JSON Web Key Set `AUTH_JWKS` (a file,
//!   or the identity provider's `jwks_uri`) whose `kid` and `alg` it names; the set is
//!   read again every `AUTH_JWKS_REFRESH`, and at once (at most every 30 s) when a
//!   token names a key it lacks: a rotation at the provider needs no restart;
//! - issued by `AUTH_ISSUER` for the audience `AUTH_AUDIENCE`, not expired and not
//!   before its time, give or take `AUTH_LEEWAY` of clock skew;
//! - with a subject (`sub`): the [`Principal`]. Its scopes (`scope`, space-separated,
//!   or `scp`, a list) make it an administrator when they hold `AUTH_ADMIN_SCOPE`.
//!
//! A handler takes a [`Principal`] argument (an actix extractor); a request without a
//! valid token gets `401` as `application/problem+json` with a `WWW-Authenticate:
//! Bearer` challenge, and [`Principal::may_act_for`] gives the `403` of a user acting on
//! another's data.
//!
//! ```no_run
//! # async fn run(rt: &mut orders_runtime::Runtime, args: orders_runtime::auth::AuthArgs) -> anyhow::Result<()> {
//! use actix_web::{HttpResponse, web};
//! use orders_runtime::auth::{Authenticator, Principal};
//!
//! async fn mine(principal: Principal, path: web::Path<String>) -> Result<HttpResponse, orders_runtime::auth::AuthError> {
//!     principal.may_act_for(&path)?;
//!     Ok(HttpResponse::Ok().body(format!("hello {}", principal.subject)))
//! }
//!
//! let authenticator = Authenticator::new(&args).await?;
//! rt.spawn("auth keys", { let a = authenticator.clone(); move |token| a.refresh_periodically(token) });
//! let data = web::Data::from(authenticator);
//! let _routes = move |cfg: &mut web::ServiceConfig| {
//!     cfg.app_data(data.clone()).route("/users/{id}", web::get().to(mine));
//! };
//! # Ok(()) }
//! ```

mod keys;

use std::{sync::Arc, time::Duration};

use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, dev::Payload, http::StatusCode, web};
use clap::{Args, ValueEnum};
use futures::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{config::parse_duration, problem::Problem};

/// The signature algorithms accepted.
pub(crate) const ACCEPTED: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];
/// The least time between two reads of the key set caused by unknown keys.
const UNKNOWN_KEY_REREAD: Duration = Duration::from_secs(30);

/// How callers of a public API are authenticated.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// `jwt`: every request needs a Bearer token checked against AUTH_JWKS, AUTH_ISSUER
    /// and AUTH_AUDIENCE; `off`: none is asked for and everyone may do everything (a
    /// developer's machine only). Required to serve: a deployment must say which.
    #[arg(long = "auth", env = "AUTH", value_enum)]
    pub mode: Option<AuthMode>,

    /// The JSON Web Key Set of the token signing keys: a file, or an http(s) URL (the
    /// identity provider's jwks_uri). Required with AUTH=jwt.
    #[arg(long = "auth-jwks", env = "AUTH_JWKS", required_if_eq("mode", "jwt"))]
    pub jwks: Option<String>,

    /// The issuer (`iss`) tokens must name. Required with AUTH=jwt.
    #[arg(long = "auth-issuer", env = "AUTH_ISSUER", required_if_eq("mode", "jwt"))]
    pub issuer: Option<String>,

    /// The audience (`aud`) tokens must name: this API. Required with AUTH=jwt.
    #[arg(long = "auth-audience", env = "AUTH_AUDIENCE", required_if_eq("mode", "jwt"))]
    pub audience: Option<String>,

    /// The clock skew allowed on a token's expiry and not-before times.
    #[arg(long = "auth-leeway", env = "AUTH_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub leeway: Duration,

    /// The scope that lets a token act on every user's orders.
    #[arg(long = "auth-admin-scope", env = "AUTH_ADMIN_SCOPE", default_value = "orders:admin")]
    pub admin_scope: String,

    /// How often the key set is read again (besides when a token names an unknown key).
    #[arg(long = "auth-jwks-refresh", env = "AUTH_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub jwks_refresh: Duration,
}

/// Whether tokens are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Bearer JWTs.
    Jwt,
    /// None: everyone is an anonymous administrator.
    Off,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject (`sub`); `anonymous` without authentication.
    pub subject: String,
    /// Whether the token holds the admin scope (always, without authentication).
    pub admin: bool,
}

impl Principal {
    /// The principal of every request when authentication is off.
    pub fn anonymous() -> Self {
        Self { subject: "anonymous".into(), admin: true }
    }

    /// Whether this principal may act on `user`'s data: their own, or anyone's as an
    /// administrator; else a `403`.
    pub fn may_act_for(&self, user: &str) -> Result<(), AuthError> {
        if self.admin || self.subject == user {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!("the token's subject may not act on the data of user {user}")))
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("the request carries no bearer token (Authorization: Bearer <token>)")]
    Missing,
    /// A token that does not pass.
    #[error("{0}")]
    Invalid(String),
    /// A valid token that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The service has no authenticator: a bug in its wiring.
    #[error("authentication is not set up on this route")]
    NotConfigured,
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Missing | Self::Invalid(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (slug, title) = match self {
            Self::Missing | Self::Invalid(_) => ("unauthenticated", "The request is not authenticated"),
            Self::Forbidden(_) => ("forbidden", "The caller may not do this"),
            Self::NotConfigured => ("internal", "Internal error"),
        };
        let challenge = match self {
            Self::Missing => Some("Bearer".to_string()),
            // The reason stays in the body: it may carry what the client sent (a kid).
            Self::Invalid(_) => Some("Bearer error=\"invalid_token\"".to_string()),
            _ => None,
        };
        Problem::new(self.status_code(), slug, title, self.to_string()).response(|r| {
            if let Some(challenge) = challenge {
                r.insert_header(("WWW-Authenticate", challenge));
            }
        })
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    /// Checked present by the validation (a required claim), which runs after this is
    /// read: optional here, so that its absence reads as such and not as malformed JSON.
    sub: Option<String>,
    #[serde(default)]
    scope: Option<Scopes>,
    #[serde(default)]
    scp: Option<Scopes>,
}

/// Scopes as providers write them: one space-separated string (OAuth's `scope`, Entra
/// ID's `scp`) or a list (Okta's `scp`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scopes {
    Text(String),
    List(Vec<String>),
}

impl Scopes {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::Text(text) => text.split_whitespace().any(|s| s == wanted),
            Self::List(list) => list.iter().any(|s| s == wanted),
        }
    }
}

/// Checks the tokens of one API (shared by its workers; see the module docs).
pub struct Authenticator {
    mode: AuthMode,
    keys: Option<keys::Keys>,
    issuer: String,
    audience: String,
    leeway: Duration,
    admin_scope: String,
    refresh: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// The authenticator `args` describe; with `jwt`, the key set is read now, and a set
    /// that cannot be read or holds no usable key stops the start.
    pub async fn new(args: &AuthArgs) -> crate::Result<Arc<Self>> {
        let missing = |what: &str| crate::Error::Config(format!("AUTH=jwt needs {what}"));
        let mode = args.mode.ok_or_else(|| {
            crate::Error::Config(
                "say how callers are authenticated: AUTH=jwt (with AUTH_JWKS, AUTH_ISSUER and \
                 AUTH_AUDIENCE), or AUTH=off on a developer's machine"
                    .into(),
            )
        })?;
        let keys = match mode {
            AuthMode::Off => {
                tracing::warn!("authentication is off (AUTH=off): every caller may do everything");
                None
            }
            AuthMode::Jwt => {
                let source = keys::Source::parse(args.jwks.as_deref().ok_or_else(|| missing("AUTH_JWKS"))?);
                let keys = keys::Keys::new(source.clone(), UNKNOWN_KEY_REREAD.min(args.jwks_refresh));
                let count = keys.refresh(true).await.map_err(crate::Error::Config)?;
                tracing::info!(keys = count, source = %source, "token signing keys read");
                Some(keys)
            }
        };
        let text = |v: &Option<String>, what: &str| match mode {
            AuthMode::Off => Ok(String::new()),
            AuthMode::Jwt => v.clone().ok_or_else(|| missing(what)),
        };
        Ok(Arc::new(Self {
            mode,
            keys,
            issuer: text(&args.issuer, "AUTH_ISSUER")?,
            audience: text(&args.audience, "AUTH_AUDIENCE")?,
            leeway: args.leeway,
            admin_scope: args.admin_scope.clone(),
            refresh: args.jwks_refresh,
        }))
    }

    /// Whether requests need a token (`AUTH=jwt`): what the API's document declares.
    pub fn required(&self) -> bool {
        self.mode == AuthMode::Jwt
    }

    /// Reads the key set again every `AUTH_JWKS_REFRESH` until `token` is cancelled (a
    /// task for [`crate::Runtime::spawn`]); a failed read keeps the keys known and is
    /// logged.
    pub async fn refresh_periodically(self: Arc<Self>, token: CancellationToken) -> anyhow::Result<()> {
        let Some(keys) = &self.keys else {
            token.cancelled().await;
            return Ok(());
        };
        loop {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.refresh) => {}
            }
            match keys.refresh(true).await {
                Ok(count) => tracing::debug!(keys = count, "token signing keys read again"),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the token signing keys again failed; keeping the known ones")
                }
            }
        }
    }

    /// The principal of a request with this `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let Some(keys) = &self.keys else {
            return Ok(Principal::anonymous());
        };
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("the token is malformed".into()))?;
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
        let key = match keys.get(&kid) {
            Some(key) => key,
            // A key the set lacks: perhaps rotated in at the provider since the last read.
            None => {
                if let Err(e) = keys.refresh(false).await {
                    tracing::warn!(error = %e, "reading the token signing keys again failed");
                }
                keys.get(&kid)
                    .ok_or_else(|| AuthError::Invalid(format!("the token's key {kid} is not known")))?
            }
        };
        if header.alg != key.algorithm {
            return Err(AuthError::Invalid(format!(
                "the token's algorithm is not its key's ({:?})",
                key.algorithm
            )));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(explain(e.kind()).into()))?
            .claims;
        let admin = [&claims.scope, &claims.scp]
            .into_iter()
            .flatten()
            .any(|scopes| scopes.contains(&self.admin_scope));
        let subject = claims.sub.filter(|s| !s.is_empty()).ok_or_else(|| {
            AuthError::Invalid(explain(&ErrorKind::MissingRequiredClaim("sub".into())).into())
        })?;
        Ok(Principal { subject, admin })
    }
}

/// What a token's failure means, in words for the client (nothing of the key).
fn explain(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token's issuer is not trusted",
        ErrorKind::InvalidAudience => "the token is not for this API",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud, sub)",
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
        _ => "the token is malformed",
    }
}

impl FromRequest for Principal {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let authenticator = req.app_data::<web::Data<Authenticator>>().cloned();
        let authorization =
            req.headers().get("Authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        Box::pin(async move {
            let authenticator = authenticator.ok_or(AuthError::NotConfigured)?;
            authenticator.authenticate(authorization.as_deref()).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_come_as_one_string_or_as_a_list() {
        let claims: Claims =
            serde_json::from_str(r#"{"sub": "a", "scope": "orders:read orders:admin"}"#).expect("json");
        assert!(claims.scope.as_ref().is_some_and(|s| s.contains("orders:admin")));
        let claims: Claims =
            serde_json::from_str(r#"{"sub": "a", "scp": ["orders:read", "orders:admin"]}"#).expect("json");
        assert!(claims.scp.as_ref().is_some_and(|s| s.contains("orders:admin")));
        let claims: Claims = serde_json::from_str(r#"{"sub": "a", "scp": "orders:admin"}"#).expect("json");
        assert!(claims.scp.as_ref().is_some_and(|s| s.contains("orders:admin")));
        let claims: Claims =
            serde_json::from_str(r#"{"sub": "a", "scope": "orders:administrator"}"#).expect("json");
        assert!(
            !claims.scope.as_ref().is_some_and(|s| s.contains("orders:admin")),
            "a prefix is not the scope"
        );
    }

    #[test]
    fn a_refusal_challenges_without_echoing_the_token() {
        let response = AuthError::Invalid("the token's key \"x\r\n is not known".into()).error_response();
        let challenge =
            response.headers().get("WWW-Authenticate").and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(challenge.as_deref(), Some("Bearer error=\"invalid_token\""));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}
