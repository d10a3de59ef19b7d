//! What a proxy tells the reporter about one request.

use chrono::{DateTime, Utc};

/// One request as the proxy saw it. [`Reporter::record`](crate::Reporter::record)
/// folds observations into 10-second intervals; nothing is sent per request.
///
/// Every field but `error` is optional in spirit: leave a count at 0 and an
/// `Option` at `None` when the proxy does not know it. An absent latency
/// takes no part in the interval's min, max, mean or samples (the server
/// treats it the same way), which is not the same as a latency of 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// When the request happened; `None` means "now" (the reporter's clock,
    /// read when [`record`](crate::Reporter::record) is called).
    pub at: Option<DateTime<Utc>>,
    /// Whether the request failed from the proxy's point of view.
    pub error: bool,
    /// Time to serve the request, in milliseconds (kept to the microsecond).
    pub latency_ms: Option<f64>,
    /// Bytes sent to the client (`dataTransferredBytes`).
    pub bytes_sent: u64,
    /// Bytes received from the client (`dataReceivedBytes`).
    pub bytes_received: u64,
    /// Connections opened for this request (`connectionCount`), usually 0 or 1.
    pub new_connections: u64,
    /// The proxy's open connections at that moment, if it knows.
    pub concurrent_connections: Option<u64>,
    /// The proxy's own view of its health; one unhealthy observation makes
    /// its whole interval unhealthy.
    pub healthy: bool,
    /// Why the request failed (at most 1024 characters are kept).
    pub error_message: Option<String>,
    /// The HTTP status sent, for the event's `statusCounts`. Without one
    /// (or 0, no response), an error counts as 5xx and a success as 2xx —
    /// the server's own reading of an event without `statusCounts` — except
    /// a status-0 success (the client went away first), which counts as 4xx
    /// like nginx's 499.
    pub status: Option<u16>,
    /// The route template (`/api/users/:id`): requests are counted per
    /// route, and per `upstream`, as the contract's `dimensions`. At most
    /// 256 characters are kept; control characters become `?`.
    pub route: Option<String>,
    /// The upstream that answered (`10.0.3.7:8080`), same rules.
    pub upstream: Option<String>,
}

impl Default for Observation {
    fn default() -> Self {
        Self {
            at: None,
            error: false,
            latency_ms: None,
            bytes_sent: 0,
            bytes_received: 0,
            new_connections: 0,
            concurrent_connections: None,
            healthy: true,
            error_message: None,
            status: None,
            route: None,
            upstream: None,
        }
    }
}

impl Observation {
    /// A request that succeeded.
    pub fn success() -> Self {
        Self::default()
    }

    /// A request that failed, with an optional reason.
    pub fn failure(message: Option<String>) -> Self {
        Self {
            error: true,
            error_message: message,
            ..Self::default()
        }
    }

    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = Some(at);
        self
    }

    pub fn latency_ms(mut self, ms: f64) -> Self {
        self.latency_ms = Some(ms);
        self
    }

    pub fn bytes_sent(mut self, bytes: u64) -> Self {
        self.bytes_sent = bytes;
        self
    }

    pub fn bytes_received(mut self, bytes: u64) -> Self {
        self.bytes_received = bytes;
        self
    }

    pub fn new_connections(mut self, n: u64) -> Self {
        self.new_connections = n;
        self
    }

    pub fn concurrent_connections(mut self, n: u64) -> Self {
        self.concurrent_connections = Some(n);
        self
    }

    pub fn healthy(mut self, healthy: bool) -> Self {
        self.healthy = healthy;
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    pub fn upstream(mut self, upstream: impl Into<String>) -> Self {
        self.upstream = Some(upstream.into());
        self
    }
}
