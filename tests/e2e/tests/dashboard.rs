//! The dashboard in a real headless Chromium, driven over the W3C WebDriver
//! protocol (chromedriver) with plain HTTP: seeded ledger → the figures the
//! page shows equal the API's → a filter changes the URL and the figures →
//! CSV export → a tenant token sees only its tenant. Screenshots go to
//! tests/output/dashboard/.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`./dev` installs them);
//! without them this test fails, it never passes silently.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{
    free_port, fresh_database, repo_root, start_collector, BoxError, Proc, ADMIN_TOKEN,
    INGEST_TOKEN,
};
use futures_util::FutureExt;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_chromedriver() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMEDRIVER") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A WebDriver session over chromedriver's HTTP API.
struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: Proc,
    _profile: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    async fn start(log_dir: &Path) -> Result<Browser, BoxError> {
        let driver_bin = find_chromedriver().ok_or(
            "chromedriver not found: install Debian's chromium and chromium-driver \
             (apt-get install -y chromium chromium-driver; ./dev does it)",
        )?;
        if !Path::new(CHROMIUM).exists() {
            return Err(format!(
                "{CHROMIUM} not found: apt-get install -y chromium chromium-driver"
            )
            .into());
        }
        let port = free_port();
        let driver = Proc::spawn(
            "chromedriver",
            Command::new(&driver_bin).arg(format!("--port={port}")),
            log_dir,
        )?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{root}/status"))
                .send()
                .await
                .ok()
                .and_then(|r| r.status().is_success().then_some(()));
            if ready.is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("chromedriver did not start:\n{}", driver.log_text()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let profile =
            std::env::temp_dir().join(format!("dash-chromium-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&profile)?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--window-size=1440,1600",
                    format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let r: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let id = r["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no WebDriver session: {r}\n{}", driver.log_text()))?
            .to_string();
        Ok(Browser {
            http,
            base: format!("{root}/session/{id}"),
            _driver: driver,
            _profile: TempDir(profile),
        })
    }

    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BoxError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            return Err(format!("WebDriver {path}: {status} {v}").into());
        }
        Ok(v["value"].clone())
    }

    async fn goto(&self, url: &str) -> Result<(), BoxError> {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(|_| ())
    }

    async fn url(&self) -> Result<String, BoxError> {
        Ok(self
            .cmd(reqwest::Method::GET, "/url", None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    async fn js(&self, script: &str) -> Result<Value, BoxError> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn find(&self, css: &str) -> Result<String, BoxError> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(v[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| format!("no element {css}: {v}"))?
            .to_string())
    }

    async fn click(&self, css: &str) -> Result<(), BoxError> {
        let id = self.find(css).await?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await
        .map(|_| ())
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<(), BoxError> {
        let id = self.find(css).await?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await
        .map(|_| ())
    }

    async fn screenshot(&self, file: &Path) -> Result<(), BoxError> {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await?;
        let png = base64_decode(b64.as_str().ok_or("screenshot is not a string")?)?;
        if !png.starts_with(b"\x89PNG") {
            return Err("screenshot is not a PNG".into());
        }
        std::fs::write(file, png)?;
        Ok(())
    }

    /// Waits until the page finished a refresh newer than `after`.
    async fn wait_ready(&self, after: u64) -> Result<u64, BoxError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self
                .js("return [document.body.dataset.state, document.body.dataset.generation, (document.getElementById('error')||{}).textContent];")
                .await?;
            let gen: u64 = v[1].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            if v[0] == "ready" && gen > after {
                return Ok(gen);
            }
            if Instant::now() > deadline {
                return Err(format!("dashboard not ready after 30 s: {v}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn generation(&self) -> Result<u64, BoxError> {
        Ok(self
            .js("return document.body.dataset.generation;")
            .await?
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    async fn close(&self) {
        let _ = self.cmd(reqwest::Method::DELETE, "", None).await;
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return Err(format!("bad base64 byte {c}").into()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn iso(ms: i64) -> String {
    // Whole hours, UTC, RFC 3339 (no chrono in this crate).
    let secs = ms / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:00:00Z", rem / 3600)
}

#[allow(clippy::too_many_arguments)]
fn rec(
    id: &str,
    tenant: &str,
    key: &str,
    provider: &str,
    model: &str,
    at: i64,
    status: u16,
    input: u64,
    cached: u64,
    output: u64,
) -> Value {
    json!({"request_id": id, "tenant_id": tenant, "api_key_id": key, "provider": provider,
        "model": model, "http_status": status, "streamed": false, "started_at_ms": at,
        "input_tokens": input, "cache_read_tokens": cached, "output_tokens": output})
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str, token: &str) -> Result<Value, BoxError> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status} {v}").into());
        }
        Ok(v)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Result<Value, BoxError> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {v}").into());
        }
        Ok(v)
    }

    async fn total(&self, query: &str, token: &str) -> Result<Value, BoxError> {
        let v = self
            .get(&format!("/v1/summary?group_by=total&{query}"), token)
            .await?;
        Ok(v["groups"][0].clone())
    }
}

async fn kpis(b: &Browser) -> Result<Value, BoxError> {
    b.js("const o = {}; for (const e of document.querySelectorAll('#kpis .v')) o[e.id] = e.dataset.value; o.text = document.getElementById('kpi-spend').textContent; return o;")
        .await
}

/// Asserts every KPI card equals the API's total for the same query.
fn assert_kpis_match(k: &Value, t: &Value) {
    assert_eq!(k["kpi-spend"], t["cost"], "spend: page {k} api {t}");
    for (id, field) in [
        ("kpi-requests", "requests"),
        ("kpi-input-tokens", "input_tokens"),
        ("kpi-output-tokens", "output_tokens"),
        ("kpi-cached-tokens", "cache_read_tokens"),
        ("kpi-unpriced", "unpriced_requests"),
    ] {
        assert_eq!(
            k[id].as_str().unwrap_or(""),
            t[field].to_string(),
            "{id}: page {k} api {t}"
        );
    }
    let requests = t["requests"].as_f64().unwrap();
    let priced = requests - t["unpriced_requests"].as_f64().unwrap();
    let cost: f64 = t["cost"].as_str().unwrap().parse().unwrap();
    let avg: f64 = k["kpi-avg-cost"].as_str().unwrap().parse().unwrap();
    assert!(
        (avg - cost / priced).abs() < 1e-12,
        "avg cost per request {avg} vs {}",
        cost / priced
    );
    let rate: f64 = k["kpi-error-rate"].as_str().unwrap().parse().unwrap();
    let want = t["error_requests"].as_f64().unwrap() / requests;
    assert!((rate - want).abs() < 1e-12, "error rate {rate} vs {want}");
}

/// The first column of a table's CSV (its keys, in the page's order).
async fn table_keys(b: &Browser, table: &str) -> Result<Vec<String>, BoxError> {
    let csv = b
        .js(&format!("return window.dashboard.tableCsv('{table}');"))
        .await?;
    Ok(csv
        .as_str()
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or_default().to_string())
        .collect())
}

/// What a tenant sees of its month: top keys and models, budget bars, the
/// forecast as the dashed continuation of the month's spend line, cache
/// savings; each against the API's figures for the same token.
async fn check_tenant_panels(
    b: &Browser,
    api: &Api,
    token: &str,
    window: &str,
    now: i64,
) -> Result<(), BoxError> {
    // Top keys and top models, as the API groups and orders them.
    for (table, group) in [("table-keys", "api_key"), ("table-models", "model")] {
        let groups = api
            .get(&format!("/v1/summary?group_by={group}&{window}"), token)
            .await?;
        let want: Vec<String> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["key"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(table_keys(b, table).await?, want, "{table}");
    }
    let mut keys = table_keys(b, "table-keys").await?;
    keys.sort();
    assert_eq!(keys, ["key-a1", "key-a2"], "acme's keys only");
    // Budget bars: one per budget, filled to its percent_used.
    let listed = api.get("/v1/budgets", token).await?;
    let bars = b
        .js("return [...document.querySelectorAll('#table-budgets .bar > span')].map(e => e.style.width);")
        .await?;
    let want: Vec<String> = listed["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let p: f64 = x["percent_used"].as_str().unwrap().parse().unwrap();
            format!("{}%", p.min(100.0))
        })
        .collect();
    assert_eq!(bars, json!(want), "budget bars");

    // The forecast panel: one block per currency with the API's figures.
    let f = api.get("/v1/forecast", token).await?;
    assert_eq!(f["tenant_id"], "acme");
    let shown = b
        .js("return [document.getElementById('forecast-panel').hidden, [...document.querySelectorAll('#forecast-charts .forecast')].map(e => Object.assign({}, e.dataset))];")
        .await?;
    assert_eq!(shown[0], false, "forecast panel hidden");
    let blocks = shown[1].as_array().unwrap();
    let forecasts = f["forecasts"].as_array().unwrap();
    assert_eq!(blocks.len(), forecasts.len(), "{shown} vs {f}");
    assert!(!forecasts.is_empty(), "acme spent in the last days: {f}");
    // The collector runs on the real clock: between the page's call and
    // ours the period's remainder shrank by a few seconds, which moves the
    // projection by far less than 1e-4 of it; what is spent is exact.
    let close = |page: &Value, api: &Value| {
        let (p, a) = (
            page.as_str()
                .unwrap_or("NaN")
                .parse::<f64>()
                .unwrap_or(f64::NAN),
            api.as_str()
                .unwrap_or("NaN")
                .parse::<f64>()
                .unwrap_or(f64::NAN),
        );
        (p - a).abs() <= 1e-4 * a.abs().max(1e-9)
    };
    for (block, fc) in blocks.iter().zip(forecasts) {
        assert_eq!(block["currency"], fc["currency"]);
        assert_eq!(block["spent"], fc["spent"], "page {block} api {fc}");
        for k in ["projected", "low", "high"] {
            assert!(close(&block[k], &fc[k]), "{k}: page {block} api {fc}");
        }
        assert_eq!(block["method"], fc["basis"]["method"]);
        assert_eq!(
            block["historyDays"],
            fc["basis"]["history_days"].to_string()
        );
    }
    // Drawn as the month's spend line, then a dashed line from now (at the
    // spend so far) to the end of the month (at the projection), and the range.
    let series = b.js("return window.dashboard.forecastSeries;").await?;
    let labels: Vec<&str> = series
        .as_array()
        .ok_or_else(|| format!("no forecast chart: {series}"))?
        .iter()
        .map(|s| s["label"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(labels, ["spent", "forecast", "low", "high"]);
    assert_eq!(series[0]["dash"], Value::Null, "the spend line is solid");
    assert!(
        series[1]["dash"].is_array(),
        "the forecast is dashed: {series}"
    );
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let dec = |v: &Value| {
        v.as_str()
            .unwrap_or("NaN")
            .parse::<f64>()
            .unwrap_or(f64::NAN)
    };
    // Against the page's own figures (the block above checked them).
    let first = &blocks[0];
    let at = |v: &Value| dec(v);
    assert!(
        (num(&series[1]["first"]) - at(&first["spent"])).abs() < 1e-12,
        "{series}"
    );
    assert!(
        (num(&series[1]["last"]) - at(&first["projected"])).abs() < 1e-12,
        "{series}"
    );
    assert!(
        (num(&series[2]["last"]) - at(&first["low"])).abs() < 1e-12,
        "{series}"
    );
    assert!(
        (num(&series[3]["last"]) - at(&first["high"])).abs() < 1e-12,
        "{series}"
    );
    // The solid line ends where the dashed one starts: at the spend so far.
    let solid_end = b
        .js("const s = window.dashboard.forecastSeries; return s[0].first;")
        .await?;
    assert_eq!(num(&solid_end), 0.0, "the month's line starts at 0");

    // Cache savings: the API's exact figure per currency, and that figure
    // is what the seeded cached tokens would have cost at the input price
    // minus what they cost (gpt-4o-mini 0.15 vs 0.075, claude-sonnet-4-5
    // 3.00 vs 0.30 per million), for the seeded requests of this month.
    let savings = b
        .js("const e = document.getElementById('kpi-cache-savings'); return [document.getElementById('kpi-savings-card').hidden, e.dataset.value];")
        .await?;
    assert_eq!(savings[0], false);
    let list = f["cache_savings"].as_array().unwrap();
    let want: Vec<String> = list
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["savings"].as_str().unwrap(),
                c["currency"].as_str().unwrap()
            )
        })
        .collect();
    let want = if want.is_empty() {
        "0".to_string()
    } else {
        want.join(" + ")
    };
    assert_eq!(savings[1], json!(want));
    let start = f["period_start"].as_str().unwrap().to_string();
    let h = 3_600_000;
    let mut expected = 0.0;
    for (at, saving) in [(now - 40 * h, 0.0015), (now - 20 * h, 0.027)] {
        if iso(at) >= start {
            expected += saving;
        }
    }
    let usd = list
        .iter()
        .find(|c| c["currency"] == "USD")
        .map(|c| dec(&c["savings"]))
        .unwrap_or(0.0);
    assert!(
        (usd - expected).abs() < 1e-12,
        "savings {usd} vs {expected}: {f}"
    );
    Ok(())
}

#[tokio::test]
async fn dashboard_shows_the_api_figures_filters_and_exports_csv() {
    let out = repo_root().join("tests/output/dashboard");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();

    let db = fresh_database("dash").await.unwrap();
    let port = free_port();
    let _collector = start_collector(&db, port, &out, "collector").await.unwrap();
    let api = Api {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };

    // Seed: two tenants, three priced models, one unpriced model, one error,
    // spread over the last two days.
    let now = now_ms();
    let h = 3_600_000;
    let records = vec![
        rec(
            "d1",
            "acme",
            "key-a1",
            "openai",
            "gpt-4o-mini",
            now - 40 * h,
            200,
            120_000,
            20_000,
            30_000,
        ),
        rec(
            "d2",
            "acme",
            "key-a1",
            "openai",
            "gpt-4o-mini",
            now - 30 * h,
            200,
            80_000,
            0,
            10_000,
        ),
        rec(
            "d3",
            "acme",
            "key-a2",
            "anthropic",
            "claude-sonnet-4-5",
            now - 20 * h,
            200,
            50_000,
            10_000,
            4_000,
        ),
        rec(
            "d4",
            "acme",
            "key-a2",
            "anthropic",
            "claude-sonnet-4-5",
            now - 3 * h,
            529,
            0,
            0,
            0,
        ),
        rec(
            "d5",
            "globex",
            "key-g1",
            "openai",
            "gpt-4o",
            now - 10 * h,
            200,
            200_000,
            0,
            20_000,
        ),
        rec(
            "d6",
            "globex",
            "key-g1",
            "openai",
            "gpt-4o-mini",
            now - 5 * h,
            200,
            10_000,
            0,
            1_000,
        ),
        rec(
            "d7",
            "globex",
            "key-g2",
            "unknown",
            "acme-llm-1",
            now - 2 * h,
            200,
            5_000,
            0,
            500,
        ),
    ];
    let r = api
        .post("/v1/usage", INGEST_TOKEN, json!({"records": records}))
        .await
        .unwrap();
    assert_eq!(r["accepted"], 7, "{r}");
    assert_eq!(r["unpriced"], 1, "{r}");
    let tenant_token = api
        .post(
            "/v1/tokens",
            ADMIN_TOKEN,
            json!({"tenant_id": "acme", "name": "dashboard"}),
        )
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // A budget, so the budget panel has something to show.
    let budget = api
        .post(
            "/v1/budgets",
            ADMIN_TOKEN,
            json!({"tenant_id": "acme", "limit": "5.00", "currency": "USD", "period": "month", "hard": false}),
        )
        .await;

    let start = iso(now - 72 * h);
    let end = iso(now + 2 * h);
    let window = format!("start={start}&end={end}");

    let browser = Browser::start(&out).await.unwrap();
    // Assertion failures are caught so the session is always closed (the
    // browser quits) before the test fails.
    let result = AssertUnwindSafe(async {
        browser
            .goto(&format!("{}/dashboard?range=custom&{window}", api.base))
            .await?;
        // Signs in with the admin token.
        browser.type_into("#token-input", ADMIN_TOKEN).await?;
        browser.click("#token-save").await?;
        let gen = browser.wait_ready(0).await?;

        // KPI cards = the API's total for the same window.
        let all = api.total(&window, ADMIN_TOKEN).await?;
        let k = kpis(&browser).await?;
        assert_kpis_match(&k, &all);
        assert_eq!(all["requests"], 7);
        assert_eq!(all["unpriced_requests"], 1);
        assert_eq!(all["error_requests"], 1);
        let shown_window = browser
            .js("const w = document.getElementById('window').dataset; return [w.start, w.end];")
            .await?;
        assert_eq!(shown_window, json!([start, end]));

        // The models table equals the API's per-model groups, with share of spend.
        let models = api.get(&format!("/v1/summary?group_by=model&{window}"), ADMIN_TOKEN).await?;
        let csv = browser.js("return window.dashboard.tableCsv('table-models');").await?;
        let csv = csv.as_str().unwrap_or_default().to_string();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("model,requests,input_tokens,output_tokens,cost,currency,share_pct"));
        let total_cost: f64 = all["cost"].as_str().unwrap().parse()?;
        for g in models["groups"].as_array().unwrap() {
            let cost = g["cost"].as_str().unwrap();
            let share = 100.0 * cost.parse::<f64>()? / total_cost;
            let want = format!(
                "{},{},{},{},{},{},{share:.1}",
                g["key"].as_str().unwrap(),
                g["requests"],
                g["input_tokens"],
                g["output_tokens"],
                cost,
                g["currency"].as_str().unwrap_or("")
            );
            assert_eq!(lines.next(), Some(want.as_str()), "models CSV:\n{csv}");
        }
        assert_eq!(lines.next(), None);
        let tenants_shown = browser
            .js("return [...document.querySelectorAll('#table-tenants tbody tr td:first-child')].map(e => e.textContent);")
            .await?;
        assert_eq!(tenants_shown, json!(["globex", "acme"]));
        let chart = browser.js("const c = document.getElementById('chart'); return [c.dataset.series, !!c.querySelector('canvas')];").await?;
        assert_eq!(chart[1], true, "the chart is drawn: {chart}");
        // The budget panel shows the budgets API's figures (when that API exists).
        let rows = browser
            .js("return [document.getElementById('budgets-panel').hidden, document.querySelectorAll('#table-budgets tbody tr').length, window.dashboard.tableCsv('table-budgets')];")
            .await?;
        match &budget {
            Ok(_) => {
                let listed = api.get("/v1/budgets?tenant_id=acme", ADMIN_TOKEN).await?;
                let b = &listed["budgets"][0];
                assert_eq!((&rows[0], &rows[1]), (&json!(false), &json!(1)), "budget panel: {rows}");
                let csv = rows[2].as_str().unwrap_or_default();
                let want = format!(
                    "acme,,,month,{},{},USD,{},",
                    b["spent"].as_str().unwrap_or("?"),
                    b["limit"].as_str().unwrap_or("?"),
                    b["percent_used"].as_str().unwrap_or("?")
                );
                assert!(csv.lines().nth(1).unwrap_or_default().starts_with(&want), "budget CSV {csv} want {want}");
            }
            Err(e) => {
                eprintln!("no budgets API ({e}): the panel must stay hidden");
                assert_eq!(rows[0], json!(true), "budget panel without budgets");
            }
        }
        browser.screenshot(&out.join("01-overview-admin.png")).await?;

        // Filter by model: the URL and every figure follow.
        browser.click("#f-model option[value='gpt-4o-mini']").await?;
        browser.wait_ready(gen).await?;
        let url = browser.url().await?;
        assert!(url.contains("model=gpt-4o-mini"), "{url}");
        assert!(url.contains(&format!("start={}", start.replace(':', "%3A"))), "{url}");
        let mini = api.total(&format!("{window}&model=gpt-4o-mini"), ADMIN_TOKEN).await?;
        let k = kpis(&browser).await?;
        assert_kpis_match(&k, &mini);
        assert_eq!(mini["requests"], 3);
        assert_ne!(mini["cost"], all["cost"]);

        // CSV export of the keys table (the button), under the model filter.
        browser.click("button.csv[data-table='table-keys']").await?;
        let export = browser.js("return window.dashboard.lastExport;").await?;
        assert_eq!(export["filename"], "keys.csv");
        let keys = api
            .get(&format!("/v1/summary?group_by=api_key&{window}&model=gpt-4o-mini"), ADMIN_TOKEN)
            .await?;
        let csv = export["csv"].as_str().unwrap_or_default();
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows[0], "api_key,requests,input_tokens,output_tokens,cost,currency,share_pct");
        let groups = keys["groups"].as_array().unwrap();
        assert_eq!(rows.len(), 1 + groups.len(), "{csv}");
        for (row, g) in rows[1..].iter().zip(groups) {
            assert!(
                row.starts_with(&format!("{},{},", g["key"].as_str().unwrap(), g["requests"])),
                "{row} vs {g}"
            );
            assert!(row.contains(&format!(",{},USD,", g["cost"].as_str().unwrap())), "{row} vs {g}");
        }
        std::fs::write(out.join("keys-gpt-4o-mini.csv"), csv)?;

        // Chart metric toggle is kept in the URL too.
        browser.click("#metric-toggle button[data-metric='tokens']").await?;
        let url = browser.url().await?;
        assert!(url.contains("metric=tokens"), "{url}");
        let metric = browser.js("return document.getElementById('chart').dataset.metric;").await?;
        assert_eq!(metric, "tokens");
        browser.screenshot(&out.join("02-model-filter-tokens.png")).await?;

        // Reloading the URL restores the filters.
        browser.goto(&url).await?;
        browser.wait_ready(0).await?;
        let f = browser.js("return [document.getElementById('f-model').value, document.getElementById('f-range').value];").await?;
        assert_eq!(f, json!(["gpt-4o-mini", "custom"]));
        let k = kpis(&browser).await?;
        assert_kpis_match(&k, &mini);

        // A tenant token sees its own tenant only.
        browser.click("#signout").await?;
        browser
            .goto(&format!("{}/dashboard?range=custom&{window}&refresh=1", api.base))
            .await?;
        browser.type_into("#token-input", &tenant_token).await?;
        browser.click("#token-save").await?;
        browser.wait_ready(0).await?;
        let acme = api.total(&format!("{window}&tenant_id=acme"), ADMIN_TOKEN).await?;
        let k = kpis(&browser).await?;
        assert_kpis_match(&k, &acme);
        assert_eq!(acme["requests"], 4);
        let tenants_shown = browser
            .js("return [...document.querySelectorAll('#table-tenants tbody tr td:first-child')].map(e => e.textContent);")
            .await?;
        assert_eq!(tenants_shown, json!(["acme"]));
        check_tenant_panels(&browser, &api, &tenant_token, &window, now).await?;
        browser.screenshot(&out.join("03-tenant-token.png")).await?;

        // Live refresh (every `refresh` seconds, 30 by default): new usage
        // shows up without any click.
        let before = browser.generation().await?;
        let late = rec("d8", "acme", "key-a1", "openai", "gpt-4o-mini", now_ms() - 60_000, 200, 1_000, 0, 100);
        api.post("/v1/usage", INGEST_TOKEN, json!({"records": [late]})).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let k = kpis(&browser).await?;
            if k["kpi-requests"] == "5" {
                let acme = api.total(&format!("{window}&tenant_id=acme"), ADMIN_TOKEN).await?;
                assert_kpis_match(&k, &acme);
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("live refresh did not show the new request: {k}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(browser.generation().await? > before);

        // A second currency: a model priced in EUR. The spend card lists one
        // total per currency, never their sum, and each table row's share is
        // of its own currency's total.
        let r = api
            .http
            .put(format!("{}/v1/prices/eu-llm", api.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"input": "1.00", "output": "2.00", "currency": "EUR",
                "effective_from": "2025-01-01T00:00:00Z"}))
            .send()
            .await?;
        assert!(r.status().is_success(), "{}", r.text().await?);
        let eur = rec("d9", "acme", "key-a1", "openai", "eu-llm", now_ms() - 30_000, 200, 100_000, 0, 10_000);
        api.post("/v1/usage", INGEST_TOKEN, json!({"records": [eur]})).await?;
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let k = kpis(&browser).await?;
            let spend = k["kpi-spend"].as_str().unwrap_or_default().to_string();
            if spend.contains("EUR") {
                let groups = api
                    .get(&format!("/v1/summary?group_by=total&{window}&tenant_id=acme"), ADMIN_TOKEN)
                    .await?["groups"]
                    .clone();
                let mut parts: Vec<String> = groups
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|g| g["currency"].is_string())
                    .map(|g| format!("{} {}", g["cost"].as_str().unwrap(), g["currency"].as_str().unwrap()))
                    .collect();
                assert_eq!(parts.len(), 2, "{groups}");
                parts.sort();
                let mut shown: Vec<String> = spend.split(" + ").map(str::to_string).collect();
                shown.sort();
                assert_eq!(shown, parts, "page {k} api {groups}");
                // 100,000 in × 1.00 + 10,000 out × 2.00 per million.
                assert!(parts.contains(&"0.12 EUR".to_string()), "{parts:?}");
                let text = k["text"].as_str().unwrap();
                assert!(text.contains("EUR") && text.contains("USD"), "{text}");
                let sub = browser
                    .js("return document.getElementById('kpi-currency').textContent;")
                    .await?;
                assert_eq!(sub, json!("2 currencies, priced usage, never added"));
                let eu_share = browser
                    .js("return [...document.querySelectorAll('#table-models tbody tr')].map(tr => [...tr.children].map(td => td.textContent)).find(c => c[0] === 'eu-llm');")
                    .await?;
                assert!(eu_share.to_string().contains("100.0 %"), "{eu_share}");
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the EUR spend never showed: {k}").into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        browser.screenshot(&out.join("04-two-currencies.png")).await?;
        browser.generation().await
    })
    .catch_unwind()
    .await;
    browser.close().await;
    match result {
        Ok(generations) => assert!(generations.unwrap() >= 1),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
