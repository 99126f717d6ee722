//! The web UI under `/ui/`: the console (`/ui/`) and the connect portal (`/ui/connect`),
//! plain HTML, CSS and ES modules kept in `web/` (docs/ui.md).
//!
//! Every file is compiled into the binary (rust-embed with `debug-embed`, so debug builds too):
//! the server needs nothing beside it, and the pages load nothing from another host. Only the
//! types listed in [`content_type`] are served; the rest of `web/` (its READMEs) is not.
//!
//! Pages carry a Content-Security-Policy that lets scripts, styles and connections reach this
//! origin only, with no inline script or style: a value shown on a page can never run as code.
//! The console may not be framed; the connect portal may be, by any site, since vendors embed
//! it in their own product (its token comes from the URL fragment, which only the framing
//! page knows). Every answer is `no-cache` with an ETag of its content: the files keep their
//! names from one release to the next, so a longer cache would pair a new page with an old
//! script, while a revalidation costs one 304.

use std::{borrow::Cow, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use rust_embed::RustEmbed;

/// `web/` but GraphiQL's own files (served by `http/graphiql.rs`) and the READMEs.
#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "graphiql/*"]
#[exclude = "*.md"]
#[exclude = "*/*.md"]
struct Assets;

/// The console, served at `/ui/`.
const CONSOLE: &str = "index.html";
/// The connect portal, served at `/ui/connect`.
const PORTAL: &str = "connect.html";

/// The UI's routes; they need no state. `embedders`: the origins whose pages may frame the
/// connect portal (`MILLWRIGHT_CORS_ALLOWED_ORIGINS`); none listed, any page may.
pub fn router<S: Clone + Send + Sync + 'static>(embedders: &[String]) -> Router<S> {
    let ancestors: Arc<str> = if embedders.is_empty() {
        "*".into()
    } else {
        format!("'self' {}", embedders.join(" ")).into()
    };
    let (console, portal, assets) = (ancestors.clone(), ancestors.clone(), ancestors);
    Router::new()
        // Relative, so that the pages' relative links work behind a proxy that adds a prefix.
        .route("/ui", get(|| async { Redirect::permanent("ui/") }))
        .route(
            "/ui/",
            get(|headers: HeaderMap| async move { serve(CONSOLE, &headers, &console) }),
        )
        .route(
            "/ui/connect",
            get(|headers: HeaderMap| async move { serve(PORTAL, &headers, &portal) }),
        )
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                serve(&path, &headers, &assets)
            }),
        )
}

/// The media type of a file served from `web/`, by its extension; `None` for a file that is
/// not served.
fn content_type(path: &str) -> Option<&'static str> {
    let (_, extension) = path.rsplit_once('.')?;
    Some(match extension {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// `portal_ancestors`: the `frame-ancestors` of the connect portal (the console is never framed).
fn serve(path: &str, request: &HeaderMap, portal_ancestors: &str) -> Response {
    let (Some(content_type), Some(file)) = (content_type(path), Assets::get(path)) else {
        return (StatusCode::NOT_FOUND, "no such file in the web UI").into_response();
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!(
        "\"{}\"",
        hash[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if path.ends_with(".html") {
        let framable = path == PORTAL;
        let ancestors = if framable { portal_ancestors } else { "'none'" };
        if let Ok(policy) = HeaderValue::from_str(&policy(ancestors, request)) {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if !framable {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
    }
    if matches(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Embedded files are borrowed from the binary: sent without a copy.
    let body = match file.data {
        Cow::Borrowed(bytes) => Body::from(bytes),
        Cow::Owned(bytes) => Body::from(bytes),
    };
    (headers, body).into_response()
}

/// Whether the request's `If-None-Match` names this ETag (or is `*`); weak tags compare by
/// their value, as RFC 9110 has it for this header.
fn matches(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// The Content-Security-Policy of a page. Connections may go to this origin only: `'self'`
/// covers `fetch`, and the WebSocket origins are named as well, for browsers that do not count
/// `ws:`/`wss:` as `'self'`. They are built from `Host` when it is a plain host and port;
/// without one the page still works wherever `'self'` covers WebSockets.
fn policy(ancestors: &str, request: &HeaderMap) -> String {
    let host = request
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        });
    let sockets = host.map_or(String::new(), |h| format!(" ws://{h} wss://{h}"));
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors {ancestors}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_types_are_served() {
        assert_eq!(
            content_type("console.js"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(content_type("README.md"), None);
        assert_eq!(content_type("Makefile"), None);
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_any() {
        let etag = "\"abc\"";
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
            matches(&headers, etag)
        };
        assert!(with("\"abc\""));
        assert!(with("\"x\", W/\"abc\""));
        assert!(with("*"));
        assert!(!with("\"abd\""));
        assert!(!matches(&HeaderMap::new(), etag));
    }

    #[test]
    fn a_host_with_other_characters_names_no_socket_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.example:8080"));
        assert!(
            policy("'none'", &headers)
                .contains("connect-src 'self' ws://a.example:8080 wss://a.example:8080;")
        );
        headers.insert(
            header::HOST,
            HeaderValue::from_static("a.example; script-src *"),
        );
        assert!(policy("'none'", &headers).contains("connect-src 'self';"));
        assert!(policy("*", &headers).ends_with("frame-ancestors *"));
    }
}
