//! The web UI in headless Chromium against the real server, used as a person uses it: the
//! console (sign in, create and open a customer, connect the demo system through the connect
//! dialog, follow its syncs and the credits gauge live, disconnect), the connect portal (a
//! portal session's page: connect, first sync, disconnect; a session revoked while the page
//! is open), both at a phone's width, the connect dialog with the keyboard alone, and the
//! credentials form's input for each kind of field. Every page must request nothing from
//! another origin than the server's and log no error.
//!
//! With `MILLWRIGHT_SCREENSHOTS=<folder>`, the console's and the portal's tests also save
//! there the screenshots of the documentation (`console.png`, 1280×800, and
//! `connect-portal.png`, 1280×960; `docs/screenshots/` holds them); they are saved under the
//! browser tests' folder ([`screenshot_dir`]) either way.

use std::path::PathBuf;

use fantoccini::key::Key;
use serde_json::{Value, json};

use crate::harness::{Browser, TestApp, screenshot_dir};

const ACCOUNT: &str = "Acme Maintenance";
const CUSTOMER: &str = "North Plant";
const CREDITS: i32 = 10;
/// Records per entity type of the demo connections: a few, so that a sync takes a moment.
const SCALE: &str = "5";

/// The CSS selector of the element whose `data-testid` is `id`.
fn tid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

/// Waits until `script` (run in the page with `args`) returns something other than null or
/// false, and returns it.
async fn wait_js(browser: &Browser, what: &str, script: &str, args: Vec<Value>) -> Value {
    browser
        .wait_until(what, async || {
            let value = browser.eval(script, args.clone()).await;
            (!matches!(value, Value::Null | Value::Bool(false))).then_some(value)
        })
        .await
}

/// Waits until the text of the first element matching `selector` contains `needle`; returns
/// that text.
async fn wait_text(browser: &Browser, selector: &str, needle: &str) -> String {
    let what = format!("`{selector}` to say {needle:?}");
    let text = wait_js(
        browser,
        &what,
        "const e = document.querySelector(arguments[0]);
         return e && e.textContent.includes(arguments[1]) ? e.textContent : null",
        vec![json!(selector), json!(needle)],
    )
    .await;
    text.as_str().unwrap_or_default().to_owned()
}

/// Waits until the attribute `name` of the first element matching `selector` is `value`.
async fn wait_attr(browser: &Browser, selector: &str, name: &str, value: &str) {
    let what = format!("`{selector}` to have {name}={value:?}");
    wait_js(
        browser,
        &what,
        "const e = document.querySelector(arguments[0]);
         return e !== null && e.getAttribute(arguments[1]) === arguments[2]",
        vec![json!(selector), json!(name), json!(value)],
    )
    .await;
}

/// Whether the first element matching `selector` is on the page with a size (not hidden).
const SHOWN: &str = "const e = document.querySelector(arguments[0]);
    if (e === null) return false;
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'";

async fn wait_shown(browser: &Browser, selector: &str) {
    let what = format!("`{selector}` to be shown");
    wait_js(browser, &what, SHOWN, vec![json!(selector)]).await;
}

async fn wait_not_shown(browser: &Browser, selector: &str) {
    let what = format!("`{selector}` to be hidden");
    wait_js(
        browser,
        &what,
        &format!("return !(() => {{ {SHOWN} }})()"),
        vec![json!(selector)],
    )
    .await;
}

/// Waits until the `<dialog>` whose test id is `id` is open (`true`) or closed.
async fn wait_dialog(browser: &Browser, id: &str, open: bool) {
    let what = format!(
        "the dialog {id} to be {}",
        if open { "open" } else { "closed" }
    );
    wait_js(
        browser,
        &what,
        "const d = document.querySelector(arguments[0]);
         return d !== null && d.open === arguments[1]",
        vec![json!(tid(id)), json!(open)],
    )
    .await;
}

/// The test id of the element that has the keyboard focus (`null` when it has none).
async fn focused(browser: &Browser) -> Value {
    browser
        .eval(
            "return document.activeElement?.dataset?.testid ?? null",
            vec![],
        )
        .await
}

/// Waits until the credits gauge shows `(total, used, available)`.
async fn wait_gauge(browser: &Browser, expected: (i64, i64, i64)) {
    let what = format!("the credits gauge to show (total, used, available) = {expected:?}");
    wait_js(
        browser,
        &what,
        "const n = (id) => Number(document.querySelector(`[data-testid=${id}]`).textContent);
         return n('credits-total') === arguments[0] && n('credits-used') === arguments[1]
             && n('credits-available') === arguments[2]",
        vec![json!(expected.0), json!(expected.1), json!(expected.2)],
    )
    .await;
}

/// Marks the page, so that [`assert_same_page`] can tell that it was never reloaded: what it
/// shows since came live.
async fn mark_page(browser: &Browser) {
    browser.eval("window.notReloaded = true", vec![]).await;
}

async fn assert_same_page(browser: &Browser) {
    let marked = browser
        .eval("return window.notReloaded === true", vec![])
        .await;
    assert_eq!(marked, json!(true), "the page was reloaded");
}

/// Keeps the body of every request the page sends with `fetch` in `window.sentBodies`.
async fn record_requests(browser: &Browser) {
    browser
        .eval(
            "window.sentBodies = [];
             const send = window.fetch;
             window.fetch = (url, options) => {
                 window.sentBodies.push(JSON.parse(options.body));
                 return send(url, options);
             };",
            vec![],
        )
        .await;
}

/// The variables of every recorded request ([`record_requests`]) of the operation `name`.
async fn sent(browser: &Browser, name: &str) -> Vec<Value> {
    let sent = browser
        .eval(
            "return window.sentBodies
                 .filter((b) => b.query.includes(`${arguments[0]}(`))
                 .map((b) => b.variables)",
            vec![json!(name)],
        )
        .await;
    serde_json::from_value(sent).expect("a list of variables")
}

/// The page requested nothing from another origin and logged no error.
async fn assert_clean(browser: &Browser, app: &TestApp) {
    browser.assert_only_origin(&app.url("")).await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the console has errors: {errors:#?}");
}

/// Saves the page's top, 1280 pixels wide and `height` high, as `name` under the browser
/// tests' folder and, when `MILLWRIGHT_SCREENSHOTS` names a folder, there too.
async fn screenshot(browser: &Browser, name: &str, height: u32) {
    browser.viewport(1280, height).await;
    browser.eval("window.scrollTo(0, 0)", vec![]).await;
    let mut paths = vec![screenshot_dir().join(name)];
    if let Some(dir) = std::env::var_os("MILLWRIGHT_SCREENSHOTS").filter(|d| !d.is_empty()) {
        paths.push(PathBuf::from(dir).join(name));
    }
    for path in paths {
        browser.screenshot(&path).await;
    }
}

/// What the page shows of each of `ids` and of its width: a problem for each element that is
/// missing, has no size or lies outside the window, and for a page wider than the window.
async fn fit_problems(browser: &Browser, ids: &[&str]) -> Vec<String> {
    let problems = browser
        .eval(
            "const problems = [];
             const overflow = document.documentElement.scrollWidth - window.innerWidth;
             if (overflow > 0) problems.push(`the page is ${overflow} px wider than the window`);
             for (const id of arguments[0]) {
                 const e = document.querySelector(`[data-testid=\"${id}\"]`);
                 if (e === null) { problems.push(`${id}: missing`); continue; }
                 const r = e.getBoundingClientRect();
                 if (r.width === 0 || r.height === 0) problems.push(`${id}: not shown`);
                 else if (r.left < 0 || r.right > window.innerWidth)
                     problems.push(`${id}: ${r.left}..${r.right} is outside the window's ${window.innerWidth} px`);
             }
             return problems",
            vec![json!(ids)],
        )
        .await;
    serde_json::from_value(problems).expect("a list of problems")
}

/// Signs in to the console with `key` and waits for the live connection.
async fn sign_in(browser: &Browser, app: &TestApp, key: &str) {
    browser.goto(&app.url("/ui/")).await;
    browser.type_into(&tid("signin-key"), key).await;
    browser.click(&tid("signin-submit")).await;
    wait_text(browser, &tid("account-name"), ACCOUNT).await;
    wait_js(
        browser,
        "the live connection",
        "return document.querySelector('[data-testid=live-status]').textContent === 'live'",
        vec![],
    )
    .await;
}

/// Opens the customer whose row lists `name` in the console.
async fn open_customer(browser: &Browser, name: &str) {
    let button = format!("{} button", tid("customer-row"));
    wait_text(browser, &button, name).await;
    browser.click(&button).await;
    wait_text(browser, &tid("customer-name"), name).await;
    wait_shown(browser, &tid("connect-open")).await;
}

/// Fills the demo system's credential inputs: a key, a small scale, no simulated fault.
async fn fill_demo_credentials(browser: &Browser, api_key: &str) {
    browser.type_into(&tid("credential-api_key"), api_key).await;
    browser.type_into(&tid("credential-scale"), SCALE).await;
    browser
        .wait_for_testid("credential-simulate")
        .await
        .select_by_value("none")
        .await
        .expect("choose `none`");
}

/// The demo connection's credentials as the server must receive them from a form.
fn demo_credentials(api_key: &str) -> Value {
    json!({ "api_key": api_key, "scale": SCALE.parse::<i64>().unwrap(), "simulate": "none" })
}

/// What the demo system costs in the cloud.
async fn demo_cost(app: &TestApp, key: &str) -> i64 {
    let data = app
        .ok(
            key,
            "{ system(key: \"demo\") { creditCost(deployment: CLOUD) } }",
            json!({}),
        )
        .await;
    data["system"]["creditCost"].as_i64().unwrap()
}

/// The id of the account's customer named `name`.
async fn customer_id(app: &TestApp, key: &str, name: &str) -> String {
    let data = app
        .ok(
            key,
            "query($s: String) { customers(first: 10, search: $s) { nodes { id name } } }",
            json!({ "s": name }),
        )
        .await;
    let nodes = data["customers"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "one customer named {name}: {nodes:?}");
    nodes[0]["id"].as_str().unwrap().to_owned()
}

/// The customer's connections, oldest first, each with its runs, as the API answers.
async fn connections(app: &TestApp, key: &str, customer: &str) -> Vec<Value> {
    let data = app
        .ok(
            key,
            "query($c: ID!) { customer(id: $c) { connections(first: 10) { nodes {
                id label status creditCost
                syncRuns(first: 10) { nodes { id status recordsAdded recordsUpdated recordsDeleted } }
            } } } }",
            json!({ "c": customer }),
        )
        .await;
    data["customer"]["connections"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

/// The `(data-run-id, data-status)` of each row of the open sync history.
async fn history(browser: &Browser) -> Vec<(String, String)> {
    let rows = browser
        .eval(
            "return [...document.querySelectorAll('[data-testid=sync-run-row]')]
                 .map((row) => [row.dataset.runId, row.dataset.status])",
            vec![],
        )
        .await;
    serde_json::from_value(rows).expect("the history's rows")
}

/// Mints a portal session of `customer` for the demo system: (session id, token).
/// A server with the account `ACCOUNT` (`CREDITS` credits) and its customer `CUSTOMER`:
/// (the server, the account's API key, the customer's id).
async fn acme() -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account(ACCOUNT, CREDITS).await;
    let customer = app.create_customer(&key, CUSTOMER, None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (app, key, customer)
}

async fn portal_session(app: &TestApp, key: &str, customer: &str) -> (String, String) {
    let data = app
        .ok(
            key,
            "mutation($i: CreatePortalSessionInput!) { createPortalSession(input: $i) { id token } }",
            json!({ "i": { "customerId": customer, "allowedSystems": ["demo"] } }),
        )
        .await;
    let session = &data["createPortalSession"];
    (
        session["id"].as_str().unwrap().to_owned(),
        session["token"].as_str().unwrap().to_owned(),
    )
}

/// Opens the portal with `token` and waits for its form.
async fn open_portal(browser: &Browser, app: &TestApp, token: &str) {
    browser
        .goto(&app.url(&format!("/ui/connect#token={token}")))
        .await;
    wait_text(browser, &tid("portal-customer"), CUSTOMER).await;
    wait_shown(browser, &tid("portal-form")).await;
}

#[tokio::test]
async fn the_console_connects_a_demo_system_and_follows_its_syncs_and_credits_live() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account(ACCOUNT, CREDITS).await;
    let cost = demo_cost(&app, &key).await;
    let total = i64::from(CREDITS);

    sign_in(&browser, &app, &key).await;
    wait_gauge(&browser, (total, 0, total)).await;

    // A customer made in the UI, then opened from the list.
    browser
        .type_into(&tid("customer-create-name"), CUSTOMER)
        .await;
    browser
        .type_into(&tid("customer-create-external-id"), "plant-7")
        .await;
    browser.click(&tid("customer-create-submit")).await;
    open_customer(&browser, CUSTOMER).await;
    let customer = customer_id(&app, &key, CUSTOMER).await;
    wait_attr(
        &browser,
        &tid("customer-row"),
        "data-customer-id",
        &customer,
    )
    .await;
    wait_text(&browser, &tid("customer-credits"), "0 credits").await;
    mark_page(&browser).await;
    record_requests(&browser).await;

    // The connect dialog, filled for the demo system in the cloud.
    browser.click(&tid("connect-open")).await;
    wait_dialog(&browser, "connect-dialog", true).await;
    browser
        .wait_for_testid("connect-system")
        .await
        .select_by_value("demo")
        .await
        .expect("choose the demo system");
    browser
        .wait_for_testid("connect-deployment")
        .await
        .select_by_value("CLOUD")
        .await
        .expect("choose the cloud");
    let noun = if cost == 1 { "credit" } else { "credits" };
    wait_text(&browser, &tid("connect-cost"), &format!("{cost} {noun}")).await;
    browser
        .type_into(&tid("connect-label"), "Line 3 CMMS")
        .await;
    fill_demo_credentials(&browser, "demo-console-key").await;
    browser.click(&tid("connect-submit")).await;
    wait_dialog(&browser, "connect-dialog", false).await;
    // The credentials went as the system wants them: the scale a number, not text.
    let connects = sent(&browser, "ConsoleConnect").await;
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(
        connects[0]["input"]["credentials"],
        demo_credentials("demo-console-key")
    );

    // The first sync, queued by connect, followed until it succeeds; the credits move.
    let card = tid("connection-row");
    wait_attr(&browser, &card, "data-status", "ONLINE").await;
    let last_sync = format!(
        "{} .badge[data-status=\"SUCCEEDED\"]",
        tid("connection-last-sync")
    );
    wait_shown(&browser, &last_sync).await;
    wait_gauge(&browser, (total, cost, total - cost)).await;
    wait_text(
        &browser,
        &tid("customer-credits"),
        &format!("{cost} {noun}"),
    )
    .await;
    let made = connections(&app, &key, &customer).await;
    assert_eq!(made.len(), 1, "{made:?}");
    let connection = made[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(made[0]["label"], "Line 3 CMMS");
    assert_eq!(made[0]["creditCost"], cost);
    wait_attr(&browser, &card, "data-connection-id", &connection).await;
    let first = &made[0]["syncRuns"]["nodes"][0];
    assert_eq!(first["status"], "SUCCEEDED", "{made:?}");
    let first_run = first["id"].as_str().unwrap().to_owned();
    let added = first["recordsAdded"].as_i64().unwrap();
    assert!(added > 0, "the first sync added nothing: {first}");
    wait_text(
        &browser,
        &tid("connection-last-sync"),
        &format!("{added} added, 0 updated, 0 deleted"),
    )
    .await;

    // The sync history, open: the first run; a sync started from the card joins it live.
    browser.click(&tid("connection-history-toggle")).await;
    wait_attr(
        &browser,
        &tid("connection-history-toggle"),
        "aria-expanded",
        "true",
    )
    .await;
    browser
        .wait_until("the history's first run", async || {
            let rows = history(&browser).await;
            (rows == [(first_run.clone(), "SUCCEEDED".to_owned())]).then_some(())
        })
        .await;
    browser.click(&tid("connection-sync")).await;
    let rows = browser
        .wait_until("a second run in the history, succeeded", async || {
            let rows = history(&browser).await;
            (rows.len() == 2 && rows[1].1 == "SUCCEEDED").then_some(rows)
        })
        .await;
    let runs = connections(&app, &key, &customer).await[0]["syncRuns"]["nodes"].clone();
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [rows[0].0.as_str(), rows[1].0.as_str()], "{runs}");
    assert_eq!(rows[0].0, first_run);
    assert_same_page(&browser).await;

    // The documentation's picture: the customer, its connection, its history, the gauge. The
    // token notice (shown once) is put away first, and the latest run's table opened.
    browser
        .click(&format!("{} button", tid("connection-token")))
        .await;
    wait_not_shown(&browser, &tid("connection-token")).await;
    browser
        .click("[data-testid=sync-run-row]:last-child summary")
        .await;
    wait_shown(
        &browser,
        "[data-testid=sync-run-row]:last-child [data-testid=sync-run-entities]",
    )
    .await;
    screenshot(&browser, "console.png", 800).await;

    // Disconnected after the confirmation: the card says so and the credits come back.
    browser.click(&tid("connection-disconnect")).await;
    wait_dialog(&browser, "confirm-dialog", true).await;
    browser.click(&tid("confirm-accept")).await;
    wait_attr(&browser, &card, "data-status", "DISCONNECTED").await;
    wait_gauge(&browser, (total, 0, total)).await;
    wait_text(&browser, &tid("customer-credits"), "0 credits").await;
    wait_not_shown(&browser, &tid("connection-disconnect")).await;
    let after = connections(&app, &key, &customer).await;
    assert_eq!(after[0]["status"], "DISCONNECTED", "{after:?}");
    assert_same_page(&browser).await;
    assert_clean(&browser, &app).await;
    browser.close().await;
}

#[tokio::test]
async fn the_portal_connects_a_demo_system_watches_its_first_sync_and_disconnects_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (app, key, customer) = acme().await;
    let (_, token) = portal_session(&app, &key, &customer).await;

    open_portal(&browser, &app, &token).await;
    // The token is read from the fragment and taken out of the address bar (and history).
    let url = browser.eval("return location.href", vec![]).await;
    let url = url.as_str().unwrap();
    assert!(
        !url.contains("mwp_") && !url.contains('#'),
        "the token is still in the address bar: {url}"
    );
    mark_page(&browser).await;
    record_requests(&browser).await;

    // The session allows the demo system only: it is the one offered.
    let offered = browser
        .eval(
            "return [...document.querySelectorAll('input[name=systemKey]')].map((i) => i.value)",
            vec![],
        )
        .await;
    assert_eq!(offered, json!(["demo"]));
    browser.click(&tid("system-option-demo")).await;
    wait_shown(&browser, &tid("credential-api_key")).await;
    browser.type_into(&tid("portal-label"), "Plant CMMS").await;
    fill_demo_credentials(&browser, "demo-portal-key").await;
    browser.click(&tid("portal-connect-submit")).await;

    // The first sync, followed until it succeeds; the new connection in the list.
    wait_shown(&browser, &tid("portal-first-sync")).await;
    wait_attr(
        &browser,
        &tid("portal-first-sync-status"),
        "data-status",
        "SUCCEEDED",
    )
    .await;
    let connects = sent(&browser, "PortalConnect").await;
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(
        connects[0]["input"]["credentials"],
        demo_credentials("demo-portal-key")
    );
    let made = connections(&app, &key, &customer).await;
    assert_eq!(made.len(), 1, "{made:?}");
    let connection = made[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(made[0]["label"], "Plant CMMS");
    let first = &made[0]["syncRuns"]["nodes"][0];
    assert_eq!(first["status"], "SUCCEEDED", "{made:?}");
    wait_text(
        &browser,
        &tid("portal-first-sync-counts"),
        &format!("{} records added", first["recordsAdded"]),
    )
    .await;
    let row = tid("portal-connection-row");
    wait_attr(&browser, &row, "data-connection-id", &connection).await;
    wait_attr(&browser, &row, "data-status", "ONLINE").await;
    wait_text(&browser, &row, "Plant CMMS").await;
    assert_same_page(&browser).await;
    // Taller than the console's: the first sync is under the form, which a 800-pixel page
    // cuts in the middle.
    screenshot(&browser, "connect-portal.png", 960).await;

    // Disconnected after the confirmation.
    browser.click(&tid("portal-disconnect")).await;
    wait_dialog(&browser, "confirm-dialog", true).await;
    browser.click(&tid("confirm-accept")).await;
    wait_attr(&browser, &row, "data-status", "DISCONNECTED").await;
    wait_not_shown(&browser, &tid("portal-disconnect")).await;
    let after = connections(&app, &key, &customer).await;
    assert_eq!(after[0]["status"], "DISCONNECTED", "{after:?}");
    assert_same_page(&browser).await;
    assert_clean(&browser, &app).await;
    browser.close().await;
}

#[tokio::test]
async fn a_portal_session_revoked_while_its_page_is_open_ends_the_page() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (app, key, customer) = acme().await;
    let (session, token) = portal_session(&app, &key, &customer).await;
    open_portal(&browser, &app, &token).await;
    wait_not_shown(&browser, &tid("portal-error")).await;
    mark_page(&browser).await;

    app.ok(
        &key,
        "mutation($id: ID!) { revokePortalSession(id: $id) { revokedAt } }",
        json!({ "id": session }),
    )
    .await;
    // The server closes the page's socket (4403): the page says the link no longer works and
    // offers nothing else.
    wait_shown(&browser, &tid("portal-error")).await;
    wait_text(&browser, &tid("portal-error"), "no longer works").await;
    wait_text(&browser, &tid("portal-error"), "UNAUTHENTICATED").await;
    wait_not_shown(&browser, &tid("portal-form")).await;
    wait_not_shown(&browser, &tid("portal-connection-list")).await;
    assert_same_page(&browser).await;
    // A reload does not bring the session back: the page forgot the token.
    browser.goto(&app.url("/ui/connect")).await;
    wait_shown(&browser, &tid("portal-error")).await;
    wait_not_shown(&browser, &tid("portal-form")).await;
    assert_clean(&browser, &app).await;
    browser.close().await;
}

#[tokio::test]
async fn the_console_and_the_portal_fit_a_phone() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (app, key, customer) = acme().await;
    crate::harness::connect(
        &app,
        &key,
        json!({ "customerId": customer, "systemKey": "demo", "label": "Line 3 CMMS",
                "credentials": demo_credentials("demo-phone-key") }),
    )
    .await;
    browser.phone().await;

    sign_in(&browser, &app, &key).await;
    open_customer(&browser, CUSTOMER).await;
    wait_shown(&browser, &tid("connection-row")).await;
    browser.click(&tid("connection-history-toggle")).await;
    wait_shown(&browser, "[data-testid=sync-run-row] summary").await;
    browser.click("[data-testid=sync-run-row] summary").await;
    wait_shown(&browser, &tid("sync-run-entities")).await;
    let inner = browser.eval("return window.innerWidth", vec![]).await;
    assert_eq!(inner, json!(390), "not a phone's width");
    browser
        .screenshot(&screenshot_dir().join("console-phone.png"))
        .await;
    let problems = fit_problems(
        &browser,
        &[
            "signout",
            "nav-customers",
            "nav-webhooks",
            "nav-events",
            "credits-gauge",
            "customer-create-name",
            "customer-create-submit",
            "customer-search",
            "customer-row",
            "customer-name",
            "connect-open",
            "connection-row",
            "connection-status",
            "connection-history-toggle",
            "connection-sync",
            "connection-disconnect",
            "sync-history",
        ],
    )
    .await;
    assert!(
        problems.is_empty(),
        "the console at a phone's width: {problems:#?}"
    );

    browser.click(&tid("connect-open")).await;
    wait_dialog(&browser, "connect-dialog", true).await;
    wait_shown(&browser, &tid("credential-api_key")).await;
    browser
        .screenshot(&screenshot_dir().join("connect-dialog-phone.png"))
        .await;
    let problems = fit_problems(
        &browser,
        &[
            "connect-dialog",
            "connect-system",
            "connect-deployment",
            "credential-api_key",
            "credential-scale",
            "credential-simulate",
        ],
    )
    .await;
    assert!(
        problems.is_empty(),
        "the connect dialog at a phone's width: {problems:#?}"
    );
    browser.click(&tid("connect-cancel")).await;
    wait_dialog(&browser, "connect-dialog", false).await;
    assert_clean(&browser, &app).await;

    let (_, token) = portal_session(&app, &key, &customer).await;
    open_portal(&browser, &app, &token).await;
    wait_shown(&browser, &tid("portal-connection-row")).await;
    wait_shown(&browser, &tid("credential-api_key")).await;
    browser
        .screenshot(&screenshot_dir().join("connect-portal-phone.png"))
        .await;
    let problems = fit_problems(
        &browser,
        &[
            "portal-customer",
            "portal-expires",
            "portal-system-picker",
            "system-option-demo",
            "portal-label",
            "credential-api_key",
            "credential-scale",
            "credential-simulate",
            "portal-connect-submit",
            "portal-connection-row",
            "portal-connection-status",
            "portal-disconnect",
        ],
    )
    .await;
    assert!(
        problems.is_empty(),
        "the portal at a phone's width: {problems:#?}"
    );
    assert_clean(&browser, &app).await;
    browser.close().await;
}

#[tokio::test]
async fn the_connect_dialog_works_with_the_keyboard_alone() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (app, key, customer) = acme().await;
    sign_in(&browser, &app, &key).await;
    open_customer(&browser, CUSTOMER).await;

    // From the customer's row, Tab reaches the button that opens the dialog.
    let mut presses = 0;
    while focused(&browser).await != json!("connect-open") {
        presses += 1;
        assert!(presses <= 20, "Tab never reached the connect button");
        browser.press_key(Key::Tab).await;
    }
    browser.press_key(Key::Enter).await;
    wait_dialog(&browser, "connect-dialog", true).await;
    wait_shown(&browser, &tid("credential-api_key")).await;
    assert_eq!(focused(&browser).await, json!("connect-system"));

    // Tab moves through the fields in order; keys fill them.
    let order = [
        "connect-deployment",
        "connect-label",
        "credential-api_key",
        "credential-scale",
        "credential-simulate",
        "connect-interval",
        "connect-validate",
        "connect-cancel",
        "connect-submit",
    ];
    for id in order {
        browser.press_key(Key::Tab).await;
        assert_eq!(focused(&browser).await, json!(id), "Tab's next stop");
        match id {
            "connect-label" => browser.press("Keyboard line").await,
            "credential-api_key" => browser.press("demo-keyboard-key").await,
            "credential-scale" => browser.press(SCALE).await,
            // A select takes the first letters of its option.
            "credential-simulate" => browser.press("none").await,
            _ => {}
        }
    }
    let values = browser
        .eval(
            "return ['connect-label', 'credential-api_key', 'credential-scale', 'credential-simulate']
                 .map((id) => document.querySelector(`[data-testid=${id}]`).value)",
            vec![],
        )
        .await;
    assert_eq!(
        values,
        json!(["Keyboard line", "demo-keyboard-key", SCALE, "none"])
    );
    // Focus stays in the dialog: past its last control to its first, and back.
    browser.press_key(Key::Tab).await;
    assert_eq!(focused(&browser).await, json!("connect-system"));
    browser.press_shifted(Key::Tab).await;
    assert_eq!(focused(&browser).await, json!("connect-submit"));

    // Escape closes it, connecting nothing; focus is back on the button that opened it.
    browser.press_key(Key::Escape).await;
    wait_dialog(&browser, "connect-dialog", false).await;
    assert_eq!(focused(&browser).await, json!("connect-open"));
    assert!(connections(&app, &key, &customer).await.is_empty());

    // Opened again with Enter, filled, and sent with Enter from a field: connected.
    browser.press_key(Key::Enter).await;
    wait_dialog(&browser, "connect-dialog", true).await;
    for _ in 0..3 {
        browser.press_key(Key::Tab).await;
    }
    assert_eq!(focused(&browser).await, json!("credential-api_key"));
    browser.press("demo-keyboard-key").await;
    browser.press_key(Key::Tab).await;
    browser.press(SCALE).await;
    browser.press_key(Key::Enter).await;
    wait_dialog(&browser, "connect-dialog", false).await;
    wait_shown(&browser, &tid("connection-row")).await;
    assert_eq!(focused(&browser).await, json!("connect-open"));
    let made = connections(&app, &key, &customer).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_clean(&browser, &app).await;
    browser.close().await;
}

/// How an input of the form stands: its element, type, bounds, whether it is required, its
/// options (a select's values).
const DESCRIBE: &str = "const e = document.querySelector(arguments[0]);
    if (e === null) return null;
    return {
        tag: e.tagName.toLowerCase(),
        type: e.tagName === 'INPUT' ? e.type : null,
        min: e.getAttribute('min'),
        max: e.getAttribute('max'),
        required: e.required,
        options: e.tagName === 'SELECT' ? [...e.options].map((o) => o.value) : null,
    }";

/// What the input of `field` (a `CredentialField`) must be.
fn expected_input(field: &Value) -> Value {
    let required = field["required"].as_bool().unwrap();
    let bound = |name: &str| field[name].as_i64().map(|n| n.to_string());
    match field["kind"].as_str().unwrap() {
        "TEXT" => {
            let secret = field["secret"].as_bool().unwrap();
            json!({ "tag": "input", "type": if secret { "password" } else { "text" },
                    "min": null, "max": null, "required": required, "options": null })
        }
        "INTEGER" => json!({ "tag": "input", "type": "number", "min": bound("min"),
                             "max": bound("max"), "required": required, "options": null }),
        "ONE_OF" => {
            let mut options = vec![json!("")];
            options.extend(field["choices"].as_array().unwrap().iter().cloned());
            json!({ "tag": "select", "type": null, "min": null, "max": null,
                    "required": required, "options": options })
        }
        "OBJECT" => json!({ "tag": "textarea", "type": null, "min": null, "max": null,
                            "required": required, "options": null }),
        other => panic!("a kind this test does not know: {other}"),
    }
}

#[tokio::test]
async fn the_credentials_form_offers_each_kind_of_field_its_input() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (app, key, customer) = acme().await;
    let systems = app
        .ok(
            &key,
            "{ systems { key credentialFields { name secret required kind min max choices } } }",
            json!({}),
        )
        .await["systems"]
        .clone();
    sign_in(&browser, &app, &key).await;
    open_customer(&browser, CUSTOMER).await;
    browser.click(&tid("connect-open")).await;
    wait_dialog(&browser, "connect-dialog", true).await;

    // Every system of the catalog, every field: the input its kind calls for.
    let mut kinds = std::collections::BTreeSet::new();
    for system in systems.as_array().unwrap() {
        let system_key = system["key"].as_str().unwrap();
        browser
            .wait_for_testid("connect-system")
            .await
            .select_by_value(system_key)
            .await
            .unwrap_or_else(|err| panic!("choosing {system_key}: {err}"));
        for field in system["credentialFields"].as_array().unwrap() {
            let selector = tid(&format!("credential-{}", field["name"].as_str().unwrap()));
            let what = format!("{system_key}'s input {selector}");
            let input = wait_js(&browser, &what, DESCRIBE, vec![json!(selector)]).await;
            assert_eq!(input, expected_input(field), "{system_key}: {field}");
            kinds.insert(field["kind"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["INTEGER", "OBJECT", "ONE_OF", "TEXT"],
        "the catalog no longer has every kind of field: this test would not see them all"
    );

    // SAP ECC's `services` is a JSON object: text that is not one is refused under it, and
    // nothing is sent.
    browser
        .wait_for_testid("connect-system")
        .await
        .select_by_value("sap_ecc")
        .await
        .expect("choose SAP ECC");
    browser
        .type_into(&tid("credential-base_url"), "https://127.0.0.1:9")
        .await;
    browser
        .wait_for_testid("credential-auth")
        .await
        .select_by_value("basic")
        .await
        .expect("choose basic authentication");
    browser
        .type_into(&tid("credential-username"), "maint")
        .await;
    browser
        .type_into(&tid("credential-password"), "secret")
        .await;
    record_requests(&browser).await;
    let services = tid("credential-services");
    let error = tid("credential-services-error");
    for (typed, says) in [
        (r#"{"asset": "#, "Not valid JSON"),
        (r#"["asset"]"#, "Must be a JSON object"),
    ] {
        browser.replace_text(&services, typed).await;
        browser.click(&tid("connect-submit")).await;
        wait_shown(&browser, &error).await;
        wait_text(&browser, &error, says).await;
        wait_attr(&browser, &services, "aria-invalid", "true").await;
        assert_eq!(focused(&browser).await, json!("credential-services"));
        assert!(sent(&browser, "ConsoleConnect").await.is_empty());
    }
    // An object goes as one: the message goes away and the server answers the request.
    browser
        .replace_text(&services, r#"{"asset": {"entity_set": "Equipments"}}"#)
        .await;
    wait_not_shown(&browser, &error).await;
    browser.click(&tid("connect-submit")).await;
    let answered = tid("connect-error");
    wait_shown(&browser, &answered).await;
    let connects = sent(&browser, "ConsoleConnect").await;
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(
        connects[0]["input"]["credentials"]["services"],
        json!({ "asset": { "entity_set": "Equipments" } })
    );
    // The loopback address is refused by the server, which names the field it refused.
    wait_attr(&browser, &answered, "data-code", "BAD_USER_INPUT").await;
    let said = wait_text(&browser, &answered, "base_url").await;
    assert!(!said.contains("services"), "{said}");
    wait_dialog(&browser, "connect-dialog", true).await;
    assert!(connections(&app, &key, &customer).await.is_empty());
    assert_clean(&browser, &app).await;
    browser.close().await;
}
