//! Configuration from environment variables, validated once at start-up.
//!
//! Every variable the functions read is named here; nothing else in the crate
//! touches the environment.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Where token signatures are checked against.
#[derive(Clone)]
pub enum KeySource {
    /// HS256 with a shared secret (`JWT_SECRET`).
    SharedSecret(Vec<u8>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SharedSecret(_) => f.write_str("SharedSecret(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    /// Only set locally and in tests: where the DynamoDB API is served.
    pub dynamodb_endpoint: Option<String>,
    pub auth: AuthConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Builds the configuration from a map of variables (tests use this).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            vars.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let table_name = get("TABLE_NAME")
            .ok_or_else(|| ConfigError("TABLE_NAME must name the DynamoDB table".into()))?;
        let secret = get("JWT_SECRET").ok_or_else(|| {
            ConfigError("JWT_SECRET must be set to the HS256 signing secret".into())
        })?;
        if secret.len() < 16 {
            return Err(ConfigError(
                "JWT_SECRET must be at least 16 characters long".into(),
            ));
        }
        Ok(Self {
            table_name,
            dynamodb_endpoint: get("DYNAMODB_ENDPOINT"),
            auth: AuthConfig {
                keys: KeySource::SharedSecret(secret.into_bytes()),
                issuer: get("JWT_ISSUER"),
                audience: get("JWT_AUDIENCE"),
            },
        })
    }

    /// The DynamoDB client every function builds once, at start-up.
    pub async fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(endpoint) = &self.dynamodb_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        // Our own retry loop (storage::retry) decides how long to keep trying,
        // so the SDK's standard retries are kept short.
        let conf = aws_sdk_dynamodb::config::Builder::from(&shared)
            .retry_config(
                aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(2),
            )
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }
}
