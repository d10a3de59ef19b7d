//! Bearer-token verification and what a verified caller may do.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::config::{AuthConfig, KeySource};
use crate::error::ApiError;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
    Enterprise,
}

impl Tier {
    /// Unknown or absent tiers count as `free`: a typo must never grant more.
    pub fn from_claim(claim: Option<&str>) -> Self {
        match claim {
            Some("pro") => Self::Pro,
            Some("enterprise") => Self::Enterprise,
            _ => Self::Free,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }

    /// Longest `daily` range or `aggregation` period, both ends inclusive.
    pub fn max_range_days(self) -> i64 {
        match self {
            Self::Free => 31,
            Self::Pro => 366,
            Self::Enterprise => 3660,
        }
    }

    /// How long raw events are kept (DynamoDB TTL); daily rollups are kept.
    pub fn raw_retention_days(self) -> i64 {
        match self {
            Self::Free => 7,
            Self::Pro => 30,
            Self::Enterprise => 90,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    MetricsWrite,
    MetricsRead,
    ProxiesWrite,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MetricsWrite => "metrics:write",
            Self::MetricsRead => "metrics:read",
            Self::ProxiesWrite => "proxies:write",
        }
    }
}

/// A caller whose token has been verified.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub tier: Tier,
    scopes: Option<HashSet<String>>,
    /// Set for a token handed to one proxy: it may act on that proxy only.
    pub proxy_id: Option<String>,
}

impl Caller {
    /// A user token with every scope (used by tests and tools).
    pub fn user(user_id: impl Into<String>, tier: Tier) -> Self {
        Self {
            user_id: user_id.into(),
            tier,
            scopes: None,
            proxy_id: None,
        }
    }

    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        match &self.scopes {
            Some(granted) if !granted.contains(scope.as_str()) => Err(ApiError::Forbidden(
                format!("This token lacks the '{}' scope.", scope.as_str()),
            )),
            _ => Ok(()),
        }
    }

    /// A proxy-scoped token may act on its own proxy only; decided before any
    /// ownership lookup so it reveals nothing about other proxies.
    pub fn require_proxy(&self, proxy_id: &str) -> Result<(), ApiError> {
        match &self.proxy_id {
            Some(own) if own != proxy_id => Err(ApiError::Forbidden(
                "This token is limited to another proxy.".into(),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    proxy_id: Option<String>,
    #[serde(default)]
    iat: Option<i64>,
}

/// Verifies bearer tokens against the configured keys. Built once per container.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let (key, algorithms) = match &config.keys {
            KeySource::SharedSecret(secret) => {
                (DecodingKey::from_secret(secret), vec![Algorithm::HS256])
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Self { key, validation }
    }

    /// Checks the `Authorization` header value and returns the caller.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let header = authorization
            .ok_or_else(|| ApiError::Unauthorized("Missing Authorization header.".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization must be 'Bearer <token>'.".into())
            })?;
        let data = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::Unauthorized(describe_jwt_error(&e).into()))?;
        let claims = data.claims;
        let user_id = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("The token has no subject (sub).".into()))?;
        // `iat` is honoured: a token issued in the future (beyond the leeway) is refused.
        if claims
            .iat
            .is_some_and(|iat| iat > chrono::Utc::now().timestamp() + LEEWAY_SECONDS as i64)
        {
            return Err(ApiError::Unauthorized(
                "The token was issued in the future (iat).".into(),
            ));
        }
        Ok(Caller {
            user_id,
            tier: Tier::from_claim(claims.tier.as_deref()),
            scopes: claims
                .scope
                .map(|s| s.split_whitespace().map(str::to_string).collect()),
            proxy_id: claims.proxy_id,
        })
    }
}

fn describe_jwt_error(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "The token has expired.",
        ErrorKind::ImmatureSignature => "The token is not valid yet (nbf).",
        ErrorKind::InvalidSignature => "The token signature is invalid.",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "The token's signing algorithm is not accepted."
        }
        ErrorKind::InvalidIssuer => "The token's issuer is not accepted.",
        ErrorKind::InvalidAudience => "The token's audience is not accepted.",
        ErrorKind::MissingRequiredClaim(_) => "The token lacks a required claim (exp or sub).",
        _ => "The token is malformed.",
    }
}
