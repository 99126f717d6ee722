//! The web UI under `/ui/` (docs/ui.md): every file of `web/` that is served comes from the
//! binary exactly as it is in the repository, with its media type and an ETag; the pages
//! carry their Content-Security-Policy (only the connect portal may be framed); what the pages
//! and modules load is a file of `web/`, and no file names another host; anything else under
//! `/ui/` is 404.

use std::path::{Path, PathBuf};

use reqwest::{StatusCode, header};

use crate::harness::TestApp;

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// The media type each served extension must be answered with; other files are not served.
fn expected_type(path: &str) -> Option<&'static str> {
    match path.rsplit_once('.')?.1 {
        "html" => Some("text/html; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        "js" => Some("text/javascript; charset=utf-8"),
        "svg" => Some("image/svg+xml"),
        "txt" => Some("text/plain; charset=utf-8"),
        _ => None,
    }
}

/// Every file under `web/`, as a path relative to it with `/` separators.
fn files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("web/ is readable") {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.path().is_dir() {
            files(&entry.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

/// The UI's files: all of `web/` but GraphiQL's (`web/graphiql/`, served under
/// `/graphql/assets/` and tested in tests/api/graphiql.rs).
fn served_files() -> Vec<String> {
    let mut all = Vec::new();
    files(&web(), "", &mut all);
    all.retain(|path| expected_type(path).is_some() && !path.starts_with("graphiql/"));
    all.sort();
    all
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_file_of_web_is_served_as_it_is_with_its_type() {
    let app = TestApp::spawn().await;
    let served = served_files();
    for needed in [
        "index.html",
        "connect.html",
        "app.css",
        "api.js",
        "ui.js",
        "console.js",
        "connect.js",
        "vendor/graphql-ws/client.js",
        "vendor/graphql-ws/LICENSE.txt",
    ] {
        assert!(
            served.iter().any(|p| p == needed),
            "web/{needed} is missing"
        );
    }
    for path in served {
        let response = app
            .http
            .get(app.url(&format!("/ui/{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "/ui/{path}");
        let headers = response.headers().clone();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            expected_type(&path).unwrap(),
            "/ui/{path}"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "/ui/{path}");
        assert_eq!(
            headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "/ui/{path}"
        );
        let body = response.bytes().await.unwrap();
        let on_disk = std::fs::read(web().join(&path)).unwrap();
        assert!(
            body.as_ref() == on_disk.as_slice(),
            "/ui/{path} differs from web/{path}"
        );

        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let again = app
            .http
            .get(app.url(&format!("/ui/{path}")))
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "/ui/{path}");
        assert_eq!(again.headers()[header::ETAG], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn pages_carry_a_strict_policy_and_only_the_portal_may_be_framed() {
    let app = TestApp::spawn().await;
    let http = no_redirects();
    let origin = app.addr.to_string();
    for (path, file, ancestors) in [
        ("/ui/", "index.html", "frame-ancestors 'none'"),
        ("/ui/connect", "connect.html", "frame-ancestors *"),
    ] {
        let response = http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            ancestors,
        ] {
            assert!(directives.contains(&directive), "{path}: {policy}");
        }
        let connect = format!("connect-src 'self' ws://{origin} wss://{origin}");
        assert!(directives.contains(&connect.as_str()), "{path}: {policy}");
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(
            headers.get(header::X_FRAME_OPTIONS).is_some(),
            path == "/ui/",
            "{path}: X-Frame-Options only where framing is refused"
        );
        let body = response.text().await.unwrap();
        assert_eq!(body, std::fs::read_to_string(web().join(file)).unwrap());
    }

    // Without the slash, the console's relative links would point one level up.
    let response = http.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(response.headers()[header::LOCATION], "ui/");
}

#[tokio::test]
async fn anything_else_under_ui_is_not_found() {
    let app = TestApp::spawn().await;
    for path in [
        "/ui/nope.js",
        "/ui/README.md",
        "/ui/vendor/README.md",
        "/ui/vendor/",
        "/ui/connect/more",
        "/ui/index.htm",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/..%2fCargo.toml",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert!(
        web().join("README.md").is_file(),
        "the 404 above is for a file that exists"
    );
}

/// The values of `name="…"` attributes in an HTML text.
fn attribute_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let needle = format!(" {name}=\"");
    html.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            &rest[..rest.find('"').expect("attribute closes")]
        })
        .collect()
}

/// Resolves `reference` against the directory of `from` (both relative to `web/`).
fn resolve(from: &str, reference: &str) -> String {
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for part in reference.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

#[test]
fn pages_and_modules_load_only_files_of_web_and_name_no_other_host() {
    let served = served_files();
    let mut problems = Vec::new();
    for path in &served {
        let text = std::fs::read_to_string(web().join(path)).unwrap();

        // A URL with a host (`https://` alone, as a placeholder, names none) is allowed only
        // where nothing loads it: an XML namespace, or a comment line of a script.
        for scheme in ["http://", "https://"] {
            for (at, _) in text.match_indices(scheme) {
                let names_host = text[at + scheme.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[');
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next().unwrap_or_default().trim();
                let namespace = text[..at].ends_with("xmlns=\"");
                let comment = path.ends_with(".js")
                    && (line.starts_with("//") || line.starts_with('*') || line.starts_with("/*"));
                if names_host && !namespace && !comment {
                    problems.push(format!("web/{path} names another host: {line}"));
                }
            }
        }

        if path.ends_with(".html") {
            let lower = text.to_ascii_lowercase();
            // The policy allows no inline script or style, so a page must have none.
            let inline_script = lower.match_indices("<script").any(|(at, _)| {
                let tag = &lower[at..];
                let end = tag.find('>').expect("tag closes");
                !tag[..end].contains(" src=\"") || !tag[end + 1..].starts_with("</script>")
            });
            if inline_script
                || lower.contains("<style")
                || lower.contains(" style=")
                || lower.contains("javascript:")
            {
                problems.push(format!("web/{path} has an inline script or style"));
            }
            for (at, _) in lower.match_indices(" on") {
                let attribute: String = lower[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                if lower[at + 1 + attribute.len()..].starts_with('=') {
                    problems.push(format!("web/{path} has an inline handler {attribute}"));
                }
            }
            let references = attribute_values(&text, "src")
                .into_iter()
                .chain(attribute_values(&text, "href"))
                .filter(|r| !r.starts_with('#'));
            for reference in references {
                if reference.contains(':') || reference.starts_with('/') {
                    problems.push(format!("web/{path} loads {reference}, not a file of web/"));
                } else if !served.contains(&resolve(path, reference)) {
                    problems.push(format!("web/{path} loads {reference}, which is not served"));
                }
            }
        }

        if path.ends_with(".js") {
            for line in text.lines().map(str::trim) {
                if !(line.starts_with("import ") || line.starts_with("export ")) {
                    continue;
                }
                let Some(specifier) = line
                    .split_once(" from '")
                    .or_else(|| line.split_once(" from \""))
                    .map(|(_, rest)| &rest[..rest.find(['\'', '"']).unwrap_or(rest.len())])
                else {
                    continue;
                };
                if !specifier.starts_with("./") && !specifier.starts_with("../") {
                    problems.push(format!(
                        "web/{path} imports {specifier}, not a file of web/"
                    ));
                } else if !served.contains(&resolve(path, specifier)) {
                    problems.push(format!(
                        "web/{path} imports {specifier}, which is not served"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
