//! Headless Chromium, driven over WebDriver, for tests that use the server's pages as a
//! person's browser does: chromedriver runs as a child process on a free port, with a fresh
//! profile, and [`Browser`]'s helpers wait with deadlines and say what the page showed when
//! they give up.
//!
//! Browser tests need Debian's `chromium` and `chromium-driver` packages. Without them a
//! browser test fails saying how to install them, unless `MILLWRIGHT_BROWSER_TESTS=skip` is
//! set: then every browser test returns at once, saying it skipped.

use std::{
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{
    Client, ClientBuilder, Locator,
    actions::{InputSource as _, KeyAction, KeyActions},
    elements::Element,
    key::Key,
};
use serde_json::{Value, json};

/// How long [`Browser::wait_for`] and the other waits look before they give up.
pub const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// A desktop's window, which a session starts with, and a phone's ([`Browser::phone`]).
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

const INSTALL: &str = "browser tests need Chromium and its WebDriver: install Debian's packages \
     with `apt-get install -y chromium chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver), \
     or set MILLWRIGHT_BROWSER_TESTS=skip to skip the browser tests";

/// Chromium's flags. Without the background-networking ones Chromium keeps reaching out to
/// Google's services, which a machine without that network refuses, to no purpose in a test.
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Where browser tests leave screenshots: under Cargo's temporary folder for tests, kept
/// after the run for a person to look at.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser")
}

/// Writes a line to the real standard error: a test's `eprintln!` is captured and shown only
/// when it fails, and a skip must be seen.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The file `name` in the `PATH`.
fn in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// chromedriver, with Chromium under it; both are killed when this is dropped.
struct Driver {
    child: Child,
    port: u16,
    /// Chromium's profile and chromedriver's log.
    dir: tempfile::TempDir,
}

impl Driver {
    fn start(chromedriver: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the browser");
        // A port the system just handed out and let go: free, barring a race with another
        // process taking it in between.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, which Chromium joins: dropping this ends them all, even
            // when a failing test never closed its session.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}; {INSTALL}", chromedriver.display()));
        Driver { child, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// Waits until chromedriver says it is ready.
    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let end = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited at start ({status}):\n{}", self.log());
            }
            let ready = match http.get(format!("{}/status", self.url())).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|body| body["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return;
            }
            assert!(
                Instant::now() < end,
                "chromedriver was not ready within {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session.
pub struct Browser {
    client: Client,
    // Ends chromedriver and Chromium when dropped: a failed test never reaches `close`.
    driver: Driver,
}

impl Browser {
    /// Chromium in a fresh profile with a 1280×900 window; `None`, after saying so, when
    /// `MILLWRIGHT_BROWSER_TESTS=skip`. Panics saying how to install Chromium when it or
    /// chromedriver is missing.
    pub async fn start() -> Option<Self> {
        if std::env::var("MILLWRIGHT_BROWSER_TESTS").is_ok_and(|v| v == "skip") {
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            say(&format!(
                "{test}: browser test skipped (MILLWRIGHT_BROWSER_TESTS=skip)"
            ));
            return None;
        }
        let chromium = in_path("chromium").unwrap_or_else(|| panic!("no chromium: {INSTALL}"));
        let chromedriver =
            in_path("chromedriver").unwrap_or_else(|| panic!("no chromedriver: {INSTALL}"));
        let mut driver = Driver::start(&chromedriver);
        driver.wait_ready().await;
        let profile = driver.dir.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            // The console's messages, for [`Browser::console_errors`].
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "no Chromium session ({err}); {INSTALL}\nchromedriver's log:\n{}",
                    driver.log()
                )
            });
        let browser = Browser { client, driver };
        browser.resize(DESKTOP).await;
        Some(browser)
    }

    async fn resize(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
    }

    /// A window whose page area is `width`×`height`, the size of its screenshots: the
    /// window is made larger by what its frame takes (headless Chromium keeps room for one).
    pub async fn viewport(&self, width: u32, height: u32) {
        self.resize((width, height)).await;
        let inner = self
            .eval("return [window.innerWidth, window.innerHeight]", vec![])
            .await;
        let inner: (u32, u32) = serde_json::from_value(inner).expect("the page's size");
        self.resize((2 * width - inner.0, 2 * height - inner.1))
            .await;
    }

    /// A phone's window, 390×844.
    pub async fn phone(&self) {
        self.resize(PHONE).await;
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("opening {url}: {err}"));
    }

    /// Runs `script` in the page (its arguments are `arguments[0]`, …) and returns what it
    /// returns.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("running {script}: {err}"))
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.client
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The first element matching the CSS `selector`, once there is one.
    pub async fn wait_for(&self, selector: &str) -> Element {
        let what = format!("an element matching `{selector}`");
        self.wait_until(&what, async || {
            self.client.find(Locator::Css(selector)).await.ok()
        })
        .await
    }

    /// The element whose `data-testid` is `id`, once there is one.
    pub async fn wait_for_testid(&self, id: &str) -> Element {
        self.wait_for(&format!("[data-testid=\"{id}\"]")).await
    }

    /// Waits until `probe` yields a value, looking every 100 ms; after [`DEADLINE`] panics
    /// naming `what`, with the page's URL, its text, the console's errors and a screenshot.
    pub async fn wait_until<T>(&self, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if Instant::now() >= end {
                self.give_up(what).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn give_up(&self, what: &str) -> ! {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let name: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(60)
            .collect();
        let shot = screenshot_dir().join(format!("failed-{name}.png"));
        let saved = match self.client.screenshot().await {
            Ok(png) => std::fs::create_dir_all(screenshot_dir())
                .and_then(|()| std::fs::write(&shot, png))
                .map(|()| shot.display().to_string())
                .unwrap_or_else(|err| format!("not saved: {err}")),
            Err(err) => format!("not taken: {err}"),
        };
        panic!(
            "waited {DEADLINE:?} for {what} in vain at {url}\n\
             screenshot: {saved}\nconsole errors: {:#?}\npage text:\n{}",
            self.console_errors().await,
            self.text().await,
        );
    }

    /// Clicks the first element matching `selector`, once there is one. A live page may
    /// render the element anew between finding and clicking it (a stale reference): it is
    /// found again.
    pub async fn click(&self, selector: &str) {
        let started = Instant::now();
        loop {
            let element = self.wait_for(selector).await;
            match element.click().await {
                Ok(()) => return,
                Err(err)
                    if err.to_string().contains("stale element")
                        && started.elapsed() < DEADLINE =>
                {
                    tokio::time::sleep(POLL).await;
                }
                Err(err) => panic!("clicking `{selector}`: {err}"),
            }
        }
    }

    /// Types `text` into the first element matching `selector`, key by key, as a person does.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let element = self.wait_for(selector).await;
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("typing into `{selector}`: {err}"));
    }

    /// Replaces what the first element matching `selector` holds with `text`: selects it all
    /// (Ctrl+A) and types over it.
    pub async fn replace_text(&self, selector: &str, text: &str) {
        let select_all = format!("{}a{}", Key::Control, Key::Null);
        self.type_into(selector, &format!("{select_all}{text}"))
            .await;
    }

    /// Presses `keys` one after the other on whatever has the focus, as a keyboard does:
    /// text, and [`Key`]s such as `Key::Tab` (as chars). Unlike [`Browser::type_into`] it
    /// focuses nothing first, so a test can move through a page with the keyboard alone.
    pub async fn press(&self, keys: &str) {
        let mut actions = KeyActions::new("keyboard".to_owned());
        for key in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|err| panic!("pressing {keys:?}: {err}"));
    }

    /// Presses one [`Key`] (Tab, Enter, Escape, …) on whatever has the focus.
    pub async fn press_key(&self, key: Key) {
        self.press(&char::from(key).to_string()).await;
    }

    /// Presses Shift+`key` on whatever has the focus (Shift+Tab moves the focus back).
    pub async fn press_shifted(&self, key: Key) {
        let shift = char::from(Key::Shift);
        let key = char::from(key);
        let actions = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: shift })
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key })
            .then(KeyAction::Up { value: shift });
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|err| panic!("pressing Shift+{key:?}: {err}"));
    }

    /// Saves what the window shows as a PNG at `path` (its folder is made).
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot's folder");
        }
        std::fs::write(path, png).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    }

    /// The document's URL and every resource the page has requested so far (its scripts,
    /// styles, images and fetches, from the Resource Timing API). WebSockets are not in it.
    pub async fn requested_urls(&self) -> Vec<String> {
        let urls = self
            .eval(
                "return [document.URL].concat(
                    performance.getEntriesByType('resource').map(e => e.name))",
                vec![],
            )
            .await;
        serde_json::from_value(urls).expect("a list of URLs")
    }

    /// Panics naming every request of the page ([`Browser::requested_urls`]) to another
    /// origin than `origin` (`http://host:port`).
    pub async fn assert_only_origin(&self, origin: &str) {
        let urls = self.requested_urls().await;
        let prefix = format!("{}/", origin.trim_end_matches('/'));
        let elsewhere: Vec<&String> = urls
            .iter()
            .filter(|url| !url.starts_with(&prefix) && !url.starts_with("data:"))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "the page made requests to origins other than {origin}: {elsewhere:#?}"
        );
    }

    /// The messages of level SEVERE the browser logged since the last call: `console.error`,
    /// uncaught exceptions, failed loads (an integrity mismatch, a request refused by the
    /// Content-Security-Policy, a 404).
    pub async fn console_errors(&self) -> Vec<String> {
        let Ok(Some(session)) = self.client.session_id().await else {
            return vec!["(no session)".to_owned()];
        };
        let url = format!("{}/session/{session}/se/log", self.driver.url());
        let log = reqwest::Client::new()
            .post(url)
            .json(&json!({ "type": "browser" }))
            .send()
            .await;
        let entries = match log {
            Ok(response) => response.json::<Value>().await.unwrap_or(Value::Null),
            Err(err) => return vec![format!("(the browser's log could not be read: {err})")],
        };
        entries["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Ends the session, and with it Chromium.
    pub async fn close(self) {
        let Browser { client, driver } = self;
        let _ = client.close().await;
        drop(driver);
    }
}
