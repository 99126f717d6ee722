//! What every HTTP connector shares: one client per process (pooled connections, rustls,
//! gzip, connect timeout 10 s, request timeout 60 s, no proxy from the environment, no
//! redirects), the outbound guard on every request, bounded response bodies, and the
//! mapping of HTTP answers to [`ConnectorError`]s.
//!
//! A remote's error text is kept (it is what a person needs to act), but never a URL: the
//! transport's own errors are stripped of it, since a URL may carry a query with secrets.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{
    Client, Method, RequestBuilder, StatusCode, Url,
    header::{HeaderMap, RETRY_AFTER},
    redirect::Policy,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ConnectorError;
use crate::{
    catalog::System,
    error::AppError,
    guard::{self, GuardedResolver},
};

/// The largest response body a connector reads; a larger one is a remote fault.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The longest a remote's own message is kept, in characters.
const MAX_MESSAGE_CHARS: usize = 500;
/// How long a 429 or 503 without a reset header is waited out.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The process's outbound HTTP for connectors, and what connectors keep between runs
/// (OAuth access tokens). Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    client: Client,
    allow_private: bool,
    tokens: Arc<Mutex<HashMap<Uuid, CachedToken>>>,
    sessions: Arc<Mutex<HashMap<Uuid, Session>>>,
    /// Each connection's outbound request rate, shared by everything of this process that
    /// calls its remote (sync runs and bulk writes).
    rate: Arc<governor::DefaultKeyedRateLimiter<Uuid>>,
}

/// The outbound rate of a connection whose process was not told one.
const DEFAULT_REQUESTS_PER_SECOND: u32 = 10;

/// Evenly spaced requests: `per_second` a second, no burst above one.
fn connection_rate(per_second: u32) -> governor::DefaultKeyedRateLimiter<Uuid> {
    let per_second =
        std::num::NonZeroU32::new(per_second.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::keyed(
        governor::Quota::per_second(per_second).allow_burst(std::num::NonZeroU32::MIN),
    )
}

/// A write session a remote hands out (SAP: a CSRF token and the cookies it belongs to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub token: String,
    /// The `Cookie` header value: `name=value; name=value`.
    pub cookies: String,
}

#[derive(Clone)]
struct CachedToken {
    /// Which credentials the token was issued for: new credentials never reuse it.
    fingerprint: [u8; 32],
    token: String,
    expires: tokio::time::Instant,
}

/// An answer read in full (up to [`MAX_BODY_BYTES`]).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Result<Value, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|err| {
            ConnectorError::RemoteFault(format!(
                "the remote answered {} with a body that is not JSON ({err})",
                self.status.as_u16()
            ))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Outbound {
    pub fn new(allow_private: bool) -> Self {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(60))
            .gzip(true)
            .no_proxy()
            .redirect(Policy::none())
            .user_agent(concat!("millwright/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .expect("the HTTP client builds");
        Self {
            client,
            allow_private,
            tokens: Arc::default(),
            sessions: Arc::default(),
            rate: Arc::new(connection_rate(DEFAULT_REQUESTS_PER_SECOND)),
        }
    }

    /// Each connection's remote gets at most `per_second` requests a second from this process.
    pub fn with_request_rate(mut self, per_second: u32) -> Self {
        self.rate = Arc::new(connection_rate(per_second));
        self
    }

    /// What a write to `connection_id`'s remote waits on before each request.
    pub fn pace(&self, connection_id: Uuid) -> super::Pace {
        super::Pace::new(self.rate.clone(), connection_id)
    }

    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request and reads its answer, whatever its status.
    pub async fn send(&self, request: RequestBuilder) -> Result<Reply, ConnectorError> {
        let request = request.build().map_err(|err| {
            ConnectorError::Validation(format!("the request could not be built: {}", strip(err)))
        })?;
        if guard::refused_literal(request.url(), self.allow_private) {
            return Err(ConnectorError::Unreachable(
                "the remote's address is loopback, private or reserved, which this server does \
                 not reach (MILLWRIGHT_CONNECTOR_ALLOW_PRIVATE_TARGETS)"
                    .into(),
            ));
        }
        let mut response = self.client.execute(request).await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A cached access token for `connection` issued for these credentials, if still valid.
    pub fn cached_token(&self, connection: Uuid, fingerprint: [u8; 32]) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(&connection)
            .filter(|t| t.fingerprint == fingerprint && t.expires > tokio::time::Instant::now())
            .map(|t| t.token.clone())
    }

    pub fn store_token(
        &self,
        connection: Uuid,
        fingerprint: [u8; 32],
        token: String,
        lifetime: Duration,
    ) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        tokens.retain(|_, t| t.expires > now);
        let Some(expires) = now.checked_add(lifetime.min(Duration::from_secs(86_400))) else {
            return;
        };
        tokens.insert(
            connection,
            CachedToken {
                fingerprint,
                token,
                expires,
            },
        );
    }

    pub fn forget_token(&self, connection: Uuid) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(&connection);
        self.forget_session(connection);
    }

    pub fn session(&self, connection: Uuid) -> Option<Session> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&connection).cloned()
    }

    pub fn store_session(&self, connection: Uuid, session: Session) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(connection, session);
    }

    pub fn forget_session(&self, connection: Uuid) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(&connection);
    }
}

/// How far before a pass's start the next incremental read begins: changes committed
/// around the start (or stamped a little earlier than they committed) are read again rather
/// than missed. The content hash keeps what is read twice from counting as a change.
pub const MARK_OVERLAP: chrono::Duration = chrono::Duration::seconds(60);

/// The server's clock, from its `Date` header.
pub fn server_date(headers: &HeaderMap) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    let at = httpdate::parse_http_date(text.trim()).ok()?;
    Some(chrono::DateTime::<chrono::Utc>::from(at))
}

/// The modification mark a pass ends with: changes after it are what the next incremental
/// run asks for. A record read early in a pass and changed later in it has a change time
/// before the latest one the pass saw, so the mark is never later than the pass's start
/// (less [`MARK_OVERLAP`]); and it never goes back before the mark the pass started from.
/// A change time in the future (a wrong remote clock) cannot push the mark past the start.
pub fn mark(
    seen: Option<chrono::DateTime<chrono::Utc>>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    started: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<String> {
    let start = started.map(|at| at - MARK_OVERLAP);
    let mark = match (seen, start) {
        (Some(seen), Some(start)) => Some(seen.min(start)),
        (seen, start) => seen.or(start),
    };
    let mark = match (mark, since) {
        (Some(mark), Some(since)) => Some(mark.max(since)),
        (mark, since) => mark.or(since),
    };
    mark.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The modification mark an incremental read starts from (a date in a form `parse_date`
/// reads), if any.
pub fn since(
    request: &super::ReadRequest,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ConnectorError> {
    match &request.modified_since {
        Some(mark) => super::mapping::parse_date(mark).map(Some).ok_or_else(|| {
            ConnectorError::Validation(format!("invalid modification mark `{mark:.40}`"))
        }),
        None => Ok(None),
    }
}

/// A next page saved in a cursor, provided it is still on the connection's `base_url` (a
/// page saved before `base_url` changed would carry the credentials elsewhere): else the
/// cursor is refused and the pass starts over.
pub fn saved_next(base: Result<&Url, ConnectorError>, next: &str) -> Result<Url, ConnectorError> {
    let base = base?;
    Url::parse(next)
        .ok()
        .filter(|url| same_origin(base, url))
        .ok_or_else(|| {
            ConnectorError::Validation(
                "the saved next page is not on the connection's base_url".into(),
            )
        })
}

/// A fingerprint of secret material, to tell credentials apart without keeping them.
pub fn fingerprint(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

fn too_large() -> ConnectorError {
    ConnectorError::RemoteFault(format!(
        "the remote's answer is larger than {} MiB",
        MAX_BODY_BYTES / (1024 * 1024)
    ))
}

/// A transport error's text without its URL, and with its causes.
fn strip(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn transport(err: reqwest::Error) -> ConnectorError {
    if err.is_timeout() {
        ConnectorError::RemoteFault("the remote did not answer in time".into())
    } else if err.is_connect() {
        ConnectorError::Unreachable(strip(err))
    } else if err.is_body() || err.is_decode() {
        ConnectorError::RemoteFault(format!("the remote's answer broke off: {}", strip(err)))
    } else {
        ConnectorError::Unreachable(strip(err))
    }
}

/// How long a 429 or 503 asks to wait: `Retry-After` (seconds or an HTTP date) or the
/// vendor's own reset header (seconds).
pub fn retry_after(headers: &HeaderMap, reset_header: Option<&str>) -> Duration {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let seconds = |t: &str| t.trim().parse::<f64>().ok().filter(|s| s.is_finite());
    if let Some(value) = reset_header.and_then(text).and_then(seconds) {
        return Duration::from_secs_f64(value.clamp(0.0, 3600.0));
    }
    match headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        Some(value) => match seconds(value) {
            Some(secs) => Duration::from_secs_f64(secs.clamp(0.0, 3600.0)),
            None => httpdate::parse_http_date(value.trim())
                .ok()
                .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
                .unwrap_or(DEFAULT_RETRY_AFTER)
                .min(Duration::from_secs(3600)),
        },
        None => DEFAULT_RETRY_AFTER,
    }
}

/// The error an unsuccessful answer means. `message` is the remote's own text, when its
/// body had one; `reset_header` the vendor's rate-limit reset header, if it has one.
pub fn error_for(
    reply: &Reply,
    message: Option<String>,
    reset_header: Option<&str>,
) -> ConnectorError {
    let status = reply.status;
    let text = match message {
        Some(m) if !m.trim().is_empty() => format!("{} {}", status.as_u16(), clip(m.trim())),
        _ => format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error")
        ),
    };
    match status.as_u16() {
        401 | 403 => ConnectorError::AuthRejected(text),
        429 | 503 => ConnectorError::RateLimited {
            retry_after: retry_after(&reply.headers, reset_header),
        },
        500..=599 => ConnectorError::RemoteFault(text),
        _ => ConnectorError::Validation(text),
    }
}

/// At most [`MAX_MESSAGE_CHARS`] of a remote's message, on one line.
pub fn clip(message: &str) -> String {
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        format!("{one_line}…")
    } else {
        one_line
    }
}

/// Checks a connection's URL credentials (`base_url`, `token_url`) when they are given:
/// https, or http only where private targets are allowed; and (unless allowed) a host that
/// resolves to public addresses only. Errors name the field.
pub async fn check_targets(
    system: &System,
    credentials: &Map<String, Value>,
    allow_private: bool,
) -> Result<(), AppError> {
    for field in system
        .credential_fields
        .iter()
        .filter(|f| f.name.ends_with("_url"))
    {
        let Some(text) = credentials.get(field.name).and_then(Value::as_str) else {
            continue;
        };
        let name = format!("credentials.{}", field.name);
        let url = parse_base(text, &name, allow_private)?;
        guard::resolve(&url, allow_private, &name).await?;
    }
    Ok(())
}

/// Parses a base URL: http(s), a host, no credentials, no query or fragment; plain http only
/// where private targets are allowed.
pub fn parse_base(text: &str, field: &str, allow_private: bool) -> Result<Url, AppError> {
    let url = guard::parse(text, field)?;
    if url.scheme() == "http" && !allow_private {
        return Err(AppError::bad_input(format!(
            "`{field}` must use https (plain http is allowed only with \
             MILLWRIGHT_CONNECTOR_ALLOW_PRIVATE_TARGETS)"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(AppError::bad_input(format!(
            "`{field}` must not have a query or fragment"
        )));
    }
    Ok(url)
}

/// `base` with `path` appended under its path (`https://h/maximo` + `api/os/x`).
pub fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    url
}

/// What a query value keeps unencoded: the unreserved characters and some punctuation of
/// OData and OSLC expressions (quotes are encoded, as the URL parser does for http(s)). Space is `%20` and `+` is `%2B`, never `+` for a space: not
/// every server reads a form-encoded `+` as a space (a date's `+00:00` would break).
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'(')
    .remove(b')')
    .remove(b',')
    .remove(b'/')
    .remove(b':')
    .remove(b'*');

/// Appends `name=value` pairs to the URL's query, each value percent-encoded strictly.
pub fn append_query(url: &mut Url, pairs: &[(&str, &str)]) {
    let mut query = url.query().unwrap_or_default().to_owned();
    for (name, value) in pairs {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.extend(percent_encoding::utf8_percent_encode(value, QUERY_VALUE));
    }
    url.set_query(Some(&query));
}

/// Whether `next` may be followed from `base`: same scheme, host and port.
pub fn same_origin(base: &Url, next: &Url) -> bool {
    base.scheme() == next.scheme()
        && base.host_str() == next.host_str()
        && base.port_or_known_default() == next.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_vendor_headers() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), None),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_after(
                &headers(&[("x-rate-limit-reset", "3")]),
                Some("x-rate-limit-reset")
            ),
            Duration::from_secs(3)
        );
        assert_eq!(retry_after(&HeaderMap::new(), None), DEFAULT_RETRY_AFTER);
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(
            retry_after(&headers(&[("retry-after", past)]), None),
            DEFAULT_RETRY_AFTER
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "999999")]), None),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn marks_stay_before_the_start_and_never_go_back() {
        let at = |s: &str| Some(chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc());
        let started = at("2026-12-05T10:00:00Z");
        assert_eq!(
            mark(at("2026-01-02T00:07:00Z"), None, started).as_deref(),
            Some("2026-01-02T00:07:00Z"),
            "the latest change seen, when it is older than the start"
        );
        assert_eq!(
            mark(at("2026-12-05T10:00:30Z"), None, started).as_deref(),
            Some("2026-12-05T09:59:00Z"),
            "never past the start less the overlap"
        );
        assert_eq!(
            mark(at("9999-12-31T00:00:00Z"), None, started).as_deref(),
            Some("2026-12-05T09:59:00Z"),
            "a change date in the future does not block later reads"
        );
        assert_eq!(
            mark(None, at("2026-12-05T09:59:30Z"), started).as_deref(),
            Some("2026-12-05T09:59:30Z"),
            "never back before the mark the pass started from"
        );
        assert_eq!(mark(None, None, None), None);
        let mut headers = HeaderMap::new();
        headers.insert("date", "Sat, 05 Dec 2026 10:00:00 GMT".parse().unwrap());
        assert_eq!(server_date(&headers), started);
    }

    #[test]
    fn statuses_map_to_error_kinds() {
        let reply = |status: u16| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        };
        assert!(matches!(
            error_for(&reply(401), None, None),
            ConnectorError::AuthRejected(_)
        ));
        assert!(matches!(
            error_for(&reply(429), None, None),
            ConnectorError::RateLimited { .. }
        ));
        assert!(matches!(
            error_for(&reply(503), None, None),
            ConnectorError::RateLimited { .. }
        ));
        let fault = error_for(&reply(500), Some("BMXAA4214E - boom\n".into()), None);
        assert_eq!(
            fault,
            ConnectorError::RemoteFault("500 BMXAA4214E - boom".into())
        );
        assert!(matches!(
            error_for(&reply(400), None, None),
            ConnectorError::Validation(_)
        ));
        assert_eq!(
            clip(&"x".repeat(600)).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(parse_base("https://sap.example.com", "b", false).is_ok());
        assert!(parse_base("http://sap.example.com", "b", false).is_err());
        assert!(parse_base("http://sap.example.com", "b", true).is_ok());
        assert!(parse_base("https://sap.example.com/?x=1", "b", false).is_err());
        assert!(parse_base("ftp://sap.example.com", "b", true).is_err());
        let base = Url::parse("https://h.example.com/maximo/").unwrap();
        assert_eq!(
            join(&base, "/api/os/mxapiasset").as_str(),
            "https://h.example.com/maximo/api/os/mxapiasset"
        );
        let mut url = base.clone();
        append_query(
            &mut url,
            &[
                ("$filter", "A gt datetimeoffset'2026-01-02T00:07:09+01:00'"),
                ("lean", "1"),
            ],
        );
        assert_eq!(
            url.query(),
            Some("$filter=A%20gt%20datetimeoffset%272026-01-02T00:07:09%2B01:00%27&lean=1"),
            "the URL parser encodes quotes in queries of http(s) URLs itself"
        );
        let other = Url::parse("https://evil.example.com/maximo").unwrap();
        assert!(!same_origin(&base, &other));
        assert!(same_origin(
            &base,
            &Url::parse("https://h.example.com:443/x").unwrap()
        ));
    }
}
