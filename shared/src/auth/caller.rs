//! A verified caller and what it may do (scopes, a proxy restriction).

use std::collections::HashSet;

use crate::domain::tier::Tier;
use crate::error::ApiError;

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
    pub(super) scopes: Option<HashSet<String>>,
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
