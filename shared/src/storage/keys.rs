//! Every key of the table, built in one place. See the layout in `mod.rs`.
//!
//! `#` never occurs in a proxy id, event id, producer id or day, so keys
//! cannot collide; `$` sorts right after `#`, so `{proxy}$` is the first key
//! past every pending chunk of `proxy`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::NaiveDate;

use crate::domain::dimensions::DimensionKey;
use crate::domain::rollup::BUCKET_MS;

pub type Key = HashMap<String, AttributeValue>;

/// Proxies with pending chunks are listed in this many partitions (by
/// proxy): the aggregation's unit of fan-out (`detail.shards`).
pub const PENDING_SHARDS: u32 = 16;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// DynamoDB TTL attribute (epoch seconds).
pub const EXPIRES_AT: &str = "expiresAt";

/// On a pending chunk: recorded once its proxy had sent dimensions
/// (see [`crate::domain::rollup::PartDims::paged`]).
pub const PAGED: &str = "paged";
/// On a proxy: when it first sent a dimension (epoch ms).
pub const DIMS_SINCE: &str = "dimsSince";

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: String, sk: String) -> Key {
    HashMap::from([(PK.into(), s(pk)), (SK.into(), s(sk))])
}

pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

pub fn parse_day_key(key: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(key, "%Y-%m-%d").ok()
}

// ---------------------------------------------------------------- proxies

pub fn proxy(proxy_id: &str) -> Key {
    key(format!("PROXY#{proxy_id}"), "PROXY".into())
}

pub fn owner_entry(owner_id: &str, proxy_id: &str) -> Key {
    key(owner_partition(owner_id), format!("PROXY#{proxy_id}"))
}

pub fn owner_partition(owner_id: &str) -> String {
    format!("OWNER#{owner_id}")
}

// ---------------------------------------------------------------- recording

pub fn producer(proxy_id: &str, producer_id: &str) -> Key {
    key(
        format!("PRODUCER#{proxy_id}#{producer_id}"),
        "PRODUCER".into(),
    )
}

pub fn event_id(proxy_id: &str, event_id: &str) -> Key {
    key(format!("EVENTID#{proxy_id}#{event_id}"), "EVENTID".into())
}

/// The OTLP series state of one (proxy, resource + scope): every series'
/// start and last accepted point, one item (see `storage::otlp`).
pub fn otlp_state(proxy_id: &str, group: u64) -> Key {
    key(format!("OTLP#{proxy_id}#{group:016x}"), "OTLP".into())
}

/// A proxy's pending chunks: one partition per proxy, so a tenant recording
/// at its limit heats only its own partition.
pub fn pending_partition(proxy_id: &str) -> String {
    format!("PENDING#{proxy_id}")
}

/// A chunk's sort key: by day, then by the time it was received. A read of
/// some days takes only their ranges; a quarantined day is one range the
/// aggregation steps over without reading it.
pub fn pending_sort_key(day: NaiveDate, received_ms: i64, chunk_id: &str) -> String {
    format!("{}#{received_ms:013}#{chunk_id}", day_key(day))
}

/// Every chunk of `day` begins with this.
pub fn pending_day_prefix(day: NaiveDate) -> String {
    format!("{}#", day_key(day))
}

/// The first sort key after every chunk of `day`.
pub fn pending_day_after(day: NaiveDate) -> String {
    format!("{}$", day_key(day))
}

/// The day a chunk's sort key belongs to.
pub fn day_of_pending(sort_key: &str) -> Option<NaiveDate> {
    sort_key
        .split_once('#')
        .and_then(|(day, _)| parse_day_key(day))
}

/// What identifies a chunk inside the `folded` lists of the items it was
/// folded into: its sort key without the leading day (v3) or proxy (v2)
/// field, `{receivedMs}#{id}`. A v2 chunk moved into the v3 layout keeps its
/// identity, so an item that folded it before the move still knows it.
pub fn chunk_identity(sort_key: &str) -> &str {
    sort_key.split_once('#').map_or(sort_key, |(_, rest)| rest)
}

pub fn pending_chunk(proxy_id: &str, sort_key: &str) -> Key {
    key(pending_partition(proxy_id), sort_key.to_string())
}

/// Chunks that could not be decoded, set aside (same sort keys) until an
/// operator releases them back or discards them.
pub fn quarantined_chunk_partition(proxy_id: &str) -> String {
    format!("QCHUNK#{proxy_id}")
}

pub fn quarantined_chunk(proxy_id: &str, sort_key: &str) -> Key {
    key(quarantined_chunk_partition(proxy_id), sort_key.to_string())
}

/// Which proxies have pending chunks: one small item per proxy in one of
/// [`PENDING_SHARDS`] partitions, written at most every few minutes per
/// proxy and function instance (not per request), so no shard is hot.
pub fn dirty_partition(shard: u32) -> String {
    format!("DIRTY#{shard}")
}

/// The shard of a proxy's dirty mark: a stable hash (FNV-1a, unlike std's
/// hasher the same in every process and release).
pub fn pending_shard(proxy_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in proxy_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % PENDING_SHARDS
}

pub fn dirty_mark(proxy_id: &str) -> Key {
    key(
        dirty_partition(pending_shard(proxy_id)),
        proxy_id.to_string(),
    )
}

/// Keys of the v2 pending layout (16 shared partitions), drained into the v3
/// layout by the aggregation after an upgrade.
pub mod v2 {
    pub fn pending_partition(shard: u32) -> String {
        format!("PENDING#{shard}")
    }

    /// The proxy a v2 chunk's sort key (`{proxy}#{ms}#{id}`) belongs to.
    pub fn proxy_of_pending(sort_key: &str) -> Option<&str> {
        sort_key.split_once('#').map(|(proxy, _)| proxy)
    }
}

// ---------------------------------------------------------------- rollups

/// A proxy's materialised days: one item per day, kept forever.
pub fn day_partition(proxy_id: &str) -> String {
    format!("DAY#{proxy_id}")
}

pub fn day(proxy_id: &str, day: NaiveDate) -> Key {
    key(day_partition(proxy_id), day_key(day))
}

/// A proxy's five-minute buckets (the summary, the last hour's percentiles).
pub fn bucket_partition(proxy_id: &str) -> String {
    format!("BUCKET#{proxy_id}")
}

/// `2024-01-15T10:05`: sorts in time order across days.
pub fn bucket_sort_key(day: NaiveDate, index: u16) -> String {
    let minutes = i64::from(index) * BUCKET_MS / 60_000;
    format!("{}T{:02}:{:02}", day_key(day), minutes / 60, minutes % 60)
}

pub fn parse_bucket_sort_key(key: &str) -> Option<(NaiveDate, u16)> {
    let (day, time) = key.split_once('T')?;
    let (h, m) = time.split_once(':')?;
    let minutes: i64 = h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?;
    let index = u16::try_from(minutes * 60_000 / BUCKET_MS).ok()?;
    Some((parse_day_key(day)?, index))
}

pub fn bucket(proxy_id: &str, day: NaiveDate, index: u16) -> Key {
    key(bucket_partition(proxy_id), bucket_sort_key(day, index))
}

// ---------------------------------------------------------------- dimensions

/// A proxy's dimension pages: one item per (key, day, page). Key first, so
/// a breakdown by one key over a range is one sort-key range.
pub fn dims_partition(proxy_id: &str) -> String {
    format!("DIMS#{proxy_id}")
}

/// `route#2024-01-15#03`.
pub fn dims_sort_key(key: DimensionKey, day: NaiveDate, page: u8) -> String {
    format!("{}#{}#{page:02}", key.as_str(), day_key(day))
}

pub fn parse_dims_sort_key(sort_key: &str) -> Option<(DimensionKey, NaiveDate, u8)> {
    let mut fields = sort_key.split('#');
    let key = DimensionKey::parse(fields.next()?)?;
    let day = parse_day_key(fields.next()?)?;
    let page = fields.next()?.parse().ok()?;
    Some((key, day, page))
}

pub fn dims_page(proxy_id: &str, key: DimensionKey, day: NaiveDate, page: u8) -> Key {
    self::key(dims_partition(proxy_id), dims_sort_key(key, day, page))
}

/// Which values of one key a proxy's day admitted under its cap: a number
/// set of value hashes, grown with a conditional update.
pub fn cardinality(proxy_id: &str, day: NaiveDate, key: DimensionKey) -> Key {
    self::key(
        format!("CARD#{proxy_id}"),
        format!("{}#{}", day_key(day), key.as_str()),
    )
}

/// A proxy's counts since registration (`/metrics`' counters).
pub fn totals(proxy_id: &str) -> Key {
    self::key(format!("TOTALS#{proxy_id}"), "TOTALS".into())
}

// ---------------------------------------------------------------- aggregation

/// Days whose aggregation failed, one partition (a handful of items).
pub const QUARANTINE_PARTITION: &str = "QUARANTINE";

pub fn quarantine_sort_key(proxy_id: &str, subject: &str) -> String {
    format!("{proxy_id}#{subject}")
}

pub fn quarantine(proxy_id: &str, subject: &str) -> Key {
    key(
        QUARANTINE_PARTITION.into(),
        quarantine_sort_key(proxy_id, subject),
    )
}

// ---------------------------------------------------------------- alerts

/// Alert rules, by the shard of their proxy ([`pending_shard`]): a proxy's
/// rules are one sort-key range (`{proxyId}#…`), the evaluation reads all
/// rules with one query per shard.
pub fn alert_partition(shard: u32) -> String {
    format!("ALERT#{shard:02}")
}

pub fn alert(proxy_id: &str, alert_id: &str) -> Key {
    key(
        alert_partition(pending_shard(proxy_id)),
        format!("{proxy_id}#{alert_id}"),
    )
}

/// The number of rules a proxy has (the tier limit is a condition on it).
pub fn alert_count(proxy_id: &str) -> Key {
    key(format!("ALERTCOUNT#{proxy_id}"), "ALERTCOUNT".into())
}

/// One state change of a rule: created only once per (rule, sequence).
pub fn alert_change(alert_id: &str, sequence: u64) -> Key {
    key(format!("ALERTCHANGE#{alert_id}"), format!("{sequence:010}"))
}

/// Deliveries waiting to be sent (or retried): one small partition.
pub const OUTBOX_PARTITION: &str = "OUTBOX";

pub fn outbox(webhook_id: &str) -> Key {
    key(OUTBOX_PARTITION.into(), webhook_id.into())
}

/// A rule's delivery attempts, in time order.
pub fn deliveries_partition(alert_id: &str) -> String {
    format!("DELIVERIES#{alert_id}")
}

pub fn delivery(alert_id: &str, at_ms: i64, webhook_id: &str, attempt: u32) -> Key {
    key(
        deliveries_partition(alert_id),
        format!("{at_ms:013}#{webhook_id}#{attempt:02}"),
    )
}

// ---------------------------------------------------------------- layout v1

/// Keys of the v1 layout, read only by the one-shot migration.
pub mod v1 {
    use super::{Key, day_key, key};
    use chrono::NaiveDate;

    pub const DAY_HEADS_PREFIX: &str = "DAYS#";

    pub fn events_partition(proxy_id: &str, day: NaiveDate) -> String {
        format!("EVENTS#{proxy_id}#{}", day_key(day))
    }

    pub fn rollup(proxy_id: &str, day: NaiveDate) -> Key {
        key(format!("ROLLUP#{proxy_id}"), day_key(day))
    }

    pub fn day_head(proxy_id: &str, day: NaiveDate) -> Key {
        key(format!("{DAY_HEADS_PREFIX}{proxy_id}"), day_key(day))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(pending_shard("edge-eu-1"), pending_shard("edge-eu-1"));
        let used: HashSet<u32> = (0..200).map(|i| pending_shard(&format!("p{i}"))).collect();
        assert_eq!(used.len(), PENDING_SHARDS as usize);
    }

    #[test]
    fn a_days_chunks_sort_together_and_keep_their_identity() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        let a = pending_sort_key(d, 1, "x");
        let b = pending_sort_key(d, 9_999_999_999_999, "y");
        let next = pending_sort_key(d.succ_opt().unwrap(), 0, "z");
        assert!(a.starts_with(&pending_day_prefix(d)) && b.starts_with(&pending_day_prefix(d)));
        assert!(a < b && b < pending_day_after(d) && pending_day_after(d) < next);
        assert_eq!(day_of_pending(&next), d.succ_opt());
        assert_eq!(chunk_identity(&a), "0000000000001#x");
        // a v2 key of the same chunk has the same identity
        assert_eq!(chunk_identity("edge-1#0000000000001#x"), chunk_identity(&a));
        assert_eq!(
            v2::proxy_of_pending("edge-1#0000000000001#x"),
            Some("edge-1")
        );
    }

    #[test]
    fn dimension_pages_of_a_key_sort_by_day_and_round_trip() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        let next = d.succ_opt().unwrap();
        let route = DimensionKey::Route;
        assert_eq!(dims_sort_key(route, d, 3), "route#2024-01-15#03");
        assert!(dims_sort_key(route, d, 0) < dims_sort_key(route, d, u8::MAX));
        assert!(dims_sort_key(route, d, u8::MAX) < dims_sort_key(route, next, 0));
        assert!(dims_sort_key(DimensionKey::Upstream, d, 0) > dims_sort_key(route, next, 9));
        assert_eq!(
            parse_dims_sort_key(&dims_sort_key(DimensionKey::Upstream, d, 7)),
            Some((DimensionKey::Upstream, d, 7))
        );
    }

    #[test]
    fn bucket_keys_sort_in_time_and_round_trip() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        assert_eq!(bucket_sort_key(d, 0), "2024-01-15T00:00");
        assert_eq!(bucket_sort_key(d, 287), "2024-01-15T23:55");
        assert!(bucket_sort_key(d, 287) < bucket_sort_key(d.succ_opt().unwrap(), 0));
        for i in [0u16, 1, 121, 287] {
            assert_eq!(parse_bucket_sort_key(&bucket_sort_key(d, i)), Some((d, i)));
        }
    }
}
