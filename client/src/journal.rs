//! The reporter's state file: who this producer is, which sequence comes
//! next, how far the source has been delivered, and the batches on their
//! way — so that a restart resumes the *same* producer and sequence, and a
//! crash at any point loses nothing and counts nothing twice.
//!
//! The source's position is opaque here (the agent stores a file's identity
//! and offset); the reporter only keeps it beside the sequence numbers.
//!
//! Why a segment's batches are written *before* they are sent, not only the
//! position after: once a batch may have reached the server, re-reading its
//! lines after a crash would rebuild different bodies (other interval cuts,
//! other samples) under sequences the server already holds — a duplicate
//! there would silently lose those lines, a `SEQUENCE_CONFLICT` would refuse
//! them. Replaying the exact bytes under the exact numbers makes the
//! server's duplicate rule finish the job: landed ones answer "duplicate",
//! the others are recorded, and reading resumes after them.
//!
//! Every write is atomic: a temporary file in the same directory, fsync,
//! rename over the old file, fsync of the directory.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::batch::Batch;

const VERSION: u32 = 1;

/// One batch of a segment, as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SavedBatch {
    pub sequence: u64,
    /// The body, byte for byte (it is JSON text, hence UTF-8).
    pub body: String,
    pub events: usize,
    pub observations: u64,
}

/// Batches cut at a source position and not yet all settled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// Where the source stands once all of them are settled.
    pub position: Value,
    pub batches: Vec<SavedBatch>,
}

/// The file's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Saved {
    pub version: u32,
    pub proxy_id: String,
    pub producer_id: String,
    /// The sequence of the next batch (after the pending ones).
    pub next_sequence: u64,
    /// Everything before this position is settled.
    pub position: Option<Value>,
    pub pending: Option<Pending>,
}

impl Saved {
    pub fn fresh(proxy_id: &str, producer_id: String) -> Self {
        Self {
            version: VERSION,
            proxy_id: proxy_id.to_owned(),
            producer_id,
            next_sequence: 0,
            position: None,
            pending: None,
        }
    }

    /// Where reading resumes: after the pending batches, which are replayed.
    pub fn resume_at(&self) -> Option<&Value> {
        match &self.pending {
            Some(p) => Some(&p.position),
            None => self.position.as_ref(),
        }
    }
}

impl SavedBatch {
    pub fn of(batch: &Batch) -> Self {
        Self {
            sequence: batch.sequence,
            body: String::from_utf8_lossy(&batch.body).into_owned(),
            events: batch.events,
            observations: batch.observations,
        }
    }

    pub fn to_batch(&self, producer_id: &str) -> Batch {
        Batch {
            producer_id: producer_id.to_owned(),
            sequence: self.sequence,
            body: self.body.clone().into_bytes(),
            events: self.events,
            observations: self.observations,
        }
    }
}

/// Reads the state file; `None` when there is none yet. A file for another
/// proxy, or of another version, is an error: guessing could count twice.
pub(crate) fn load(path: &Path, proxy_id: &str) -> io::Result<Option<Saved>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let saved: Saved = serde_json::from_slice(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    if saved.version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: version {} (this agent writes {VERSION})",
                path.display(),
                saved.version
            ),
        ));
    }
    if saved.proxy_id != proxy_id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: belongs to proxy {:?}, not {proxy_id:?}; give each proxy its own state directory",
                path.display(),
                saved.proxy_id
            ),
        ));
    }
    Ok(Some(saved))
}

/// Writes `saved` to `path` atomically (temp file, fsync, rename, fsync of
/// the directory): a crash leaves the old content or the new, never a mix.
pub(crate) fn store(path: &Path, saved: &Saved) -> io::Result<()> {
    let json = serde_json::to_vec(saved).map_err(io::Error::other)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is synced.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_saved_state_reads_back_the_same_and_replaces_the_old_atomically() {
        let dir = std::env::temp_dir().join(format!("journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(load(&path, "edge-1").unwrap(), None);
        let mut saved = Saved::fresh("edge-1", "p1".into());
        saved.next_sequence = 7;
        saved.position = Some(json!({"offset": 10}));
        saved.pending = Some(Pending {
            position: json!({"offset": 99}),
            batches: vec![SavedBatch {
                sequence: 7,
                body: "{\"events\":[]}".into(),
                events: 0,
                observations: 0,
            }],
        });
        store(&path, &saved).unwrap();
        let back = load(&path, "edge-1").unwrap().unwrap();
        assert_eq!(back, saved);
        assert_eq!(back.resume_at(), Some(&json!({"offset": 99})));
        saved.pending = None;
        store(&path, &saved).unwrap();
        let back = load(&path, "edge-1").unwrap().unwrap();
        assert_eq!(back.resume_at(), Some(&json!({"offset": 10})));
        // no temporary file left behind
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // another proxy's state is refused, not reused
        assert!(load(&path, "edge-2").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
