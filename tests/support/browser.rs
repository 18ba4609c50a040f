//! A real headless Chromium driven over WebDriver: Debian's `chromedriver` (installed with
//! `chromium` by `tests/run.sh`) started on a free port for one test, with its own
//! throwaway profile, and stopped with it. The client is fantoccini.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::time::{Duration, Instant};

/// How long a test waits for the page to show something (the router answers in
/// milliseconds; CI machines are loaded).
pub const PAGE_WAIT: Duration = Duration::from_secs(15);

pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// `$CHROMEDRIVER`, or `chromedriver` on the PATH.
fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

impl Browser {
    /// A fresh browser with a window of `width` × `height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = tokio::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver (run `bash tests/run.sh`, which installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PAGE_WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({ "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ]});
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session in headless Chromium");
        Browser { client, driver, _profile: profile }
    }

    /// Ends the session and stops chromedriver (and with it Chromium).
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }

    /// Waits for an element matching `css` and returns it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page within {PAGE_WAIT:?}: {e}"))
    }

    /// Waits until nothing matches `css`.
    pub async fn gone(&self, css: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        while !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "`{css}` still on the page after {PAGE_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the text of `css` contains `text`.
    pub async fn text_contains(&self, css: &str, text: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let now = self.find(css).await.text().await.unwrap_or_default();
            if now.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "`{css}` says {now:?}, not {text:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css`. The page may draw it again between finding and
    /// clicking it (a list reloading on a stats frame makes the element found stale): then
    /// it is found again.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "click `{css}`: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the value of the input or textarea `css` with `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// Shows one of the dashboard's pages (`#tail`, `#dead-letters`, ...).
    pub async fn page(&self, base: &str, page: &str) {
        self.client.goto(&format!("{base}/ui#{page}")).await.unwrap();
        self.find(&format!("#page-{page}:not([hidden])")).await;
    }

    /// Opens the dashboard at `base` and signs in with `token`; returns once it is live.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.client.goto(&format!("{base}/ui")).await.unwrap();
        self.type_into("#token", token).await;
        self.click("#login-form button").await;
        self.text_contains("#live", "live").await;
    }
}
