//! Configuration from environment variables, validated once at start-up.
//!
//! The store's part lives here (every function has it); the token checks'
//! part is `auth::AuthConfig` and the API functions' whole configuration is
//! `app::Config`. Nothing else in the crate touches the environment.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// The variables of the process, or of a test: a trimmed value, `None` when
/// unset or empty.
pub struct Vars(HashMap<String, String>);

impl Vars {
    pub fn from_env() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn from_map(vars: &HashMap<String, String>) -> Self {
        Self(vars.clone())
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
}

/// Where the table is and how to reach it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub table_name: String,
    /// Only set locally and in tests: where the DynamoDB API is served.
    pub dynamodb_endpoint: Option<String>,
    /// What Lambda puts in every function's environment: the region and the
    /// execution role's credentials (checked when the client is built).
    pub aws: AwsEnvironment,
}

/// `AWS_REGION` and the execution role's credentials, as Lambda sets them.
#[derive(Clone, Default)]
pub struct AwsEnvironment {
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEnvironment")
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .finish_non_exhaustive()
    }
}

/// The roots of Amazon Trust Services, which sign every AWS endpoint's
/// certificate: the only ones the DynamoDB client trusts. Compiled in, so a
/// cold start reads and parses 5 certificates instead of the system's ~140
/// (the largest share of init time; see BENCHMARKS.md, "Cold start").
const AMAZON_ROOTS: &str = include_str!("../certs/amazon-trust-services.pem");

/// The SDK's HTTPS client, less one connector build at client construction.
///
/// Its `validate_base_client_config` builds a connector (trust store parsed,
/// TLS configuration made) only to throw it away, "so that native certs load
/// at client initialization": this client loads no native roots, and every
/// connection pool builds its own connector at its first request anyway. One
/// of a cold read's three builds (~0.28 M instructions of ~6.2 M; see
/// BENCHMARKS.md, "Where a cold read's instructions go").
#[derive(Debug)]
struct NoEagerConnector(aws_sdk_dynamodb::config::SharedHttpClient);

impl aws_sdk_dynamodb::config::HttpClient for NoEagerConnector {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_sdk_dynamodb::config::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

impl StoreConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: vars
                .get("TABLE_NAME")
                .ok_or_else(|| ConfigError("TABLE_NAME must name the DynamoDB table".into()))?,
            dynamodb_endpoint: vars.get("DYNAMODB_ENDPOINT"),
            aws: AwsEnvironment {
                region: vars
                    .get("AWS_REGION")
                    .or_else(|| vars.get("AWS_DEFAULT_REGION")),
                access_key_id: vars.get("AWS_ACCESS_KEY_ID"),
                secret_access_key: vars.get("AWS_SECRET_ACCESS_KEY"),
                session_token: vars.get("AWS_SESSION_TOKEN"),
            },
        })
    }

    /// The DynamoDB client every function builds once, at start-up: the
    /// region and credentials Lambda provides in the environment (no
    /// provider chain, no profile files), and an HTTPS client trusting only
    /// Amazon's roots.
    pub fn dynamodb_client(&self) -> Result<aws_sdk_dynamodb::Client, ConfigError> {
        use aws_sdk_dynamodb::config::{Credentials, Region};
        use aws_smithy_http_client::tls::{
            self, TlsContext, TrustStore, rustls_provider::CryptoMode,
        };
        let need = |value: &Option<String>, name: &str| {
            value
                .clone()
                .ok_or_else(|| ConfigError(format!("{name} must be set (Lambda sets it)")))
        };
        let region = need(&self.aws.region, "AWS_REGION")?;
        let credentials = Credentials::new(
            need(&self.aws.access_key_id, "AWS_ACCESS_KEY_ID")?,
            need(&self.aws.secret_access_key, "AWS_SECRET_ACCESS_KEY")?,
            self.aws.session_token.clone(),
            None,
            "lambda-environment",
        );
        let trust = TrustStore::empty().with_pem_certificate(AMAZON_ROOTS.as_bytes());
        let tls = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| ConfigError(format!("TLS set-up: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls)
            .build_https();
        let mut conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .http_client(NoEagerConnector(http))
            // Our own retry loop (storage::retry) decides how long to keep
            // trying, so the SDK's standard retries are kept short.
            .retry_config(
                aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(2),
            );
        if let Some(endpoint) = &self.dynamodb_endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        Ok(aws_sdk_dynamodb::Client::from_conf(conf.build()))
    }
}
