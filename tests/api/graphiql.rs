//! GraphiQL at `GET /graphql`: the page pins every file it loads (a versioned URL on this
//! server and a Subresource Integrity hash), and, in headless Chromium, runs a query over HTTP
//! and a subscription over `graphql-transport-ws` with the key typed in its Headers editor.

use base64::Engine;
use reqwest::header;
use serde_json::json;
use sha2::{Digest, Sha384};

use crate::harness::{Browser, TestApp, grant, log_end, screenshot_dir};

/// The third-party files the page must load, as published on npm (web/graphiql/README.md).
const PINNED: [(&str, &str); 5] = [
    (
        "/graphql/assets/graphiql-4.1.2/graphiql.min.css",
        "sha384-1el1QShFBnnXTx9x/Cprg82hZWKt0ry29OAYIXt05swbi0KcZDFoj0CWguMpopJr",
    ),
    (
        "/graphql/assets/react-18.3.1/react.production.min.js",
        "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
    ),
    (
        "/graphql/assets/react-dom-18.3.1/react-dom.production.min.js",
        "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
    ),
    (
        "/graphql/assets/graphiql-4.1.2/graphiql.min.js",
        "sha384-9XdHu7ajgGJziD4J1zNBKQ842Q/+zZfDv+ib1eMhZWBH6hPAs806x+Jbcf0yNO6B",
    ),
    (
        "/graphql/assets/graphql-ws-6.4.2/graphql-ws.min.js",
        "sha384-mxvR4Mzbsb6QVx/9xI2gtQikQA6m8zMDBFnu3l//4/ROsWt7y2sUGWd+/tYQqDm7",
    ),
];

/// A `<script>` or `<link>` tag of the page: its name and its attributes.
#[derive(Debug)]
struct Tag {
    name: String,
    attributes: Vec<(String, String)>,
}

impl Tag {
    fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every opening tag named `name` in `html`, with its double-quoted (or bare) attributes.
fn tags(html: &str, name: &str) -> Vec<Tag> {
    let lower = html.to_ascii_lowercase();
    let open = format!("<{name}");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = lower[from..].find(&open).map(|i| from + i) {
        let after = start + open.len();
        let end = after + lower[after..].find('>').expect("a tag without its >");
        from = end;
        if !lower[after..].starts_with(|c: char| c.is_whitespace() || c == '>') {
            continue;
        }
        let mut attributes = Vec::new();
        let mut rest = html[after..end].trim();
        while !rest.is_empty() {
            let name_end = rest
                .find(|c: char| c == '=' || c.is_whitespace())
                .unwrap_or(rest.len());
            let attribute = rest[..name_end].to_ascii_lowercase();
            rest = rest[name_end..].trim_start();
            let value = if let Some(quoted) = rest.strip_prefix("=\"") {
                let close = quoted
                    .find('"')
                    .expect("an attribute without its closing quote");
                let value = quoted[..close].to_owned();
                rest = quoted[close + 1..].trim_start();
                value
            } else if let Some(bare) = rest.strip_prefix('=') {
                let close = bare.find(char::is_whitespace).unwrap_or(bare.len());
                let value = bare[..close].to_owned();
                rest = bare[close..].trim_start();
                value
            } else {
                String::new()
            };
            attributes.push((attribute, value));
        }
        found.push(Tag {
            name: name.to_owned(),
            attributes,
        });
    }
    found
}

fn sri(bytes: &[u8]) -> String {
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha384::digest(bytes))
    )
}

/// Whether `url` is a file of this server whose path names its version: a third-party
/// package's `NAME-MAJOR.MINOR.PATCH/` or our own `millwright-DIGEST/`.
fn versioned(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("/graphql/assets/") else {
        return false;
    };
    let Some((folder, file)) = rest.split_once('/') else {
        return false;
    };
    if file.is_empty() || file.contains('/') {
        return false;
    }
    let Some((_, version)) = folder.rsplit_once('-') else {
        return false;
    };
    let semver = version.split('.').count() == 3
        && version
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let digest = folder.starts_with("millwright-")
        && version.len() == 16
        && version.bytes().all(|b| b.is_ascii_hexdigit());
    semver || digest
}

#[tokio::test]
async fn the_page_pins_every_file_it_loads() {
    let app = TestApp::spawn().await;
    let response = app.http.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(policy.contains("connect-src 'self';"), "{policy}");
    let html = response.text().await.unwrap();

    assert!(
        !html.to_ascii_lowercase().contains("<style"),
        "a style element would be loaded without a pin:\n{html}"
    );
    let scripts = tags(&html, "script");
    let (styles, links): (Vec<Tag>, Vec<Tag>) = tags(&html, "link")
        .into_iter()
        .partition(|l| l.get("rel") == Some("stylesheet"));
    assert_eq!(scripts.len(), 5, "{html}");
    assert_eq!(styles.len(), 1, "{html}");
    // Other links (the icon) load nothing.
    for link in &links {
        let href = link.get("href").unwrap_or_default();
        assert!(href.starts_with("data:"), "{link:?}");
    }
    let mut loaded = Vec::new();
    for tag in scripts.iter().chain(&styles) {
        let url = match tag.name.as_str() {
            "script" => tag.get("src"),
            _ => tag.get("href"),
        };
        let url = url.unwrap_or_else(|| panic!("{tag:?} loads no file: an inline script"));
        assert!(
            versioned(url),
            "{url} is not a versioned file of this server"
        );
        let integrity = tag
            .get("integrity")
            .unwrap_or_else(|| panic!("{url} has no integrity attribute"));
        assert!(integrity.starts_with("sha384-"), "{url}: {integrity}");
        assert_eq!(tag.get("crossorigin"), Some("anonymous"), "{url}");
        loaded.push((url.to_owned(), integrity.to_owned()));
    }
    // Scripts run in the order of their tags: ours, which starts GraphiQL, last.
    let last = scripts
        .last()
        .and_then(|s| s.get("src"))
        .unwrap_or_default();
    assert!(last.ends_with("/graphiql.js"), "{html}");
    for (url, integrity) in PINNED {
        assert!(
            loaded.iter().any(|(u, i)| u == url && i == integrity),
            "the page does not load {url} with {integrity}: {loaded:?}"
        );
    }

    for (url, integrity) in &loaded {
        let response = app.http.get(app.url(url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let cache = response.headers()[header::CACHE_CONTROL].to_str().unwrap();
        assert!(cache.contains("immutable"), "{url}: {cache}");
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let expected_type = if url.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        assert!(
            content_type.starts_with(expected_type),
            "{url}: {content_type}"
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(
            &sri(&body),
            integrity,
            "{url} is not the file the page pins"
        );
    }

    for missing in [
        "/graphql/assets/graphiql-4.1.2/graphiql.min.js.map",
        "/graphql/assets/graphiql.js",
    ] {
        let status = app
            .http
            .get(app.url(missing))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{missing}");
    }
}

/// GraphiQL's editors are CodeMirror 5 instances, each reachable from its wrapper element.
const QUERY_EDITOR: &str = ".graphiql-query-editor .CodeMirror";
const HEADERS_EDITOR: &str = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror";
const RESULT: &str = ".result-window .CodeMirror";
const EXECUTE: &str = "button.graphiql-execute-button";

/// What the CodeMirror editor under `selector` holds.
async fn editor_text(browser: &Browser, selector: &str) -> String {
    let value = browser
        .eval(
            "const e = document.querySelector(arguments[0]);
             return e && e.CodeMirror ? e.CodeMirror.getValue() : null",
            vec![json!(selector)],
        )
        .await;
    value.as_str().unwrap_or_default().to_owned()
}

/// Waits until GraphiQL's result pane holds every one of `needles`; returns its text.
async fn wait_for_result(browser: &Browser, needles: &[&str]) -> String {
    let what = format!("GraphiQL's result to show {needles:?}");
    browser
        .wait_until(&what, async || {
            let text = editor_text(browser, RESULT).await;
            needles.iter().all(|n| text.contains(n)).then_some(text)
        })
        .await
}

#[tokio::test]
async fn graphiql_runs_a_query_and_a_subscription_in_chromium() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (account, key) = app.create_account("Acme", 0).await;
    let origin = app.url("");

    browser.goto(&app.url("/graphql")).await;
    browser.wait_for_testid("graphiql").await;
    browser.wait_for(QUERY_EDITOR).await;
    browser.wait_for(HEADERS_EDITOR).await;

    // The key goes in the Headers editor, typed key by key as a person would (CodeMirror
    // closes brackets and quotes itself, and skips over the ones typed after them).
    let headers = format!(r#"{{"Authorization": "Bearer {key}"}}"#);
    browser
        .type_into(&format!("{HEADERS_EDITOR} textarea"), &headers)
        .await;
    assert_eq!(editor_text(&browser, HEADERS_EDITOR).await, headers);

    // The page's default query asks who the caller is: only the key can answer it.
    browser.click(EXECUTE).await;
    wait_for_result(&browser, &[&account, "\"Acme\""]).await;

    // A subscription over graphql-transport-ws: from the end of the log as it is now, so the
    // first grant arrives however long the socket takes to open; the second one arrives
    // live, on a subscription that is known to be running.
    let after = log_end(&app).await;
    let subscription = format!(
        "subscription Grants {{ events(after: \"{after}\", filter: {{types: [CREDITS_CHANGED]}}) {{ type data }} }}"
    );
    browser
        .eval(
            "document.querySelector(arguments[0]).CodeMirror.setValue(arguments[1])",
            vec![json!(QUERY_EDITOR), json!(subscription)],
        )
        .await;
    // GraphiQL reads the operation out of the editor 100 ms after a change, and names the tab
    // after it: run it once both happened, or the previous operation's name goes with it.
    browser
        .wait_until("GraphiQL to read the subscription", async || {
            let ready = browser
                .eval(
                    "return document.querySelector(arguments[0]).CodeMirror.operationName === 'Grants'
                        && document.querySelector('.graphiql-tab-active').innerText.trim() === 'Grants'",
                    vec![json!(QUERY_EDITOR)],
                )
                .await;
            (ready == json!(true)).then_some(())
        })
        .await;
    browser.click(EXECUTE).await;
    grant(&app, &account, 1).await;
    wait_for_result(&browser, &["CREDITS_CHANGED", "\"available\": 1"]).await;
    grant(&app, &account, 1).await;
    wait_for_result(&browser, &["CREDITS_CHANGED", "\"available\": 2"]).await;
    browser
        .screenshot(&screenshot_dir().join("graphiql-subscription.png"))
        .await;

    // At a phone's width GraphiQL still fits the window: nothing to scroll sideways.
    browser.phone().await;
    let overflow = browser
        .eval(
            "return document.documentElement.scrollWidth - window.innerWidth",
            vec![],
        )
        .await;
    browser
        .screenshot(&screenshot_dir().join("graphiql-phone.png"))
        .await;
    assert_eq!(overflow, json!(0), "GraphiQL is wider than a phone");

    browser.assert_only_origin(&origin).await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the console has errors: {errors:?}");

    // Another key in the Headers editor opens another socket. One the server refuses is closed
    // at connection_init (4403), which GraphiQL shows at once instead of retrying.
    browser
        .click(&format!("{EXECUTE}[aria-label^='Stop']"))
        .await;
    browser
        .wait_for(&format!("{EXECUTE}[aria-label^='Execute']"))
        .await;
    let refused = r#"{"Authorization": "Bearer mwk_not-a-key"}"#;
    browser
        .replace_text(&format!("{HEADERS_EDITOR} textarea"), refused)
        .await;
    assert_eq!(editor_text(&browser, HEADERS_EDITOR).await, refused);
    browser.click(EXECUTE).await;
    wait_for_result(&browser, &["Socket closed with event 4403"]).await;
    browser.close().await;
}
