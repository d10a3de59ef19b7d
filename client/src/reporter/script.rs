//! A scripted transport for the reporter's unit tests.

use std::collections::VecDeque;
use std::sync::Mutex;

use std::sync::Arc;

use crate::batch::Batch;
use crate::retry::Reply;

/// A transport that answers from a script and remembers what it got.
#[derive(Debug, Default)]
pub struct Script {
    replies: Mutex<VecDeque<Reply>>,
    pub sent: Mutex<Vec<Batch>>,
}

impl Script {
    pub fn new(replies: Vec<Reply>) -> Arc<Self> {
        Arc::new(Self {
            replies: Mutex::new(replies.into()),
            sent: Mutex::default(),
        })
    }

    /// The next scripted reply; 201 once the script is exhausted.
    pub fn answer(&self, batch: &Batch) -> Reply {
        self.sent.lock().unwrap().push(batch.clone());
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::Http {
                status: 201,
                retry_after: None,
                body: Vec::new(),
            })
    }

    pub fn sent(&self) -> Vec<Batch> {
        self.sent.lock().unwrap().clone()
    }
}
