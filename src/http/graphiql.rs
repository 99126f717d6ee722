//! GraphiQL, served whole from the binary: the page `GET /graphql` shows
//! (web/graphiql/index.html), its script (web/graphiql/graphiql.js) and the third-party files
//! it loads (web/graphiql/vendor/: React, ReactDOM, GraphiQL and graphql-ws, as published).
//!
//! The page works where the browser reaches no host but this server, and loads nothing that
//! was not pinned: each file's URL names its version (ours, a digest of its content) and the
//! page gives each its Subresource Integrity hash, so a browser runs only the exact file, and
//! may cache it for good. A Content-Security-Policy holds the page to this server's files and
//! connections.

use std::{fmt::Write, sync::LazyLock};

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use sha2::{Digest, Sha384};

/// Where the files are served: `/graphql/assets/{name}`.
pub(super) const ASSETS_ROUTE: &str = "/graphql/assets/{*name}";
const ASSETS_PREFIX: &str = "/graphql/assets/";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! web_file {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/graphiql/", $path))
    };
}

/// The third-party files under their published names, each in a folder named by its package
/// and version (web/graphiql/README.md says where each comes from).
const VENDORED: [(&str, &str, &[u8]); 5] = [
    (
        "react-18.3.1/react.production.min.js",
        JAVASCRIPT,
        web_file!("vendor/react-18.3.1/react.production.min.js"),
    ),
    (
        "react-dom-18.3.1/react-dom.production.min.js",
        JAVASCRIPT,
        web_file!("vendor/react-dom-18.3.1/react-dom.production.min.js"),
    ),
    (
        "graphiql-4.1.2/graphiql.min.js",
        JAVASCRIPT,
        web_file!("vendor/graphiql-4.1.2/graphiql.min.js"),
    ),
    (
        "graphiql-4.1.2/graphiql.min.css",
        CSS,
        web_file!("vendor/graphiql-4.1.2/graphiql.min.css"),
    ),
    (
        "graphql-ws-6.4.2/graphql-ws.min.js",
        JAVASCRIPT,
        web_file!("vendor/graphql-ws-6.4.2/graphql-ws.min.js"),
    ),
];

/// Our script, which starts GraphiQL; the page names it `graphiql.js`.
const SCRIPT: &[u8] = web_file!("graphiql.js");

const TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/web/graphiql/index.html"
));

/// Only this server's files and connections (`'self'` covers its WebSocket too); inline
/// styles, which GraphiQL's components set, but no inline script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A file the page loads.
struct Asset {
    /// Its path under [`ASSETS_PREFIX`].
    path: String,
    content_type: &'static str,
    bytes: &'static [u8],
    /// `sha384-…`, as the `integrity` attribute has it.
    integrity: String,
}

struct Site {
    page: String,
    assets: Vec<Asset>,
}

static SITE: LazyLock<Site> = LazyLock::new(Site::build);

impl Site {
    fn build() -> Self {
        let mut assets: Vec<Asset> = VENDORED
            .iter()
            .map(|&(path, content_type, bytes)| Asset {
                path: path.to_owned(),
                content_type,
                bytes,
                integrity: integrity(bytes),
            })
            .collect();
        // Named by its digest: a changed script is a new URL, so a cached one never lingers.
        let digest = Sha384::digest(SCRIPT);
        let mut folder = String::from("millwright-");
        for byte in &digest[..8] {
            let _ = write!(folder, "{byte:02x}");
        }
        assets.push(Asset {
            path: format!("{folder}/graphiql.js"),
            content_type: JAVASCRIPT,
            bytes: SCRIPT,
            integrity: integrity(SCRIPT),
        });
        let page = render(TEMPLATE, |kind, name| {
            let asset = if name == "graphiql.js" {
                assets.last()
            } else {
                assets.iter().find(|a| a.path == name)
            };
            let asset = asset.unwrap_or_else(|| panic!("index.html names an unknown file {name}"));
            match kind {
                "url" => format!("{ASSETS_PREFIX}{}", asset.path),
                "integrity" => asset.integrity.clone(),
                _ => panic!("index.html has an unknown placeholder {{{{{kind} {name}}}}}"),
            }
        });
        Site { page, assets }
    }
}

/// `sha384-` and the base64 of the SHA-384 digest: a Subresource Integrity value.
fn integrity(bytes: &[u8]) -> String {
    let digest = Sha384::digest(bytes);
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The template with each `{{kind name}}` replaced by `value(kind, name)`.
fn render(template: &str, value: impl Fn(&str, &str) -> String) -> String {
    let mut page = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        page.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map(|end| start + end)
            .expect("index.html: a {{ without its }}");
        let (kind, name) = rest[start + 2..end]
            .split_once(' ')
            .expect("index.html: a placeholder is {{kind name}}");
        page.push_str(&value(kind, name));
        rest = &rest[end + 2..];
    }
    page.push_str(rest);
    page
}

/// The GraphiQL page.
pub(super) fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Revalidated each time, so it always names the files this binary serves.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SITE.page.as_str(),
    )
        .into_response()
}

/// `GET /graphql/assets/{name}`: one of the page's files, or 404.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    let Some(asset) = SITE.assets.iter().find(|a| a.path == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            // A file's URL changes with its content: it can be kept as long as wanted.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_file_with_its_integrity() {
        let site = Site::build();
        assert!(!site.page.contains("{{"), "{}", site.page);
        for asset in &site.assets {
            let url = format!("\"{ASSETS_PREFIX}{}\"", asset.path);
            assert!(site.page.contains(&url), "the page does not load {url}");
            assert!(site.page.contains(&asset.integrity), "{}", asset.path);
        }
    }

    #[test]
    fn placeholders_are_replaced_in_order() {
        let out = render("a{{url x}}b{{integrity y}}c", |kind, name| {
            format!("<{kind}:{name}>")
        });
        assert_eq!(out, "a<url:x>b<integrity:y>c");
    }
}
