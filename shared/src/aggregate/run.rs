//! One run's work: the shards, each proxy's pending chunks a page at a time,
//! folded per day, failures counted and quarantined.

use super::*;

/// What the run has done so far (shared by the shards folded at once).
#[derive(Default)]
pub(super) struct Tally {
    pub(super) report: AggregationReport,
    pub(super) quarantined_seen: HashSet<(String, String)>,
}

pub(super) struct Run<'a> {
    pub(super) store: &'a Store,
    pub(super) limits: RunLimits,
    /// (proxy, subject) → quarantined? for every failure record at the start.
    pub(super) failures: HashMap<(String, String), bool>,
    pub(super) tally: Mutex<Tally>,
}

impl Run<'_> {
    fn out_of_time(&self) -> bool {
        Instant::now() >= self.limits.deadline
    }

    fn tally(&self, f: impl FnOnce(&mut Tally)) {
        if let Ok(mut tally) = self.tally.lock() {
            f(&mut tally);
        }
    }

    /// The shard's proxies from a random one onwards, wrapping around.
    pub(super) async fn shard(&self, shard: u32) {
        // An empty shard (the common case when idle) costs one query.
        match self.store.pending_page(shard, "!", None, 1).await {
            Ok(page) if page.chunks.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(shard, error = %e, "reading a pending shard failed");
                self.tally(|t| t.report.days_failed += 1);
                return;
            }
        }
        let start = random_position();
        let mut seen: HashSet<String> = HashSet::new();
        // Keys are never empty; "!" sorts before every proxy id.
        for (after, before) in [
            (start.clone(), None),
            ("!".to_string(), Some(start.clone())),
        ] {
            let mut cursor = after;
            loop {
                if self.out_of_time() {
                    return;
                }
                let page = match self
                    .store
                    .pending_page(shard, &cursor, before.as_deref(), 1)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(shard, error = %e, "reading a pending shard failed");
                        self.tally(|t| t.report.days_failed += 1);
                        return;
                    }
                };
                let Some(first) = page.chunks.first() else {
                    break;
                };
                let proxy_id = first.proxy_id.clone();
                cursor = keys::pending_after(&proxy_id);
                if seen.insert(proxy_id.clone()) {
                    // Boxed: the fold's future is deep, and shards run at once.
                    Box::pin(self.proxy(shard, &proxy_id)).await;
                }
            }
        }
    }

    /// Folds one proxy's pending chunks, a page at a time, within its budget.
    async fn proxy(&self, shard: u32, proxy_id: &str) {
        self.tally(|t| t.report.proxies_processed += 1);
        let first_key = keys::pending_prefix(proxy_id);
        let last_key = keys::pending_after(proxy_id);
        // `after` is exclusive: start just before the proxy's first key.
        let mut cursor = keys::pending_prefix(proxy_id);
        cursor.pop();
        let mut still_pending: HashSet<String> = HashSet::new();
        let mut taken = 0usize;
        while taken < self.limits.max_chunks_per_proxy && !self.out_of_time() {
            let limit = PAGE_CHUNKS.min((self.limits.max_chunks_per_proxy - taken) as i32);
            let page = match self
                .store
                .pending_page(shard, &cursor, Some(&last_key), limit)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(proxy_id, error = %e, "reading pending chunks failed");
                    self.tally(|t| t.report.days_failed += 1);
                    return;
                }
            };
            let chunks: Vec<PendingChunk> = page
                .chunks
                .into_iter()
                .filter(|c| c.sort_key.starts_with(&first_key))
                .collect();
            let Some(last) = chunks.last() else {
                return;
            };
            cursor = last.sort_key.clone();
            taken += chunks.len();
            still_pending.extend(chunks.iter().map(|c| c.sort_key.clone()));
            let view = PendingView {
                read_through: cursor.clone(),
                still_pending: still_pending.clone(),
                now: self.store.clock().now(),
            };
            let left = self.fold_page(proxy_id, &chunks, &view).await;
            still_pending.retain(|k| !chunks.iter().any(|c| &c.sort_key == k) || left.contains(k));
            if page.next.is_none() {
                return;
            }
        }
    }

    /// Folds one page of a proxy's chunks; returns the chunks still pending.
    async fn fold_page(
        &self,
        proxy_id: &str,
        chunks: &[PendingChunk],
        view: &PendingView,
    ) -> HashSet<String> {
        // Each day's parts, decoded; days and chunks that cannot be read are
        // failures of their own and hold back nothing else.
        let mut days: BTreeMap<NaiveDate, Vec<(String, DayPart)>> = BTreeMap::new();
        let mut retention: BTreeMap<NaiveDate, i64> = BTreeMap::new();
        let mut failed: BTreeSet<NaiveDate> = BTreeSet::new();
        let mut skipped: BTreeSet<NaiveDate> = BTreeSet::new();
        for chunk in chunks {
            if let Err(why) = &chunk.parts {
                let subject = format!("chunk:{}", chunk.sort_key);
                if !self.skip_quarantined(proxy_id, &subject) {
                    self.failed(proxy_id, &subject, &ApiError::Internal(why.clone()))
                        .await;
                }
                continue;
            }
            for day in chunk.days() {
                if chunk.folded_days.contains(&day) || failed.contains(&day) {
                    continue;
                }
                if self.skip_quarantined(proxy_id, &keys::day_key(day)) {
                    skipped.insert(day);
                    continue;
                }
                match chunk.part(day) {
                    Ok(Some(part)) => {
                        self.tally(|t| t.report.events_read += part.event_count());
                        days.entry(day)
                            .or_default()
                            .push((chunk.sort_key.clone(), part));
                        let r = retention.entry(day).or_insert(chunk.retention_days);
                        *r = (*r).max(chunk.retention_days);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        days.remove(&day);
                        failed.insert(day);
                        self.failed(proxy_id, &keys::day_key(day), &e).await;
                    }
                }
            }
        }
        let mut folded: BTreeSet<NaiveDate> = BTreeSet::new();
        for (day, parts) in &days {
            let retention_days = retention.get(day).copied().unwrap_or(7);
            match Box::pin(
                self.store
                    .fold_day(proxy_id, *day, parts, retention_days, view),
            )
            .await
            {
                Ok(outcome) => {
                    folded.insert(*day);
                    if outcome.day_written {
                        self.tally(|t| t.report.days_materialized += 1);
                    }
                    let subject = keys::day_key(*day);
                    if self
                        .failures
                        .contains_key(&(proxy_id.to_string(), subject.clone()))
                        && let Err(e) = self.store.clear_failures(proxy_id, &subject).await
                    {
                        tracing::warn!(proxy_id, %day, error = %e, "clearing a failure record failed");
                    }
                }
                Err(e) => self.failed(proxy_id, &keys::day_key(*day), &e).await,
            }
        }
        let mut left = HashSet::new();
        for chunk in chunks {
            if chunk.parts.is_err() {
                left.insert(chunk.sort_key.clone());
                continue;
            }
            let done: BTreeSet<NaiveDate> = chunk
                .days()
                .into_iter()
                .filter(|d| folded.contains(d) && !chunk.folded_days.contains(d))
                .collect();
            let remaining = chunk
                .days()
                .into_iter()
                .any(|d| !chunk.folded_days.contains(&d) && !done.contains(&d));
            if remaining {
                left.insert(chunk.sort_key.clone());
            }
            if let Err(e) = self.store.finish_chunk(chunk, &done).await {
                // The items hold the chunk; the next run finishes it.
                tracing::warn!(proxy_id, chunk = %chunk.sort_key, error = %e, "finishing a chunk failed");
                left.insert(chunk.sort_key.clone());
            }
        }
        left
    }

    /// Whether `subject` is quarantined (counted once per run when it is).
    fn skip_quarantined(&self, proxy_id: &str, subject: &str) -> bool {
        let key = (proxy_id.to_string(), subject.to_string());
        if self.failures.get(&key).copied().unwrap_or(false) {
            self.tally(|t| {
                if t.quarantined_seen.insert(key) {
                    t.report.days_quarantined += 1;
                }
            });
            return true;
        }
        false
    }

    /// Counts a failed day. Only permanent failures count towards
    /// quarantine: a throttled store is no reason to set a day aside.
    async fn failed(&self, proxy_id: &str, subject: &str, error: &ApiError) {
        tracing::error!(proxy_id, subject, error = %error, "folding failed");
        self.tally(|t| t.report.days_failed += 1);
        if matches!(error, ApiError::ServiceUnavailable(_)) {
            return;
        }
        let now = self.store.clock().now().timestamp_millis();
        match self
            .store
            .record_failure(proxy_id, subject, &error.to_string(), now)
            .await
        {
            Ok(true) => {
                tracing::error!(
                    proxy_id,
                    subject,
                    "quarantined after {} failed runs; release with {{\"release\": [{{\"proxyId\": \"{proxy_id}\", \"date\": \"{subject}\"}}]}}",
                    crate::storage::QUARANTINE_AFTER
                );
                let key = (proxy_id.to_string(), subject.to_string());
                self.tally(|t| {
                    if t.quarantined_seen.insert(key) {
                        t.report.days_quarantined += 1;
                    }
                });
            }
            Ok(false) => {}
            Err(e) => tracing::error!(proxy_id, subject, error = %e, "counting a failure failed"),
        }
    }
}

/// A random place to start a shard at: proxy ids are made of `[A-Za-z0-9._-]`.
pub(super) fn random_position() -> String {
    const ALPHABET: &[u8] = b"-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..4)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
