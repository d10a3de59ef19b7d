//! Where a webhook may go: the URL rules (`https`, no user-info, port 443
//! or >= 1024) and the SSRF classifier of resolved addresses. The same
//! checks run at creation and, on the freshly resolved address, at every
//! delivery (which then connects to exactly that address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ValidationError;

/// A webhook URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// The host as written (brackets removed from an IPv6 literal).
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

fn invalid(message: &str) -> ValidationError {
    ValidationError::invalid(format!("'webhookUrl' {message}"))
}

/// Parses and checks a webhook URL. `allow_loopback` (the local stack's
/// `ALLOW_LOOPBACK_WEBHOOKS=1`) also accepts `http` — to loopback only.
pub fn parse(url: &str, allow_loopback: bool) -> Result<Target, ValidationError> {
    if url
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(invalid("must not contain spaces or control characters."));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("must be an absolute https:// URL."))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" if allow_loopback => false,
        _ => return Err(invalid("must use https.")),
    };
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(cut);
    if authority.contains('@') {
        return Err(invalid("must not carry user information (user@host)."));
    }
    let path = match tail.split('#').next().unwrap_or("") {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid("has an unclosed IPv6 literal."))?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
    {
        return Err(invalid("has no valid host."));
    }
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| invalid("has an invalid port."))?,
    };
    if port != 443 && port < 1024 {
        return Err(invalid("must use port 443 or a port from 1024 up."));
    }
    if !https {
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(invalid(
                "must use https (http is allowed to loopback only here).",
            ));
        }
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && let Some(class) = refused(ip)
        && !(allow_loopback && class == Refused::Loopback)
    {
        return Err(invalid(&format!(
            "points at a refused address ({}).",
            class.as_str()
        )));
    }
    Ok(Target {
        https,
        host,
        port,
        path,
    })
}

/// Why an address is refused as a webhook destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Loopback,
    Private,
    LinkLocal,
    SharedAddressSpace,
    Multicast,
    CloudMetadata,
    Unspecified,
    Broadcast,
    Reserved,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private network",
            Self::LinkLocal => "link-local",
            Self::SharedAddressSpace => "carrier-grade NAT",
            Self::Multicast => "multicast",
            Self::CloudMetadata => "cloud metadata",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
        }
    }
}

/// The class of a refused address, `None` for a public one. IPv4-mapped
/// (`::ffff:a.b.c.d`) and IPv4-compatible IPv6 addresses are judged as the
/// IPv4 address they carry.
pub fn refused(ip: IpAddr) -> Option<Refused> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<Refused> {
    let [a, b, ..] = ip.octets();
    Some(if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Refused::CloudMetadata
    } else if ip.is_unspecified() || a == 0 {
        Refused::Unspecified
    } else if ip.is_loopback() {
        Refused::Loopback
    } else if ip.is_private() {
        Refused::Private
    } else if ip.is_link_local() {
        Refused::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        Refused::SharedAddressSpace
    } else if ip.is_multicast() {
        Refused::Multicast
    } else if ip.is_broadcast() {
        Refused::Broadcast
    } else if a >= 240
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b & 0xfe) == 18)
    {
        // 240/4 reserved, 192.0.0/24 protocol assignments, 198.18/15 benchmarking
        Refused::Reserved
    } else {
        return None;
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<Refused> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        Refused::Unspecified
    } else if ip.is_loopback() {
        Refused::Loopback
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        // AWS's IPv6 instance metadata endpoint
        Refused::CloudMetadata
    } else if (first & 0xfe00) == 0xfc00 {
        Refused::Private // unique local fc00::/7
    } else if (first & 0xffc0) == 0xfe80 {
        Refused::LinkLocal
    } else if (first & 0xff00) == 0xff00 {
        Refused::Multicast
    } else if let Some(v4) = ip.to_ipv4() {
        // deprecated IPv4-compatible ::a.b.c.d, NAT64 is left public
        return refused_v4(v4).or(Some(Refused::Reserved));
    } else {
        return None;
    })
}
