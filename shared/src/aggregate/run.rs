//! One run's work: the shards' dirty marks, each proxy's pending chunks a
//! page at a time, folded per day within a memory budget, failures counted
//! and quarantined.

use super::*;

/// What the run has done so far (shared by the shards folded at once).
#[derive(Default)]
pub(super) struct Tally {
    pub(super) report: AggregationReport,
    pub(super) quarantined_seen: HashSet<(String, String)>,
    /// (proxy, day) that failed in this run.
    pub(super) failed: HashSet<(String, String)>,
}

pub(super) struct Run<'a> {
    pub(super) store: &'a Store,
    pub(super) limits: RunLimits,
    /// (proxy, subject) → quarantined? for every failure record at the start.
    pub(super) failures: HashMap<(String, String), bool>,
    pub(super) tally: Mutex<Tally>,
    /// Folds in flight in this invocation (memory: `CONCURRENT_FOLDS`).
    pub(super) folds: tokio::sync::Semaphore,
}

/// One page's chunks of one day, decoded, waiting to be folded.
#[derive(Default)]
struct Batch {
    days: BTreeMap<NaiveDate, (Vec<BatchChunk>, i64)>,
    decoded_bytes: usize,
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

    /// The shard's proxies (its dirty marks), from a random one onwards.
    pub(super) async fn shard(&self, shard: u32) {
        // Chunks a v2 writer left (only after an upgrade; one query if none).
        match self.store.drain_v2_shard(shard, self.limits.deadline).await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(shard, moved, "moved v2 pending chunks into the v3 layout"),
            Err(e) => tracing::error!(shard, error = %e, "moving v2 pending chunks failed"),
        }
        let mut marks = match self.store.dirty_marks(shard).await {
            Ok(marks) => marks,
            Err(e) => {
                tracing::error!(shard, error = %e, "reading a shard's dirty marks failed");
                self.tally(|t| t.report.days_failed += 1);
                return;
            }
        };
        if marks.is_empty() {
            return;
        }
        // No tenant always goes first.
        let start = rand::rng().random_range(0..marks.len());
        marks.rotate_left(start);
        stream::iter(&marks)
            .map(|mark| async move {
                if self.out_of_time() {
                    return;
                }
                let Ok(_permit) = self.folds.acquire().await else {
                    return;
                };
                // Boxed: the fold's future is deep, and several run at once.
                Box::pin(self.proxy(mark)).await;
            })
            .buffer_unordered(CONCURRENT_FOLDS)
            .collect::<Vec<()>>()
            .await;
    }

    /// Folds one proxy's pending chunks, a page at a time, within its budget
    /// in bytes; stepping over quarantined days without reading them.
    async fn proxy(&self, mark: &DirtyMark) {
        let proxy_id = mark.proxy_id.as_str();
        // Whether no recorder still relies on the mark: decided before the
        // proxy's chunks are read, so that every chunk a recorder wrote
        // trusting it is in that read (see `storage/pending.rs`).
        let stale = self.store.clock().now().timestamp_millis() - mark.marked_at_ms
            > crate::storage::MARK_TRUSTED_FOR.num_milliseconds();
        // The proxy item: the fold epoch, and the owner's tier (retention).
        let proxy = match self.store.get_proxy(proxy_id).await {
            Ok(Some(proxy)) => proxy,
            Ok(None) => {
                tracing::error!(
                    proxy_id,
                    "pending chunks of an unregistered proxy; left alone"
                );
                return;
            }
            Err(e) => {
                tracing::error!(proxy_id, error = %e, "reading the proxy failed");
                self.tally(|t| t.report.days_failed += 1);
                return;
            }
        };
        if let Err(e) = self.store.extend_bucket_retention(&proxy).await {
            tracing::warn!(proxy_id, error = %e, "extending bucket retention failed; the next run tries again");
        }
        let mut fold = ProxyFold::new(proxy_id, proxy.fold_epoch);
        fold.retention_days = proxy.tier.raw_retention_days();
        let mut after: Option<String> = None;
        let mut read_bytes = 0usize;
        let mut exhausted = false;
        let mut left_behind = false;
        while !self.out_of_time()
            && read_bytes < self.limits.max_bytes_per_proxy
            && !fold.concurrent
        {
            let page = match self
                .store
                .pending_page(proxy_id, after.as_deref(), self.limits.page_chunks)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(proxy_id, error = %e, "reading pending chunks failed");
                    self.tally(|t| t.report.days_failed += 1);
                    return;
                }
            };
            let Some(last) = page.chunks.last().map(|c| c.sort_key.clone()) else {
                exhausted = true;
                break;
            };
            if after.is_none() {
                // A proxy with chunks to fold (a mark alone costs one query).
                self.tally(|t| t.report.proxies_processed += 1);
            }
            // A quarantined day is one range of keys: fold what comes before
            // it on this page, then continue after it.
            let mut chunks = Vec::new();
            let mut jump = None;
            for chunk in page.chunks {
                read_bytes += chunk.stored_bytes();
                if self.skip_quarantined(proxy_id, &keys::day_key(chunk.day)) {
                    jump = Some(keys::pending_day_after(chunk.day));
                    left_behind = true;
                    break;
                }
                chunks.push(chunk);
            }
            let reached = jump.clone().unwrap_or(last);
            // The last page covers everything after it too ('~' sorts after
            // every day): a chunk named in an item and not seen is gone.
            fold.read_through = Some(if jump.is_none() && page.next.is_none() {
                "~".to_string()
            } else {
                reached.clone()
            });
            fold.still_pending
                .extend(chunks.iter().map(|c| c.sort_key.clone()));
            if !self.fold_chunks(&mut fold, chunks).await {
                left_behind = true;
            }
            if jump.is_none() && page.next.is_none() {
                exhausted = true;
                break;
            }
            after = Some(reached);
        }
        left_behind |= !fold.still_pending.is_empty() || fold.concurrent;
        // Nothing left pending, and no recorder still relies on the mark.
        if exhausted
            && !left_behind
            && stale
            && let Err(e) = self.store.clear_dirty_mark(mark).await
        {
            tracing::warn!(proxy_id, error = %e, "clearing a dirty mark failed");
        }
    }

    /// Decodes a page's chunks one at a time into per-day batches, folding
    /// whenever the decoded state reaches the memory budget. Returns whether
    /// every chunk was folded and deleted.
    async fn fold_chunks(&self, fold: &mut ProxyFold, chunks: Vec<PendingChunk>) -> bool {
        let mut all = true;
        let mut batch = Batch::default();
        for chunk in chunks {
            if fold.concurrent {
                return false;
            }
            if self.failed_day_this_run(&fold.proxy_id, chunk.day) {
                all = false;
                continue;
            }
            match chunk.part() {
                Ok(part) => {
                    self.tally(|t| t.report.events_read += part.event_count());
                    batch.decoded_bytes += decoded_bytes(&part, chunk.body.len());
                    let entry = batch
                        .days
                        .entry(chunk.day)
                        .or_insert_with(|| (Vec::new(), chunk.retention_days));
                    entry.1 = entry.1.max(chunk.retention_days);
                    entry.0.push((chunk.sort_key.clone(), part));
                }
                Err(e) => {
                    self.quarantine_chunk(fold, &chunk, &e).await;
                    continue;
                }
            }
            if batch.decoded_bytes >= self.limits.fold_memory_bytes {
                all &= self.flush(fold, std::mem::take(&mut batch)).await;
            }
        }
        all &= self.flush(fold, batch).await;
        all
    }

    /// Folds a batch day by day, then moves the epoch and deletes the chunks
    /// every item now holds.
    async fn flush(&self, fold: &mut ProxyFold, batch: Batch) -> bool {
        let mut all = true;
        let mut done = Vec::new();
        for (day, (chunks, retention_days)) in batch.days {
            if fold.concurrent {
                return false;
            }
            // Buckets keep the owner's current retention, never less.
            let retention_days = retention_days.max(fold.retention_days);
            match Box::pin(self.store.fold_day(fold, day, &chunks, retention_days)).await {
                Ok(outcome) if fold.concurrent => {
                    tracing::info!(proxy_id = %fold.proxy_id, %day, "another run is folding this proxy; leaving it");
                    let _ = outcome;
                    return false;
                }
                Ok(outcome) => {
                    if outcome.day_written {
                        self.tally(|t| t.report.days_materialized += 1);
                    }
                    done.extend(outcome.done);
                    self.succeeded(&fold.proxy_id, day).await;
                }
                Err(e) => {
                    all = false;
                    self.failed(&fold.proxy_id, &keys::day_key(day), &e).await;
                }
            }
        }
        if done.is_empty() {
            return all;
        }
        // Readers whose items predate these writes see the epoch move
        // before the chunks disappear (storage/days.rs).
        match self.store.move_fold_epoch(&fold.proxy_id).await {
            Ok(epoch) => {
                if epoch != fold.epoch + 1 {
                    fold.concurrent = true;
                }
                fold.epoch = epoch;
            }
            Err(e) => {
                tracing::warn!(proxy_id = %fold.proxy_id, error = %e, "moving the fold epoch failed; the chunks stay until the next run");
                return false;
            }
        }
        match self.store.delete_chunks(&fold.proxy_id, &done).await {
            Ok(()) => {
                for key in &done {
                    fold.still_pending.remove(key);
                }
                all
            }
            Err(e) => {
                // The items hold the chunks; the next run deletes them.
                tracing::warn!(proxy_id = %fold.proxy_id, error = %e, "deleting folded chunks failed");
                false
            }
        }
    }

    /// Sets an unreadable chunk aside at once: decoding is deterministic, so
    /// another run would fail the same way (an operator releases it once a
    /// build that reads it is deployed, or discards it).
    async fn quarantine_chunk(
        &self,
        fold: &mut ProxyFold,
        chunk: &PendingChunk,
        error: &StorageError,
    ) {
        let proxy_id = fold.proxy_id.clone();
        let subject = format!("chunk:{}", chunk.sort_key);
        tracing::error!(proxy_id, chunk = %chunk.sort_key, error = %error, "pending chunk unreadable; quarantined. Release with {{\"release\": [{{\"proxyId\": \"{proxy_id}\", \"date\": \"{subject}\"}}]}} or discard with {{\"discard\": [...]}}");
        self.tally(|t| {
            t.report.days_failed += 1;
            if t.quarantined_seen
                .insert((proxy_id.clone(), subject.clone()))
            {
                t.report.days_quarantined += 1;
            }
        });
        let now = self.store.clock().now().timestamp_millis();
        if let Err(e) = self
            .store
            .quarantine_record(&proxy_id, &subject, &error.to_string(), now)
            .await
        {
            tracing::error!(proxy_id, error = %e, "recording a quarantined chunk failed");
            return;
        }
        match self.store.quarantine_chunk(&proxy_id, chunk).await {
            Ok(()) => {
                fold.still_pending.remove(&chunk.sort_key);
            }
            Err(e) => {
                tracing::error!(proxy_id, error = %e, "setting an unreadable chunk aside failed")
            }
        }
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

    /// Whether this run already failed (or quarantined) the day: its later
    /// chunks wait for the next run rather than fail again.
    fn failed_day_this_run(&self, proxy_id: &str, day: NaiveDate) -> bool {
        let key = (proxy_id.to_string(), keys::day_key(day));
        self.tally
            .lock()
            .map(|t| t.failed_this_run(&key))
            .unwrap_or(false)
    }

    async fn succeeded(&self, proxy_id: &str, day: NaiveDate) {
        let subject = keys::day_key(day);
        if self
            .failures
            .contains_key(&(proxy_id.to_string(), subject.clone()))
            && let Err(e) = self.store.clear_failures(proxy_id, &subject).await
        {
            tracing::warn!(proxy_id, %day, error = %e, "clearing a failure record failed");
        }
    }

    /// Counts a failed day. Only permanent failures count towards
    /// quarantine: a throttled store is no reason to set a day aside.
    async fn failed(&self, proxy_id: &str, subject: &str, error: &StorageError) {
        tracing::error!(proxy_id, subject, error = %error, "folding failed");
        let key = (proxy_id.to_string(), subject.to_string());
        self.tally(|t| {
            t.report.days_failed += 1;
            t.failed.insert(key.clone());
        });
        if error.is_transient() {
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

impl Tally {
    fn failed_this_run(&self, key: &(String, String)) -> bool {
        self.failed.contains(key)
    }
}

/// What a decoded part takes in memory, for the run's budget: measured on
/// the decoded state, not on the stored bytes (a compact encoding can
/// decode to far more).
fn decoded_bytes(part: &DayPart, encoded: usize) -> usize {
    part.heap_bytes().max(encoded)
}
