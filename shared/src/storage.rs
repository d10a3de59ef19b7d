//! Every DynamoDB key, expression and transaction of the service.
//!
//! # Table layout (one table, `pk`/`sk` strings, TTL on `expiresAt`)
//!
//! | entity | pk | sk | why |
//! |---|---|---|---|
//! | proxy | `PROXY#{proxyId}` | `PROXY` | ids are global: one item per id, created with `attribute_not_exists` |
//! | owner's index entry | `OWNER#{userId}` | `PROXY#{proxyId}` | `GET /proxies` is one Query; written in the same transaction as the proxy |
//! | event id (idempotency) | `EVENTID#{proxyId}#{eventId}` | `EVENTID` | keyed by id alone, so a retry that changed its timestamp (even its day) still collides; spreads over partitions |
//! | event chunk | `EVENTS#{proxyId}#{day}` | `{receivedAtMs:013}#{uuid}` | the events of one request chunk for one day, packed (postcard) in `body`; a day is one Query |
//! | day head | `DAYS#{proxyId}` | `{day}` | `version` counts writes to the day; while the day awaits aggregation it carries the sparse `pending` GSI key |
//! | daily rollup | `ROLLUP#{proxyId}` | `{day}` | the materialised day and the head `version` it reflects; a range is one Query |
//!
//! `#` never occurs in a proxy id, event id or day, so keys cannot collide.
//! The `pending` GSI (`gsi1pk` = `PENDING#{shard}`, `gsi1sk` = `{proxyId}#{day}`,
//! keys only) is how the scheduled aggregation finds changed days without a
//! scan; the shard (a hash of proxy and day over [`PENDING_SHARDS`]) keeps a hot
//! proxy from making a hot index partition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnConsumedCapacity, TransactWriteItem, Update,
};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use rand::Rng;

use crate::auth::Tier;
use crate::clock::Clock;
use crate::domain::event::Event;
use crate::domain::rollup::Rollup;
use crate::error::ApiError;

pub const PENDING_SHARDS: u32 = 16;
/// The sparse, keys-only index of days awaiting aggregation.
const PENDING_INDEX: &str = "pending";
/// Unmaterialised days read at once by one request.
const STALE_DAY_READS: usize = 8;
/// DynamoDB's limit on actions in one TransactWriteItems.
const MAX_TRANSACT_ACTIONS: usize = 100;
/// Packed bytes per event-chunk item (DynamoDB's item limit is 400 KB).
const MAX_CHUNK_BODY_BYTES: usize = 300 * 1024;
/// Stays under the 4 MB request limit of a transaction with room to spare.
const MAX_TRANSACTION_BYTES: usize = 3 * 1024 * 1024;
/// Idempotency is promised for at least this long, whatever the tier.
const MIN_EVENT_ID_RETENTION_DAYS: i64 = 1;
/// Attempts at one storage call before answering 503.
const MAX_ATTEMPTS: u32 = 6;
const BACKOFF_BASE_MS: u64 = 25;
const BACKOFF_CAP_MS: u64 = 800;
/// Format byte in front of every packed body.
const BODY_FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub proxy_id: String,
    pub name: Option<String>,
    pub owner_id: String,
    pub registered_at: DateTime<Utc>,
}

impl Proxy {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "proxyId": self.proxy_id,
            "name": self.name,
            "ownerId": self.owner_id,
            "registeredAt": self.registered_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Recorded,
    Duplicate,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recorded => "recorded",
            Self::Duplicate => "duplicate",
        }
    }
}

/// What recording a batch did, per input event, and what it cost.
#[derive(Debug, Default)]
pub struct RecordOutcome {
    pub statuses: Vec<EventStatus>,
    pub write_units: f64,
    pub transactions: u32,
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
    clock: Clock,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn proxy_key(proxy_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".into(), s(format!("PROXY#{proxy_id}"))),
        ("sk".into(), s("PROXY")),
    ])
}

fn events_pk(proxy_id: &str, day: NaiveDate) -> String {
    format!("EVENTS#{proxy_id}#{}", day_key(day))
}

fn pending_shard(proxy_id: &str, day: NaiveDate) -> u32 {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in proxy_id.bytes().chain(day_key(day).into_bytes()) {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h % PENDING_SHARDS
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn parse_day_key(key: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(key, "%Y-%m-%d").ok()
}

fn get_blob<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a [u8]> {
    item.get(name)
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref())
}

pub fn encode_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    postcard::to_extend(value, vec![BODY_FORMAT])
        .map_err(|e| ApiError::Internal(format!("encoding a stored body: {e}")))
}

pub fn decode_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.split_first() {
        Some((&BODY_FORMAT, rest)) => postcard::from_bytes(rest)
            .map_err(|e| ApiError::Internal(format!("decoding a stored body: {e}"))),
        _ => Err(ApiError::Internal(
            "stored body has an unknown format".into(),
        )),
    }
}

/// Whether a failed call is worth another attempt.
enum Failure {
    Retryable(String),
    Fatal(ApiError),
}

const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "TransactionConflictException",
];

fn classify<E, R>(operation: &str, error: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Retryable(format!("{operation}: {error:?}"))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            if RETRYABLE_CODES.contains(&code) || code.is_empty() {
                Failure::Retryable(format!("{operation}: {code}"))
            } else {
                Failure::Fatal(ApiError::Internal(format!("{operation}: {error:?}")))
            }
        }
        _ => Failure::Fatal(ApiError::Internal(format!("{operation}: {error:?}"))),
    }
}

/// Full-jitter exponential backoff before attempt `attempt` (1-based).
async fn backoff(attempt: u32) {
    let cap = BACKOFF_CAP_MS.min(BACKOFF_BASE_MS << attempt.min(10));
    let wait = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Runs `call` with bounded, jittered retries; gives up with 503.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut last = String::new();
    for attempt in 1..=MAX_ATTEMPTS {
        match call().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retryable(why)) => {
                tracing::debug!(attempt, why = %why, "retrying storage call");
                last = why;
                if attempt < MAX_ATTEMPTS {
                    backoff(attempt).await;
                }
            }
        }
    }
    Err(ApiError::ServiceUnavailable(last))
}

/// One TransactWriteItems worth of events, planned within DynamoDB's limits.
struct Chunk<'a> {
    /// Indexes into the request's events, in order.
    members: Vec<usize>,
    events: &'a [Event],
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>, clock: Clock) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
        }
    }

    /// The clock the store (and the aggregation) reads "now" from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    // ---------------------------------------------------------------- proxies

    /// Registers a proxy and its owner's index entry in one transaction; both
    /// are conditional, so two users can never both own an id.
    pub async fn register_proxy(&self, proxy: &Proxy) -> Result<(), ApiError> {
        let registered_at = proxy
            .registered_at
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut item = proxy_key(&proxy.proxy_id);
        item.insert("proxyId".into(), s(&proxy.proxy_id));
        item.insert("ownerId".into(), s(&proxy.owner_id));
        item.insert("registeredAt".into(), s(&registered_at));
        if let Some(name) = &proxy.name {
            item.insert("name".into(), s(name));
        }
        let mut index = item.clone();
        index.insert("pk".into(), s(format!("OWNER#{}", proxy.owner_id)));
        index.insert("sk".into(), s(format!("PROXY#{}", proxy.proxy_id)));
        let put = |item: HashMap<String, AttributeValue>| -> Result<TransactWriteItem, ApiError> {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| ApiError::Internal(format!("building put: {e}")))?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        let actions = vec![put(item)?, put(index)?];
        let token = uuid::Uuid::new_v4().to_string();
        with_retries(|| async {
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .client_request_token(&token)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(err) => match cancellation_codes(&err) {
                    Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => {
                        Err(Failure::Fatal(ApiError::Conflict(format!(
                            "A proxy with id '{}' is already registered.",
                            proxy.proxy_id
                        ))))
                    }
                    Some(codes) => {
                        Err(Failure::Retryable(format!("register cancelled: {codes:?}")))
                    }
                    None => Err(classify("register proxy", err)),
                },
            }
        })
        .await
    }

    /// The proxy, read strongly consistently (a registration is visible at once).
    pub async fn get_proxy(&self, proxy_id: &str) -> Result<Option<Proxy>, ApiError> {
        let output = with_retries(|| async {
            self.client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(proxy_key(proxy_id)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| classify("get proxy", e))
        })
        .await?;
        Ok(output.item.as_ref().and_then(proxy_from_item))
    }

    /// The owner's proxies, ordered by id (the owner's partition holds only
    /// index entries).
    pub async fn list_proxies(&self, owner_id: &str) -> Result<Vec<Proxy>, ApiError> {
        let items = self
            .query_all(format!("OWNER#{owner_id}"), None, "list proxies")
            .await?;
        Ok(items.iter().filter_map(proxy_from_item).collect())
    }

    // ---------------------------------------------------------------- events

    /// Records validated events for a proxy, exactly once per event id.
    ///
    /// Events are planned into transactions within DynamoDB's limits. Each
    /// transaction puts one conditional id marker per event, one packed chunk
    /// per day and bumps each day's head (marking it pending). A transaction
    /// cancelled because some ids exist already is re-planned without them, so
    /// the new events still land in this request.
    pub async fn record_events(
        &self,
        proxy_id: &str,
        events: &[Event],
        tier: Tier,
        now: DateTime<Utc>,
    ) -> Result<RecordOutcome, ApiError> {
        let mut outcome = RecordOutcome {
            statuses: vec![EventStatus::Recorded; events.len()],
            ..Default::default()
        };
        // The same id twice in one request: the first one counts.
        let mut seen = HashSet::new();
        let mut pending: Vec<usize> = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if seen.insert(e.event_id.as_str()) {
                pending.push(i);
            } else {
                outcome.statuses[i] = EventStatus::Duplicate;
            }
        }
        let encoded: Vec<Vec<u8>> = events.iter().map(encode_body).collect::<Result<_, _>>()?;
        for chunk in plan_chunks(events, &encoded, &pending) {
            let chunk = Chunk {
                members: chunk,
                events,
            };
            self.write_chunk(proxy_id, chunk, tier, now, &mut outcome)
                .await?;
        }
        Ok(outcome)
    }

    async fn write_chunk(
        &self,
        proxy_id: &str,
        chunk: Chunk<'_>,
        tier: Tier,
        now: DateTime<Utc>,
        outcome: &mut RecordOutcome,
    ) -> Result<(), ApiError> {
        let mut members = chunk.members;
        let mut attempt = 0u32;
        // One plan = one request for DynamoDB's idempotency: the same actions
        // and token on every retry (a retry whose first attempt committed is
        // then answered as a success), a new plan and token only after
        // re-planning around duplicates.
        let mut token = uuid::Uuid::new_v4().to_string();
        let mut actions = self.chunk_actions(proxy_id, &members, chunk.events, tier, now)?;
        let mut last_failure = String::new();
        while !members.is_empty() {
            attempt += 1;
            if attempt > MAX_ATTEMPTS + members.len() as u32 {
                return Err(ApiError::ServiceUnavailable(last_failure));
            }
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .client_request_token(&token)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            match result {
                Ok(out) => {
                    outcome.transactions += 1;
                    outcome.write_units += out
                        .consumed_capacity()
                        .iter()
                        .filter_map(|c| c.capacity_units())
                        .sum::<f64>();
                    return Ok(());
                }
                Err(err) => {
                    match cancellation_codes(&err) {
                        Some(codes) => {
                            // Marker puts come first, one per member, in order.
                            let existing: Vec<usize> = members
                                .iter()
                                .zip(&codes)
                                .filter(|(_, code)| code.as_str() == "ConditionalCheckFailed")
                                .map(|(i, _)| *i)
                                .collect();
                            if !existing.is_empty() {
                                for i in &existing {
                                    outcome.statuses[*i] = EventStatus::Duplicate;
                                }
                                members.retain(|i| !existing.contains(i));
                                if !members.is_empty() {
                                    token = uuid::Uuid::new_v4().to_string();
                                    actions = self.chunk_actions(
                                        proxy_id,
                                        &members,
                                        chunk.events,
                                        tier,
                                        now,
                                    )?;
                                }
                                continue;
                            }
                            last_failure = format!("transaction cancelled: {codes:?}");
                        }
                        None => match classify("record events", err) {
                            Failure::Fatal(e) => return Err(e),
                            Failure::Retryable(why) => last_failure = why,
                        },
                    }
                    if attempt >= MAX_ATTEMPTS {
                        return Err(ApiError::ServiceUnavailable(last_failure));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(())
    }

    fn chunk_actions(
        &self,
        proxy_id: &str,
        members: &[usize],
        events: &[Event],
        tier: Tier,
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactWriteItem>, ApiError> {
        let retention_days = tier.raw_retention_days();
        let id_expiry = now.timestamp() + 86_400 * retention_days.max(MIN_EVENT_ID_RETENTION_DAYS);
        let chunk_id = uuid::Uuid::new_v4().simple().to_string();
        let received = now.timestamp_millis();
        let mut by_day: BTreeMap<NaiveDate, Vec<&Event>> = BTreeMap::new();
        let mut actions = Vec::with_capacity(members.len() + 4);
        for &i in members {
            let e = &events[i];
            let day = e.day();
            by_day.entry(day).or_default().push(e);
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(format!("EVENTID#{proxy_id}#{}", e.event_id)))
                .item("sk", s("EVENTID"))
                .item("day", s(day_key(day)))
                .item("chunk", s(format!("{received:013}#{chunk_id}")))
                .item("expiresAt", n(id_expiry))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| ApiError::Internal(format!("building marker put: {e}")))?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        for (day, day_events) in by_day {
            let day_end = crate::domain::rollup::day_start_ms(day) / 1000 + 86_400;
            let body = encode_body(&day_events)?;
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(events_pk(proxy_id, day)))
                .item("sk", s(format!("{received:013}#{chunk_id}")))
                .item("n", n(day_events.len()))
                .item("body", AttributeValue::B(Blob::new(body)))
                .item("expiresAt", n(day_end + 86_400 * retention_days))
                .build()
                .map_err(|e| ApiError::Internal(format!("building chunk put: {e}")))?;
            actions.push(TransactWriteItem::builder().put(put).build());
            let update = Update::builder()
                .table_name(&self.table)
                .key("pk", s(format!("DAYS#{proxy_id}")))
                .key("sk", s(day_key(day)))
                .update_expression(
                    "ADD #version :one SET gsi1pk = :shard, gsi1sk = :pending, proxyId = :proxy",
                )
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(
                    ":shard",
                    s(format!("PENDING#{}", pending_shard(proxy_id, day))),
                )
                .expression_attribute_values(":pending", s(format!("{proxy_id}#{}", day_key(day))))
                .expression_attribute_values(":proxy", s(proxy_id))
                .build()
                .map_err(|e| ApiError::Internal(format!("building head update: {e}")))?;
            actions.push(TransactWriteItem::builder().update(update).build());
        }
        Ok(actions)
    }

    /// Every event of one proxy's day, read strongly consistently.
    pub async fn day_events(&self, proxy_id: &str, day: NaiveDate) -> Result<Vec<Event>, ApiError> {
        let mut events = Vec::new();
        for item in self
            .query_all(events_pk(proxy_id, day), None, "read day events")
            .await?
        {
            let body = get_blob(&item, "body")
                .ok_or_else(|| ApiError::Internal("event chunk without body".into()))?;
            events.extend(decode_body::<Vec<Event>>(body)?);
        }
        Ok(events)
    }

    // ---------------------------------------------------------------- days

    /// The write version of each day of `[start, end]` that has ever had events.
    pub async fn day_versions(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, u64>, ApiError> {
        let items = self
            .query_all(
                format!("DAYS#{proxy_id}"),
                Some((day_key(start), day_key(end))),
                "read day heads",
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| Some((parse_day_key(get_s(item, "sk")?)?, get_n(item, "version")?)))
            .collect())
    }

    /// The most recent day that has events, if any.
    pub async fn latest_day(&self, proxy_id: &str) -> Result<Option<NaiveDate>, ApiError> {
        let page = with_retries(|| async {
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(format!("DAYS#{proxy_id}")))
                .scan_index_forward(false)
                .limit(1)
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| classify("read latest day", e))
        })
        .await?;
        Ok(page
            .items()
            .first()
            .and_then(|item| parse_day_key(get_s(item, "sk")?)))
    }

    /// Materialised rollups of `[start, end]` with the head version each reflects.
    pub async fn stored_rollups(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, (u64, Rollup)>, ApiError> {
        let items = self
            .query_all(
                format!("ROLLUP#{proxy_id}"),
                Some((day_key(start), day_key(end))),
                "read rollups",
            )
            .await?;
        let mut out = BTreeMap::new();
        for item in &items {
            let (Some(day), Some(version), Some(body)) = (
                get_s(item, "sk").and_then(parse_day_key),
                get_n(item, "version"),
                get_blob(item, "body"),
            ) else {
                continue;
            };
            out.insert(day, (version, decode_body::<Rollup>(body)?));
        }
        Ok(out)
    }

    /// Every day of `[start, end]` that has events, reflecting every event
    /// recorded before the call: the materialised rollup where it is current,
    /// otherwise folded from the raw events (read-your-writes).
    pub async fn read_days(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, Rollup>, ApiError> {
        // Heads first: a rollup read afterwards can only be as new or newer.
        let heads = self.day_versions(proxy_id, start, end).await?;
        if heads.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut rollups = self.stored_rollups(proxy_id, start, end).await?;
        let mut out = BTreeMap::new();
        let mut stale = Vec::new();
        for (day, version) in heads {
            match rollups.remove(&day) {
                Some((materialised, rollup)) if materialised == version => {
                    out.insert(day, rollup);
                }
                _ => stale.push(day),
            }
        }
        // Days not yet materialised are folded from their events, a few at a time.
        let folded: Vec<(NaiveDate, Rollup)> = stream::iter(stale)
            .map(|day| async move {
                let events = self.day_events(proxy_id, day).await?;
                Ok::<_, ApiError>((day, Rollup::of_events(day, &events)))
            })
            .buffer_unordered(STALE_DAY_READS)
            .try_collect()
            .await?;
        out.extend(folded);
        Ok(out)
    }

    // ---------------------------------------------------------------- aggregation

    /// (proxy, day) pairs awaiting materialisation in one pending shard.
    /// Reads the keys-only `pending` index: cheap, and empty when idle.
    pub async fn pending_days(&self, shard: u32) -> Result<Vec<(String, NaiveDate)>, ApiError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = with_retries(|| async {
                self.client
                    .query()
                    .table_name(&self.table)
                    .index_name(PENDING_INDEX)
                    .key_condition_expression("gsi1pk = :shard")
                    .expression_attribute_values(":shard", s(format!("PENDING#{shard}")))
                    .set_exclusive_start_key(start.clone())
                    .send()
                    .await
                    .map_err(|e| classify("read pending days", e))
            })
            .await?;
            for item in page.items() {
                if let Some((proxy, day)) = get_s(item, "gsi1sk").and_then(|k| k.rsplit_once('#'))
                    && let Some(day) = parse_day_key(day)
                {
                    out.push((proxy.to_string(), day));
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The current write version of one day (strongly consistent).
    pub async fn day_version(
        &self,
        proxy_id: &str,
        day: NaiveDate,
    ) -> Result<Option<u64>, ApiError> {
        let output = with_retries(|| async {
            self.client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(format!("DAYS#{proxy_id}")))
                .key("sk", s(day_key(day)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| classify("read day head", e))
        })
        .await?;
        Ok(output.item.as_ref().and_then(|i| get_n(i, "version")))
    }

    /// Writes the rollup of `day` as of head `version` and clears the day's
    /// pending mark, in one transaction that holds only if the head is still
    /// at `version` (no event arrived since it was read). `Ok(false)` means a
    /// newer event won the race: the day stays pending for the next run.
    pub async fn materialise_day(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        version: u64,
        rollup: &Rollup,
    ) -> Result<bool, ApiError> {
        let body = encode_body(rollup)?;
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("ROLLUP#{proxy_id}")))
            .item("sk", s(day_key(day)))
            .item("version", n(version))
            .item("events", n(rollup.event_count))
            .item("body", AttributeValue::B(Blob::new(body)))
            .build()
            .map_err(|e| ApiError::Internal(format!("building rollup put: {e}")))?;
        let clear = Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("DAYS#{proxy_id}")))
            .key("sk", s(day_key(day)))
            .update_expression("REMOVE gsi1pk, gsi1sk")
            .condition_expression("#version = :version")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", n(version))
            .build()
            .map_err(|e| ApiError::Internal(format!("building head update: {e}")))?;
        let actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(clear).build(),
        ];
        with_retries(|| async {
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(err) => match cancellation_codes(&err) {
                    Some(codes) if codes.get(1).is_some_and(|c| c == "ConditionalCheckFailed") => {
                        Ok(false)
                    }
                    Some(codes) => Err(Failure::Retryable(format!(
                        "materialise cancelled: {codes:?}"
                    ))),
                    None => Err(classify("materialise day", err)),
                },
            }
        })
        .await
    }

    /// All items of one partition (optionally an inclusive sort-key range), strongly consistent.
    async fn query_all(
        &self,
        pk: String,
        between: Option<(String, String)>,
        operation: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, ApiError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = with_retries(|| async {
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .expression_attribute_values(":pk", s(pk.clone()))
                    .set_exclusive_start_key(start.clone())
                    .consistent_read(true);
                query = match &between {
                    Some((from, to)) => query
                        .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                        .expression_attribute_values(":from", s(from.clone()))
                        .expression_attribute_values(":to", s(to.clone())),
                    None => query.key_condition_expression("pk = :pk"),
                };
                query.send().await.map_err(|e| classify(operation, e))
            })
            .await?;
            let last = page.last_evaluated_key;
            items.extend(page.items.unwrap_or_default());
            match last {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(items)
    }
}

/// Splits events (indexes into `events`, in order) into transactions that
/// respect the action, item-size and request-size limits.
fn plan_chunks(events: &[Event], encoded: &[Vec<u8>], order: &[usize]) -> Vec<Vec<usize>> {
    let mut chunks = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut day_bytes: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    let mut total = 0usize;
    for &i in order {
        let day = events[i].day();
        let size = encoded[i].len();
        let new_day = !day_bytes.contains_key(&day);
        // markers + (chunk put + head update) per day
        let actions_after = current.len() + 1 + 2 * (day_bytes.len() + usize::from(new_day));
        let day_after = day_bytes.get(&day).copied().unwrap_or(0) + size;
        if !current.is_empty()
            && (actions_after > MAX_TRANSACT_ACTIONS
                || day_after > MAX_CHUNK_BODY_BYTES
                || total + size > MAX_TRANSACTION_BYTES)
        {
            chunks.push(std::mem::take(&mut current));
            day_bytes.clear();
            total = 0;
        }
        current.push(i);
        *day_bytes.entry(day).or_insert(0) += size;
        total += size + 200;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The per-action cancellation codes of a cancelled transaction.
fn cancellation_codes<R>(error: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
    match error {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancel) => Some(
                cancel
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_string())
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}

fn proxy_from_item(item: &HashMap<String, AttributeValue>) -> Option<Proxy> {
    Some(Proxy {
        proxy_id: get_s(item, "proxyId")?.to_string(),
        name: get_s(item, "name").map(str::to_string),
        owner_id: get_s(item, "ownerId")?.to_string(),
        registered_at: DateTime::parse_from_rfc3339(get_s(item, "registeredAt")?)
            .ok()?
            .with_timezone(&Utc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        assert_eq!(
            pending_shard("edge-eu-1", day),
            pending_shard("edge-eu-1", day)
        );
        let used: HashSet<u32> = (0..200)
            .map(|i| pending_shard(&format!("p{i}"), day))
            .collect();
        assert_eq!(used.len(), PENDING_SHARDS as usize);
    }
}
