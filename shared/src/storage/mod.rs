//! Every DynamoDB key, expression and transaction of the service.
//!
//! # Table layout (v2; one table, `pk`/`sk` strings, TTL on `expiresAt`)
//!
//! | entity | pk | sk | written | why |
//! |---|---|---|---|---|
//! | proxy | `PROXY#{proxyId}` | `PROXY` | registration | ids are global: one item per id, created with `attribute_not_exists`; holds the owner's `tier` (retention) |
//! | owner's index entry | `OWNER#{userId}` | `PROXY#{proxyId}` | registration | `GET /proxies` is one Query; written in the same transaction as the proxy |
//! | producer | `PRODUCER#{proxyId}#{producerId}` | `PRODUCER` | each sequenced batch | the producer's last sequence; the batch's transaction is conditioned on it |
//! | event id | `EVENTID#{proxyId}#{eventId}` | `EVENTID` | each unsequenced event | keyed by id alone, so a retry that changed its timestamp (even its day) still collides |
//! | OTLP series state | `OTLP#{proxyId}#{resourceScopeHash:016x}` | `OTLP` | each OTLP export | every series' start and last accepted point of one resource + scope (postcard, ≤ 350 KB), versioned; written in the same transaction as the export's chunks ([`otlp`]) |
//! | pending chunk | `PENDING#{shard}` | `{proxyId}#{receivedAtMs:013}#{id}` | each request | the request's events pre-folded per day (`DayPart`s); a proxy's chunks are one range of one partition, so a read finds them with one query and the aggregation finds every shard's with 16 |
//! | day | `DAY#{proxyId}` | `{day}` | aggregation | the materialised day, and which chunks it holds; kept forever; a range is one Query |
//! | bucket | `BUCKET#{proxyId}` | `{day}T{HH:MM}` | aggregation | one five-minute bucket (summary, last hour); kept for the owner's raw retention |
//! | dimension page | `DIMS#{proxyId}` | `{route\|upstream}#{day}#{page:02}` | aggregation | a day's values of one key (v3), 1 page (8 for enterprise); a breakdown over a range is one Query; kept for the owner's raw retention |
//! | totals | `TOTALS#{proxyId}` | `TOTALS` | aggregation | counts since registration (`/metrics`' counters), and which chunks they hold |
//! | cardinality | `CARD#{proxyId}` | `{day}#{key}` | record, first sighting of a value | the hashes of the values a day admitted under the tier's cap (a conditional `ADD` to a number set) |
//! | alerts | `ALERT#…`, `ALERTCOUNT#…`, `ALERTCHANGE#…`, `OUTBOX`, `DELIVERIES#…` | see [`alerts`] | rules, state changes, outbox | one delivery per state change |
//! | failure record | `QUARANTINE` | `{proxyId}#{day}` | aggregation | a day whose folding failed; quarantined after 3 failed runs |
//!
//! The shard of a proxy is a stable hash of its id over [`PENDING_SHARDS`]
//! partitions. Nothing is shared between writers: a request only creates
//! items (its chunk, its id markers) or updates its own producer's item, so
//! concurrent requests of one proxy never contend. A request costs its
//! markers (or producer) and its chunk, 2 WRU per started KB each.
//!
//! The v1 layout (`EVENTS#`, `DAYS#`, `ROLLUP#` items) is read only by the
//! one-shot migration ([`migrate`]).

pub mod alerts;
mod cardinality;
mod codec;
mod days;
mod dims;
mod error;
mod fold;
pub mod keys;
pub mod migrate;
pub mod otlp;
mod outbox;
mod pending;
mod proxies;
mod quarantine;
mod recent;
mod record;
mod retry;
mod split;
mod totals;
mod v2_pending;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, Put, ReturnConsumedCapacity, TransactWriteItem,
};

use crate::clock::Clock;

pub use codec::{FORMAT_V1, FORMAT_V2, decode_body, decode_with, encode_body, encode_with};
pub use days::{
    DaySink, DaysRead, READ_PENDING_BUDGET_BYTES, StoredBucket, StoredDay, Versioned, bucket_of,
};
pub use dims::{BREAKDOWN_BUDGET_BYTES, StoredDims};
pub use error::StorageError;
pub use fold::{BatchChunk, DayFold, ProxyFold};
pub use keys::PENDING_SHARDS;
pub use pending::{DirtyMark, MARK_REFRESH, MARK_TRUSTED_FOR, PendingChunk, PendingPage};
pub use proxies::Proxy;
pub use quarantine::{FailureRecord, QUARANTINE_AFTER};
pub use recent::Recent;
pub use record::{
    ChunkBody, Destination, EventStatus, IDEMPOTENCY_RETENTION, RecordOutcome, Sequence,
    SequencedOutcome, body_fingerprint,
};
pub use retry::MAX_ATTEMPTS;
pub use totals::{StoredTotals, Totals};
// Meter and Usage are defined here.

#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
    clock: Clock,
    meter: Arc<Meter>,
    /// When this instance last wrote each proxy's dirty mark (epoch ms).
    marks: Arc<std::sync::Mutex<HashMap<String, i64>>>,
    /// What this instance knows of the days' admitted dimension values.
    cardinality: Arc<cardinality::CardinalityCache>,
}

/// Capacity units DynamoDB reported for this store's calls (every call asks
/// for them): what a request costs is logged, tested and benchmarked.
#[derive(Debug, Default)]
pub struct Meter {
    read_centi_units: AtomicU64,
    write_centi_units: AtomicU64,
    queries: AtomicU64,
    calls: AtomicU64,
}

/// A reading of the meter (or the difference of two).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    pub read_units: f64,
    pub write_units: f64,
    pub queries: u64,
    pub calls: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            read_units: self.read_units - earlier.read_units,
            write_units: self.write_units - earlier.write_units,
            queries: self.queries - earlier.queries,
            calls: self.calls - earlier.calls,
        }
    }
}

impl Meter {
    fn add(counter: &AtomicU64, units: Option<f64>) {
        if let Some(units) = units {
            counter.fetch_add((units * 100.0).round() as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn read(&self, capacity: Option<&ConsumedCapacity>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Self::add(
            &self.read_centi_units,
            capacity.and_then(|c| c.capacity_units()),
        );
    }

    pub(crate) fn query(&self, capacity: Option<&ConsumedCapacity>) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.read(capacity);
    }

    pub(crate) fn write(&self, capacity: Option<&ConsumedCapacity>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Self::add(
            &self.write_centi_units,
            capacity.and_then(|c| c.capacity_units()),
        );
    }

    pub(crate) fn write_units(&self, units: f64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Self::add(&self.write_centi_units, Some(units));
    }

    pub fn usage(&self) -> Usage {
        Usage {
            read_units: self.read_centi_units.load(Ordering::Relaxed) as f64 / 100.0,
            write_units: self.write_centi_units.load(Ordering::Relaxed) as f64 / 100.0,
            queries: self.queries.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
        }
    }
}

pub(crate) fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(crate) fn get_n(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn get_blob<'a>(
    item: &'a HashMap<String, AttributeValue>,
    name: &str,
) -> Option<&'a [u8]> {
    item.get(name)
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref())
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>, clock: Clock) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
            meter: Arc::default(),
            marks: Arc::default(),
            cardinality: Arc::default(),
        }
    }

    /// The store of a deployed function: table and client from the
    /// environment, the system clock. All the scheduled aggregation needs.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        let config = crate::config::StoreConfig::from_vars(&crate::config::Vars::from_env())?;
        let client = config.dynamodb_client()?;
        Ok(Self::new(client, &config.table_name, Clock::system()))
    }

    /// Capacity used by this store (and its clones) so far.
    pub fn usage(&self) -> Usage {
        self.meter.usage()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The clock the store (and the aggregation) reads "now" from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A transaction action that puts `item` only if no item has its key:
    /// the action is cancelled (`ConditionalCheckFailed`) if one does.
    fn put_if_absent(
        &self,
        item: HashMap<String, AttributeValue>,
        what: &str,
    ) -> Result<TransactWriteItem, StorageError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StorageError::Internal(format!("building the {what} put: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// One TransactWriteItems; its write units on success.
    async fn transact(
        &self,
        actions: &[TransactWriteItem],
        token: &str,
    ) -> Result<
        f64,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
            aws_sdk_dynamodb::config::http::HttpResponse,
        >,
    > {
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions.to_vec()))
            .client_request_token(token)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await?;
        let units = out
            .consumed_capacity()
            .iter()
            .filter_map(|c| c.capacity_units())
            .sum();
        self.meter.write_units(units);
        Ok(units)
    }

    /// One item, read strongly consistently (what was written is visible at
    /// once), with retries, its read units metered.
    async fn get_item(
        &self,
        key: keys::Key,
        operation: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StorageError> {
        let output = retry::with_retries(|| async {
            self.client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| retry::classify(operation, e))
        })
        .await?;
        self.meter.read(output.consumed_capacity());
        Ok(output.item)
    }

    /// All items of one partition (optionally an inclusive sort-key range), strongly consistent.
    async fn query_all(
        &self,
        pk: String,
        between: Option<(String, String)>,
        operation: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StorageError> {
        self.query_pages(
            pk,
            between.map(|(from, to)| Range::Between(from, to)),
            operation,
        )
        .await
    }

    async fn query_pages(
        &self,
        pk: String,
        range: Option<Range>,
        operation: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StorageError> {
        let mut items = Vec::new();
        self.query_pages_each(pk, range, None, operation, |item| {
            items.push(item.clone());
            Ok(())
        })
        .await?;
        Ok(items)
    }

    /// Every item of one partition in an inclusive sort-key range, handed to
    /// `visit` one at a time as pages arrive: memory stays one page (1 MB).
    async fn query_each(
        &self,
        pk: String,
        between: Option<(String, String)>,
        operation: &str,
        visit: impl FnMut(&HashMap<String, AttributeValue>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.query_pages_each(
            pk,
            between.map(|(from, to)| Range::Between(from, to)),
            None,
            operation,
            visit,
        )
        .await
    }

    /// The first `limit` items of one partition.
    async fn query_page_raw(
        &self,
        pk: String,
        limit: i32,
        operation: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StorageError> {
        let mut items = Vec::new();
        self.query_pages_each(pk, None, Some(limit), operation, |item| {
            items.push(item.clone());
            Ok(())
        })
        .await?;
        Ok(items)
    }

    async fn query_pages_each(
        &self,
        pk: String,
        range: Option<Range>,
        limit: Option<i32>,
        operation: &str,
        visit: impl FnMut(&HashMap<String, AttributeValue>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.query_pages_each_on(pk, range, limit, operation, false, visit)
            .await
    }

    /// `apart`: on a connection of its own, for a query sent together with
    /// another (a read's pending chunks beside its items). Both on one pool,
    /// a cold client's second query often waits for the first one's
    /// connection rather than use the one it is opening (the pool hands over
    /// whichever is ready first, and on loopback both are ready in the same
    /// turn of the runtime): two round trips, not one. The SDK's HTTP client
    /// keeps a pool per timeout setting, so a connect timeout a millisecond
    /// off the default ([`APART_CONNECT_TIMEOUT`]) is a pool of its own.
    async fn query_pages_each_on(
        &self,
        pk: String,
        range: Option<Range>,
        limit: Option<i32>,
        operation: &str,
        apart: bool,
        mut visit: impl FnMut(&HashMap<String, AttributeValue>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = retry::with_retries(|| async {
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .expression_attribute_values(":pk", keys::s(pk.clone()))
                    .set_exclusive_start_key(start.clone())
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .set_limit(limit)
                    .consistent_read(true);
                query = match &range {
                    Some(Range::Between(from, to)) => query
                        .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                        .expression_attribute_values(":from", keys::s(from.clone()))
                        .expression_attribute_values(":to", keys::s(to.clone())),
                    None => query.key_condition_expression("pk = :pk"),
                };
                let sent = if apart {
                    let own_pool = aws_sdk_dynamodb::config::Builder::default().timeout_config(
                        aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                            .connect_timeout(APART_CONNECT_TIMEOUT)
                            .build(),
                    );
                    query.customize().config_override(own_pool).send().await
                } else {
                    query.send().await
                };
                sent.map_err(|e| retry::classify(operation, e))
            })
            .await?;
            self.meter.query(page.consumed_capacity());
            let last = page.last_evaluated_key;
            for item in page.items.unwrap_or_default() {
                visit(&item)?;
            }
            match last {
                Some(key) if !key.is_empty() && limit.is_none() => start = Some(key),
                _ => break,
            }
        }
        Ok(())
    }
}

/// The connect timeout of the pool of `apart` queries: the SDK's
/// default (3.1 s) less a millisecond.
const APART_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(3_099);

enum Range {
    Between(String, String),
}
