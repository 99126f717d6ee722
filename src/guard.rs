//! The guard on every request Millwright sends out (webhooks and connectors alike): URLs are
//! http(s) with a host, and (unless private targets are allowed) every address the host
//! resolves to must be public. Checked when a URL is accepted and again when each request
//! connects ([`GuardedResolver`], [`refused_literal`]), since DNS can change.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use reqwest::{
    Url,
    dns::{Name, Resolve, Resolving},
};

use crate::error::AppError;

const MAX_URL_LEN: usize = 2048;

/// Parses and checks the form of a URL given as `field` (named in errors).
pub fn parse(url: &str, field: &str) -> Result<Url, AppError> {
    let invalid = |why: &str| AppError::bad_input(format!("`{field}` {why}"));
    if url.len() > MAX_URL_LEN {
        return Err(invalid("is too long"));
    }
    let parsed = Url::parse(url.trim()).map_err(|_| invalid("is not a valid URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("must use http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("needs a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    Ok(parsed)
}

/// Resolves the URL's host; refuses it when an address is not public (unless allowed).
pub async fn resolve(
    url: &Url,
    allow_private: bool,
    field: &str,
) -> Result<Vec<SocketAddr>, AppError> {
    let host = url
        .host_str()
        .ok_or_else(|| AppError::bad_input(format!("`{field}` needs a host")))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = match lookup_within(DNS_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(addrs) if !addrs.is_empty() => addrs,
        Ok(_) | Err(Lookup::Failed(_)) => {
            return Err(AppError::bad_input(format!(
                "`{field}` host {host} does not resolve"
            )));
        }
        Err(Lookup::TimedOut) => {
            return Err(AppError::bad_input(format!(
                "`{field}` host {host} did not resolve within {} s",
                DNS_TIMEOUT.as_secs()
            )));
        }
    };
    // The message does not say which address: it would tell anyone who can create an
    // endpoint what internal names resolve to.
    if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(AppError::bad_input(format!(
            "`{field}` resolves to a loopback, private or reserved address"
        )));
    }
    Ok(addrs)
}

/// How long a host name may take to resolve, when a URL is accepted and when a request
/// connects; a resolver that stalls fails the lookup instead of holding the caller.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);

enum Lookup {
    Failed(std::io::Error),
    TimedOut,
}

impl From<Lookup> for std::io::Error {
    fn from(lookup: Lookup) -> Self {
        match lookup {
            Lookup::Failed(err) => err,
            Lookup::TimedOut => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from DNS within {} s", DNS_TIMEOUT.as_secs()),
            ),
        }
    }
}

/// The addresses a lookup finds, or why it found none, within `timeout`.
async fn lookup_within<I: Iterator<Item = SocketAddr>>(
    timeout: Duration,
    lookup: impl Future<Output = std::io::Result<I>>,
) -> Result<Vec<SocketAddr>, Lookup> {
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(err)) => Err(Lookup::Failed(err)),
        Err(_) => Err(Lookup::TimedOut),
    }
}

/// Whether the URL's host is an IP literal that the guard refuses. A literal does not pass
/// through a resolver, so every request checks it itself.
pub fn refused_literal(url: &Url, allow_private: bool) -> bool {
    !allow_private
        && url
            .host_str()
            .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            .is_some_and(|ip| !is_public(ip))
}

/// Resolves host names for outgoing requests, refusing non-public addresses at connect
/// time, so a name that changes its answer after the check cannot reach an internal address.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = lookup_within(DNS_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0)))
                .await
                .map_err(std::io::Error::from)?;
            if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
                return Err(format!("{} resolves to a non-public address", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 address stands for, where it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::/96`,
/// RFC 6052) and 6to4 (`2002:aabb:ccdd::/48`, RFC 3056). Such an address reaches that IPv4
/// host, so it is judged as that host.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        // IPv4-compatible; `::` and `::1` are IPv6's own unspecified and loopback.
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) > (0, 1) => Some(low(hi, lo)),
        [0x0064, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF 192.0.0.0/24
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18.0.0/15
        || a >= 240) // reserved 240.0.0.0/4
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || first == 0 // ::/16: unspecified, IPv4-compatible and -translated forms, reserved
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x2001 && ip.segments()[1] == 0 // Teredo 2001::/32 (tunnels to IPv4)
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // the rest of 64:ff9b::/32 (local NAT64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_lookup_times_out() {
        let stalled = std::future::pending::<std::io::Result<std::vec::IntoIter<SocketAddr>>>();
        assert!(matches!(
            lookup_within(DNS_TIMEOUT, stalled).await,
            Err(Lookup::TimedOut)
        ));
        let err = std::io::Error::from(Lookup::TimedOut);
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_refused_name_does_not_tell_its_address() {
        let url = Url::parse("http://localhost:9/x").unwrap();
        let err = resolve(&url, false, "url").await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("loopback, private or reserved"),
            "{message}"
        );
        assert!(
            !message.contains("127.0.0.1") && !message.contains("::1"),
            "{message}"
        );
    }

    #[test]
    fn classifies_addresses() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "240.0.0.1",
            "::7f00:1",            // IPv4-compatible 127.0.0.1
            "64:ff9b::a00:1",      // NAT64 of 10.0.0.1
            "64:ff9b::a9fe:a9fe",  // NAT64 of 169.254.169.254
            "2002:7f00:1::",       // 6to4 of 127.0.0.1
            "2002:c0a8:101::1",    // 6to4 of 192.168.1.1
            "2001:0:4136:e378::1", // Teredo
            "fec0::1",             // site local
            "64:ff9b:1::1",        // NAT64 local use
            "::5",                 // IPv4-compatible 0.0.0.5
            "::ffff:0:a00:1",      // IPv4-translated 10.0.0.1
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808", // NAT64 of 8.8.8.8 (DNS64 networks)
            "2002:808:808::1",  // 6to4 of 8.8.8.8
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn refuses_malformed_urls() {
        for url in [
            "ftp://example.com",
            "not a url",
            "http://",
            "https://user:pw@example.com/x",
            "javascript:alert(1)",
        ] {
            assert!(parse(url, "url").is_err(), "{url}");
        }
        assert!(parse("https://example.com/hooks?x=1", "url").is_ok());
    }
}
