//! The local stand-in for DynamoDB: an embedded dynoxide holding the table
//! that `infra/template.yaml` defines (the template is the single source of
//! truth for keys, indexes and TTL), plus a demo-token minter.
//!
//! Used by the `local-stack` binary and by the tests.

pub mod front;

use std::path::{Path, PathBuf};

use dynoxide::Database;
use serde_json::{Value, json};

/// The logical id of the table resource in the template.
pub const TABLE_RESOURCE: &str = "MetricsTable";

/// Where the workspace root is (this crate lives in `infra/local-stack`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

pub fn template_path() -> PathBuf {
    workspace_root().join("infra/template.yaml")
}

/// What creating the table locally takes: the CreateTable request and the TTL attribute.
#[derive(Debug, Clone)]
pub struct TableDefinition {
    pub create_table: Value,
    pub ttl_attribute: Option<String>,
}

/// Reads the table's definition from the SAM template.
pub fn table_definition(template: &Path, table_name: &str) -> Result<TableDefinition, String> {
    let text = std::fs::read_to_string(template)
        .map_err(|e| format!("cannot read {}: {e}", template.display()))?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("{} is not YAML: {e}", template.display()))?;
    let props = doc
        .get("Resources")
        .and_then(|r| r.get(TABLE_RESOURCE))
        .and_then(|t| t.get("Properties"))
        .ok_or_else(|| {
            format!(
                "{} has no Resources.{TABLE_RESOURCE}.Properties",
                template.display()
            )
        })?;
    let plain = |key: &str| -> Result<Option<Value>, String> {
        props
            .get(key)
            .map(|v| serde_json::to_value(v).map_err(|e| format!("{TABLE_RESOURCE}.{key}: {e}")))
            .transpose()
    };
    let mut create = json!({"TableName": table_name});
    for key in [
        "AttributeDefinitions",
        "KeySchema",
        "GlobalSecondaryIndexes",
        "BillingMode",
    ] {
        if let Some(v) = plain(key)? {
            create[key] = v;
        }
    }
    let ttl_attribute = plain("TimeToLiveSpecification")?
        .filter(|t| t["Enabled"].as_bool().unwrap_or(false))
        .and_then(|t| t["AttributeName"].as_str().map(str::to_string));
    Ok(TableDefinition {
        create_table: create,
        ttl_attribute,
    })
}

/// Creates the table (and its TTL) unless it exists already.
pub fn ensure_table(db: &Database, definition: &TableDefinition) -> Result<bool, String> {
    let name = definition.create_table["TableName"]
        .as_str()
        .unwrap_or_default();
    let existing = db
        .list_tables(serde_json::from_value(json!({})).map_err(|e| e.to_string())?)
        .map_err(|e| format!("listing tables: {e}"))?;
    if existing.table_names.iter().any(|t| t == name) {
        return Ok(false);
    }
    let request = serde_json::from_value(definition.create_table.clone())
        .map_err(|e| format!("the template's table is not a valid CreateTable request: {e}"))?;
    db.create_table(request)
        .map_err(|e| format!("creating table {name}: {e}"))?;
    if let Some(attribute) = &definition.ttl_attribute {
        let request = serde_json::from_value(json!({
            "TableName": name,
            "TimeToLiveSpecification": {"AttributeName": attribute, "Enabled": true}
        }))
        .map_err(|e| e.to_string())?;
        db.update_time_to_live(request)
            .map_err(|e| format!("enabling TTL on {name}: {e}"))?;
    }
    Ok(true)
}

/// Creates the template's table (and its TTL) on the DynamoDB API at
/// `endpoint` unless it exists; `Ok(true)` if it was created. Credentials
/// and region come from the environment, as for any AWS client.
pub async fn ensure_table_at(endpoint: &str, definition: &TableDefinition) -> Result<bool, String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TimeToLiveSpecification,
    };
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(endpoint);
    // An emulator takes any credentials; a real table needs the caller's,
    // which the environment then holds.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local",
            "local",
            None,
            None,
            "local-stack",
        ));
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        loader = loader.region(aws_config::Region::new("us-east-1"));
    }
    let config = loader.load().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let create = &definition.create_table;
    let name = create["TableName"].as_str().unwrap_or_default().to_string();
    match client.describe_table().table_name(&name).send().await {
        Ok(_) => return Ok(false),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => return Err(format!("cannot reach DynamoDB at {endpoint}: {e:?}")),
    }
    let mut request = client.create_table().table_name(&name);
    for a in create["AttributeDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    a["AttributeType"].as_str().unwrap_or("S"),
                ))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    for k in create["KeySchema"].as_array().into_iter().flatten() {
        request = request.key_schema(
            KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().unwrap_or_default())
                .key_type(KeyType::from(k["KeyType"].as_str().unwrap_or("HASH")))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    if create.get("GlobalSecondaryIndexes").is_some() {
        return Err("the template's table has secondary indexes, which the external-endpoint path does not create".into());
    }
    request = request.billing_mode(BillingMode::from(
        create["BillingMode"].as_str().unwrap_or("PAY_PER_REQUEST"),
    ));
    request
        .send()
        .await
        .map_err(|e| format!("creating table {name} at {endpoint}: {e:?}"))?;
    // A real table takes a while to become active; an emulator is at once.
    for _ in 0..120 {
        let status = client
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .ok()
            .and_then(|d| d.table().and_then(|t| t.table_status().cloned()));
        if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    if let Some(attribute) = &definition.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await
            .map_err(|e| format!("enabling TTL on {name} at {endpoint}: {e:?}"))?;
    }
    Ok(true)
}

/// An in-memory database holding the template's table (for tests).
pub fn memory_database(table_name: &str) -> Result<Database, String> {
    let db = Database::memory().map_err(|e| e.to_string())?;
    ensure_table(&db, &table_definition(&template_path(), table_name)?)?;
    Ok(db)
}

/// A file-backed database under `data_dir` holding the template's table.
pub fn file_database(data_dir: &Path, table_name: &str) -> Result<Database, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let path = data_dir.join("dynamodb.sqlite");
    let db = Database::new(&path.to_string_lossy())
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let created = ensure_table(&db, &table_definition(&template_path(), table_name)?)?;
    if created {
        eprintln!("created table {table_name} in {}", path.display());
    }
    Ok(db)
}

/// Serves the DynamoDB API for `db` on `listener` in the background.
pub fn spawn_server(
    listener: tokio::net::TcpListener,
    db: Database,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(dynoxide::server::serve_on(listener, db))
}

/// The scheduled aggregation (EventBridge every minute in the template).
pub const AGGREGATE_FUNCTION: &str = "aggregate-metrics";
/// The scheduled alert evaluation (EventBridge every minute in the template).
pub const EVALUATE_ALERTS_FUNCTION: &str = "evaluate-alerts";
/// The local stack's documented key for sealing webhook secrets (README,
/// "Alerts"); never a deployment's, which the template resolves from Secrets
/// Manager.
pub const LOCAL_ALERTS_SECRET_KEY: &str = "bG9jYWwtc3RhY2stYWxlcnRzLWtleS0zMi1ieXRlcyE=";
/// Functions that check no token get no JWT settings (as in the template).
pub const TOKENLESS_FUNCTIONS: &[&str] = &[
    AGGREGATE_FUNCTION,
    EVALUATE_ALERTS_FUNCTION,
    "get-dashboard",
];
/// Functions that seal, open or send to webhooks: the only ones given
/// `ALERTS_SECRET_KEY` (as in the template) and `ALLOW_LOOPBACK_WEBHOOKS`
/// (the local stack's alone: the template never sets it).
pub const WEBHOOK_FUNCTIONS: &[&str] = &["create-alert", "test-alert", EVALUATE_ALERTS_FUNCTION];

/// Whether `function` is given the setting `name` (the template's split,
/// so that a function missing a variable it needs fails here as it would
/// deployed).
pub fn function_gets(function: &str, name: &str) -> bool {
    if name.starts_with("JWT_") {
        return !TOKENLESS_FUNCTIONS.contains(&function);
    }
    if name == "ALERTS_SECRET_KEY" || name == "ALLOW_LOOPBACK_WEBHOOKS" {
        return WEBHOOK_FUNCTIONS.contains(&function);
    }
    true
}

/// The real time: the local stack (demo tokens, the emulated schedule) runs
/// on the wall clock, like a deployment.
#[allow(clippy::disallowed_methods)]
pub fn wall_clock() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// Claims of the demo token the local stack prints.
#[derive(serde::Serialize)]
struct DemoClaims<'a> {
    sub: &'a str,
    tier: &'a str,
    exp: i64,
    iat: i64,
}

/// An HS256 user token (all scopes) for `sub`, valid for `days`.
pub fn demo_token(secret: &str, sub: &str, tier: &str, days: i64) -> Result<String, String> {
    let now = wall_clock().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &DemoClaims {
            sub,
            tier,
            exp: now + days * 86_400,
            iat: now,
        },
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}
