//! One webhook POST, SSRF-safe: the host is resolved here, every address is
//! checked ([`target::refused`]), and the connection goes to the checked
//! address (TLS server name and `Host` from the URL): no DNS-rebinding
//! window. 10 s for the whole exchange, no redirects (hyper's connection
//! API follows none), at most 64 KB of the response body read.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::domain::alert::target::{self, Refused, Target};

pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const RESPONSE_CAP_BYTES: usize = 64 * 1024;

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Timeout,
    /// The URL or every address it resolves to is refused.
    Refused(String),
    /// Could not connect or speak HTTP.
    Failed(String),
}

impl Outcome {
    /// As the deliveries log writes it.
    pub fn log_status(&self) -> String {
        match self {
            Self::Status(code) => code.to_string(),
            Self::Timeout => "timeout".into(),
            Self::Refused(_) => "refused".into(),
            Self::Failed(_) => "error".into(),
        }
    }

    pub fn delivered(&self) -> bool {
        matches!(self, Self::Status(code) if (200..300).contains(code))
    }
}

/// The first resolved address that may be reached, or why none may.
pub fn choose(addrs: &[SocketAddr], allow_loopback: bool) -> Result<SocketAddr, String> {
    let mut why = String::from("the host resolves to no address");
    for addr in addrs {
        match target::refused(addr.ip()) {
            None => return Ok(*addr),
            Some(Refused::Loopback) if allow_loopback => return Ok(*addr),
            Some(class) => why = format!("{} address", class.as_str()),
        }
    }
    Err(why)
}

/// POSTs `body` with `headers` to `url`.
pub async fn post(
    url: &str,
    allow_loopback: bool,
    headers: &[(&str, String)],
    body: String,
) -> Outcome {
    let target = match target::parse(url, allow_loopback) {
        Ok(t) => t,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    match tokio::time::timeout(TIMEOUT, exchange(&target, allow_loopback, headers, body)).await {
        Err(_) => Outcome::Timeout,
        Ok(outcome) => outcome,
    }
}

async fn exchange(
    target: &Target,
    allow_loopback: bool,
    headers: &[(&str, String)],
    body: String,
) -> Outcome {
    let addrs: Vec<SocketAddr> =
        match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
            Ok(a) => a.collect(),
            Err(e) => return Outcome::Failed(format!("resolving: {e}")),
        };
    let addr = match choose(&addrs, allow_loopback) {
        Ok(a) => a,
        Err(why) => return Outcome::Refused(why),
    };
    let tcp = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connecting: {e}")),
    };
    let result = if target.https {
        let config = match tls_config() {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e),
        };
        let name = match rustls::pki_types::ServerName::try_from(target.host.clone()) {
            Ok(n) => n,
            Err(e) => return Outcome::Refused(format!("server name: {e}")),
        };
        match tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
        {
            Ok(tls) => request(tls, target, headers, body).await,
            Err(e) => Err(format!("TLS: {e}")),
        }
    } else {
        request(tcp, target, headers, body).await
    };
    match result {
        Ok(status) => Outcome::Status(status),
        Err(e) => Outcome::Failed(e),
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use hyper_rustls::ConfigBuilderExt;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS versions: {e}"))?
                .with_native_roots()
                .map_err(|e| format!("root certificates: {e}"))?
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

async fn request<IO>(
    io: IO,
    target: &Target,
    headers: &[(&str, String)],
    body: String,
) -> Result<u16, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let host = match (target.host.contains(':'), target.port) {
        (true, p) => format!("[{}]:{p}", target.host),
        (false, 443) if target.https => target.host.clone(),
        (false, p) => format!("{}:{p}", target.host),
    };
    let mut builder = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "proxy-metrics-webhooks/1");
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut read = 0usize;
    while read < RESPONSE_CAP_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    driver.abort();
    Ok(status)
}
