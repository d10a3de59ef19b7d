//! Aggregation steps the tests interleave with requests and reads.

use std::collections::BTreeMap;

use proxy_metrics::storage::{BatchChunk, ProxyFold, Store};

/// An aggregation run of one proxy that stops after writing its items
/// (`then_epoch`: after moving the epoch too), never deleting the chunks.
pub async fn crashing_run(store: &Store, proxy_id: &str, then_epoch: bool) {
    let epoch = store.fold_epoch(proxy_id).await.unwrap();
    let chunks = store.pending_chunks_of(proxy_id).await.unwrap();
    let mut fold = ProxyFold::new(proxy_id, epoch);
    fold.read_through = Some("~".into());
    fold.still_pending = chunks.iter().map(|c| c.sort_key.clone()).collect();
    let mut days: BTreeMap<_, Vec<BatchChunk>> = BTreeMap::new();
    for c in &chunks {
        days.entry(c.day)
            .or_default()
            .push((c.sort_key.clone(), c.part().unwrap()));
    }
    for (day, parts) in days {
        store.fold_day(&mut fold, day, &parts, 7).await.unwrap();
    }
    if then_epoch {
        store.move_fold_epoch(proxy_id).await.unwrap();
    }
}
