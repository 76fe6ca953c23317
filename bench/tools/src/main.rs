//! `benchtool`: the load generators and probes `bench/run` drives.
//!
//!   benchtool ingest  --url U --token T [--senders 4] [--batch 500] [--seconds 25] [--run ID]
//!       concurrent senders POST batches of usage records to the collector
//!   benchtool dbwrite --database-url D [--batches 200] [--batch 500] [--concurrency 2]
//!       the collector's `insert_batch` alone vs a raw COPY of the same rows
//!   benchtool rate    --url U --rps R --seconds S --tenant T --prefix P
//!       open-loop fixed-rate HTTP load (one unique x-request-id per request)
//!   benchtool ttfb    --url U [--runs 250]
//!       sequential SSE requests: time to the first body byte
//!   benchtool query   --url U --token T --path P [--tenants a,b] [--runs 50] [--follow-cursor]
//!       times a query API call; `{t}` in the path is replaced by each tenant in turn
//!   benchtool overshoot --url U[,U2...] --tenant T --key K [--clients 32] [--model M] [--event-delay-ms 200]
//!                       [--cap-seconds 60] [--max-tokens N] [--prompt-bytes N]
//!       closed-loop streaming clients on one key until each is refused (429);
//!       clients are spread round-robin over the URLs (several Envoys)
//!
//! Every command ends with one `RESULT key=value ...` line for the script.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector::db::{self, LedgerEntry};
use collector::ingest::UsageRecord;
use collector::price_book::PriceBook;
use collector::pricing::Catalog;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Args(HashMap<String, String>);

impl Args {
    fn parse(raw: &[String]) -> Self {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < raw.len() {
            if let Some(key) = raw[i].strip_prefix("--") {
                match raw.get(i + 1) {
                    Some(v) if !v.starts_with("--") => {
                        map.insert(key.to_string(), v.clone());
                        i += 2;
                    }
                    _ => {
                        map.insert(key.to_string(), "true".to_string());
                        i += 1;
                    }
                }
            } else {
                i += 1;
            }
        }
        Args(map)
    }
    fn str(&self, k: &str) -> Res<String> {
        self.0
            .get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required").into())
    }
    fn or(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn num(&self, k: &str, d: u64) -> Res<u64> {
        match self.0.get(k) {
            Some(v) => Ok(v.parse().map_err(|_| format!("--{k} must be a number"))?),
            None => Ok(d),
        }
    }
    fn flag(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

/// Nearest-rank percentile of an unsorted sample, in the sample's unit.
fn pct(sample: &mut [f64], p: f64) -> f64 {
    if sample.is_empty() {
        return 0.0;
    }
    sample.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sample.len() as f64).ceil() as usize;
    sample[rank.clamp(1, sample.len()) - 1]
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

const MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "gpt-4o",
    "o4-mini",
    "gpt-5-mini",
];

/// One usage record as the filter sends it (realistic sizes, priced models).
fn record_json(run: &str, i: u64, started_at_ms: i64) -> String {
    let input = 200 + (i * 37) % 3000;
    let output = 50 + (i * 13) % 800;
    let cache_read = if i.is_multiple_of(4) { input / 2 } else { 0 };
    format!(
        concat!(
            r#"{{"request_id":"{run}-{i:09}","tenant_id":"bench-t{t:02}","api_key_id":"key{k:02}","#,
            r#""provider":"openai","model":"{m}","route":"llm_api","http_status":200,"#,
            r#""streamed":{s},"started_at_ms":{ts},"ttfb_ms":{ttfb},"duration_ms":{d},"#,
            r#""input_tokens":{input},"output_tokens":{output},"cache_read_tokens":{cr}}}"#
        ),
        run = run,
        i = i,
        t = i % 50,
        k = i % 20,
        m = MODELS[(i % MODELS.len() as u64) as usize],
        s = i.is_multiple_of(3),
        ts = started_at_ms,
        ttfb = 100 + i % 400,
        d = 400 + i % 4000,
        input = input,
        output = output,
        cr = cache_read,
    )
}

fn batch_body(run: &str, first: u64, n: u64, started_at_ms: i64) -> String {
    let mut body = String::with_capacity(n as usize * 360 + 16);
    body.push_str("{\"records\":[");
    for i in first..first + n {
        if i > first {
            body.push(',');
        }
        body.push_str(&record_json(run, i, started_at_ms));
    }
    body.push_str("]}");
    body
}

async fn ingest(a: &Args) -> Res<()> {
    let url = a.str("url")?;
    let token = a.str("token")?;
    let senders = a.num("senders", 4)?;
    let batch = a.num("batch", 500)?;
    let seconds = a.num("seconds", 25)?;
    let run = a.or("run", &format!("ing{}", now_ms()));
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, url, token, run, next) = (
            client.clone(),
            url.clone(),
            token.clone(),
            run.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut accepted, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                let body = batch_body(&run, first, batch, now_ms() - 1000);
                let t0 = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        lat.push(t0.elapsed().as_secs_f64() * 1e3);
                        accepted += v["accepted"].as_u64().unwrap_or(0);
                    }
                    _ => errors += 1,
                }
            }
            (lat, accepted, errors)
        }));
    }
    let (mut lat, mut accepted, mut errors) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, acc, e) = t.await?;
        lat.extend(l);
        accepted += acc;
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RESULT run={run} batches={} accepted={accepted} errors={errors} seconds={secs:.2} rate={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        lat.len(),
        accepted as f64 / secs,
        pct(&mut lat, 50.0),
        pct(&mut lat, 99.0),
        pct(&mut lat, 100.0),
    );
    Ok(())
}

const COPY_COLUMNS: &str = "occurred_at, request_id, tenant_id, received_ms, api_key_id, \
    model_id, route_id, rate_id, ttfb_ms, duration_ms, input_tokens, output_tokens, \
    cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, http_status, \
    flags, cost, reported_cost";

/// The dictionary ids `insert_batch` gave the names (it ran first).
#[derive(Default)]
struct Ids {
    tenants: HashMap<String, i32>,
    keys: HashMap<String, i32>,
    models: HashMap<(String, String), i32>,
    routes: HashMap<String, i32>,
    cards: HashMap<String, i32>,
}

async fn ids(pool: &sqlx::PgPool) -> Res<Ids> {
    let pairs = |sql: &'static str| async move {
        sqlx::query_as::<_, (String, i32)>(sql).fetch_all(pool).await
    };
    Ok(Ids {
        tenants: pairs("SELECT name, id FROM ledger_tenants").await?.into_iter().collect(),
        keys: pairs("SELECT name, id FROM ledger_api_keys").await?.into_iter().collect(),
        routes: pairs("SELECT name, id FROM ledger_routes").await?.into_iter().collect(),
        cards: pairs("SELECT card, id FROM ledger_rates").await?.into_iter().collect(),
        models: sqlx::query_as::<_, (String, String, i32)>(
            "SELECT provider, model, id FROM ledger_models",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(p, m, id)| ((p, m), id))
        .collect(),
    })
}

/// The same ledger rows `insert_batch` writes, as COPY text (our values need
/// no escaping), without the rollups, dictionaries or duplicate check.
fn copy_text(entries: &[LedgerEntry], ids: &Ids) -> String {
    let mut out = String::with_capacity(entries.len() * 150);
    for e in entries {
        let r = &e.record;
        let p = e.price.as_ref();
        let id = |m: &HashMap<String, i32>, k: Option<&String>| {
            k.and_then(|k| m.get(k)).copied().unwrap_or(0).to_string()
        };
        let model = (r.provider.clone(), r.model.clone().unwrap_or_default());
        let fields = [
            r.occurred_at().to_rfc3339(),
            db::stored_request_uuid(&r.request_id).to_string(),
            id(&ids.tenants, Some(&r.tenant_id)),
            "0".to_string(),
            id(&ids.keys, r.api_key_id.as_ref()),
            ids.models.get(&model).copied().unwrap_or(0).to_string(),
            id(&ids.routes, r.route.as_ref()),
            id(&ids.cards, p.map(|p| p.card()).as_ref()),
            r.ttfb_ms.map_or(-1, |v| v.min(i32::MAX as u64) as i64).to_string(),
            r.duration_ms.map_or(-1, |v| v.min(i32::MAX as u64) as i64).to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cache_read_tokens.to_string(),
            r.cache_write_tokens.to_string(),
            r.cache_write_1h_tokens.to_string(),
            r.reasoning_tokens.to_string(),
            r.http_status.to_string(),
            db::flag_bits(r).to_string(),
            p.map_or(rust_decimal::Decimal::ZERO, |p| p.total).to_string(),
            r.reported_cost.unwrap_or_default().to_string(),
        ];
        out.push_str(&fields.join("\t"));
        out.push('\n');
    }
    out
}

/// Runs `work(i)` for i in 0..n on `concurrency` tasks; returns seconds.
async fn run_parallel<F, Fut>(n: usize, concurrency: usize, work: F) -> Res<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Res<()>> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (work, next) = (work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok::<(), Box<dyn std::error::Error + Send + Sync>>(());
                }
                work(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn dbwrite(a: &Args) -> Res<()> {
    let url = a.str("database-url")?;
    let batches = a.num("batches", 200)? as usize;
    let batch = a.num("batch", 500)?;
    let concurrency = a.num("concurrency", 2)? as usize;
    let pool = db::connect_lazy(&url, concurrency as u32 + 1)?;
    db::migrate(&pool).await?;
    let catalog = Catalog::bundled().map_err(|e| e.to_string())?;
    db::insert_prices(&pool, catalog.entries(), "catalog:bench").await?;
    let book = PriceBook::from_stored(
        db::load_prices(&pool).await?,
        db::latest_price_id(&pool).await?,
    );
    let run = format!("dbw{}", now_ms());
    let ts = now_ms() - 1000;
    let mut data: Vec<Vec<LedgerEntry>> = Vec::with_capacity(batches);
    for b in 0..batches as u64 {
        let records = (b * batch..(b + 1) * batch)
            .map(|i| serde_json::from_str::<UsageRecord>(&record_json(&run, i, ts)))
            .collect::<Result<Vec<_>, _>>()?;
        data.push(book.price_all(records));
    }
    let total = batches as u64 * batch;
    let data = Arc::new(data);
    let count = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ledger")
            .fetch_one(&pool)
            .await
    };

    sqlx::query("TRUNCATE ledger, rollup_hourly, rollup_daily, rollup_tenant_daily")
        .execute(&pool)
        .await?;
    let (p, d) = (pool.clone(), data.clone());
    let insert_secs = run_parallel(batches, concurrency, move |i| {
        let (p, d) = (p.clone(), d.clone());
        async move {
            db::insert_batch(&p, &d[i]).await?;
            Ok(())
        }
    })
    .await?;
    let inserted = count(pool.clone()).await?;

    let ids = ids(&pool).await?;
    let texts: Arc<Vec<String>> = Arc::new(data.iter().map(|b| copy_text(b, &ids)).collect());
    sqlx::query("TRUNCATE ledger, rollup_hourly, rollup_daily, rollup_tenant_daily")
        .execute(&pool)
        .await?;
    let p = pool.clone();
    let copy_secs = run_parallel(batches, concurrency, move |i| {
        let (p, texts) = (p.clone(), texts.clone());
        async move {
            let mut conn = p.acquire().await?;
            let mut copy = conn
                .copy_in_raw(&format!("COPY ledger ({COPY_COLUMNS}) FROM STDIN"))
                .await?;
            copy.send(texts[i].as_bytes()).await?;
            copy.finish().await?;
            Ok(())
        }
    })
    .await?;
    let copied = count(pool.clone()).await?;
    sqlx::query("TRUNCATE ledger, rollup_hourly, rollup_daily, rollup_tenant_daily")
        .execute(&pool)
        .await?;
    let (ins_rate, copy_rate) = (total as f64 / insert_secs, total as f64 / copy_secs);
    println!(
        "RESULT rows={total} inserted={inserted} copied={copied} insert_s={insert_secs:.2} copy_s={copy_secs:.2} insert_rate={ins_rate:.0} copy_rate={copy_rate:.0} ratio={:.2}",
        ins_rate / copy_rate
    );
    if inserted as u64 != total || copied as u64 != total {
        return Err("row counts do not match".into());
    }
    Ok(())
}

async fn rate(a: &Args) -> Res<()> {
    let url = a.str("url")?;
    let rps = a.num("rps", 2000)?;
    let seconds = a.num("seconds", 60)?;
    let tenant = a.str("tenant")?;
    let prefix = a.str("prefix")?;
    // Requests in flight at most (= connections): beyond it the generator
    // waits, and the achieved rate shows the shortfall.
    let max_in_flight = a.num("max-in-flight", 256)? as usize;
    let body = a.or(
        "body",
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}]}"#,
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(max_in_flight)
        .build()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let total = rps * seconds;
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let mut late = 0u64;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rps);
        tokio::time::sleep_until(due).await;
        let permit = permits.clone().acquire_owned().await?;
        if tokio::time::Instant::now() > due + Duration::from_millis(10) {
            late += 1;
        }
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        let (tenant, id) = (tenant.clone(), format!("{prefix}-{i:08}"));
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-tenant-id", tenant)
                .header("x-request-id", id)
                .body(body)
                .send()
                .await;
            let status = match r {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let _ = r.bytes().await;
                    s
                }
                Err(_) => 0,
            };
            drop(permit);
            (status, t0.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let send_secs = started.elapsed().as_secs_f64();
    let (mut ok, mut non2xx, mut errors, mut lat) = (0u64, 0u64, 0u64, Vec::new());
    let mut by_status = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, ms) = t.await?;
        *by_status.entry(status).or_insert(0u64) += 1;
        match status {
            0 => errors += 1,
            200..=299 => ok += 1,
            _ => non2xx += 1,
        }
        lat.push(ms);
    }
    let statuses: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    println!(
        "RESULT sent={total} ok={ok} non2xx={non2xx} errors={errors} late={late} statuses={} send_seconds={send_secs:.2} rate={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.1}",
        statuses.join(","),
        total as f64 / send_secs,
        pct(&mut lat, 50.0),
        pct(&mut lat, 99.0),
        pct(&mut lat, 100.0),
    );
    Ok(())
}

/// What one overshoot client saw.
#[derive(Default)]
struct ClientLog {
    admitted: u64,
    errors: u64,
    /// 503s: the gateway could not verify the budget (a reservation that
    /// timed out or failed, with `deny_fail_open: false`); retried.
    unavailable: u64,
    other: u64,
    /// Wall-clock ms: start of the last request that got a 200, and when
    /// the first 429 came back.
    last_admitted_start_ms: i64,
    refused_at_ms: Option<i64>,
    stream_ms: Vec<f64>,
}

/// The chat request of every overshoot client: a streaming request for
/// `model`, with `"max_tokens": N` when given (a request that bounds its
/// own output), and the user message padded with words until the body is
/// at least `prompt_bytes` long (the filter bounds the input by the body's
/// bytes, so a bounded request needs a body at least as long as the
/// prompt tokens the upstream will bill).
fn overshoot_body(model: &str, max_tokens: Option<u64>, prompt_bytes: usize) -> String {
    let build = |content: &str| {
        let mut body = serde_json::json!({
            "model": model,
            "stream": true,
            "messages": [{"role": "user", "content": content}],
        });
        if let Some(n) = max_tokens {
            body["max_tokens"] = n.into();
        }
        body.to_string()
    };
    let mut content = String::from("Explain usage-based billing.");
    let short = build(&content).len();
    if prompt_bytes > short {
        // ASCII words: one byte each in the JSON, no escaping.
        let words = " Each tenant pays for the tokens its requests consume.";
        let need = prompt_bytes - short;
        content.extend(words.chars().cycle().take(need));
    }
    build(&content)
}

/// `clients` closed loops of streaming chat requests on one tenant and key
/// (the demo upstream paces the stream and names the model); each loop stops
/// at its first 429, so the run ends when the key is refused everywhere.
/// Starts are spread over one stream's length (`--stagger-ms`), so requests
/// arrive at a steady rate instead of in waves of `clients`. With several
/// comma-separated `--url`s, client `c` uses URL `c mod n`.
async fn overshoot(a: &Args) -> Res<()> {
    let urls: Vec<String> = a
        .str("url")?
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    if urls.is_empty() {
        return Err("--url names no URL".into());
    }
    let tenant = a.str("tenant")?;
    let key = a.str("key")?;
    let clients = a.num("clients", 32)?;
    let model = a.or("model", "gpt-4o-2024-05-13");
    let delay = a.num("event-delay-ms", 200)?;
    let cap = Duration::from_secs(a.num("cap-seconds", 60)?);
    let stagger = a.num("stagger-ms", delay * 7)?;
    let max_tokens =
        a.0.contains_key("max-tokens")
            .then(|| a.num("max-tokens", 0))
            .transpose()?;
    let prompt_bytes = a.num("prompt-bytes", 0)? as usize;
    // The body names the model the upstream bills, so the reservation's
    // estimate is priced as the usage record will be.
    let body = Arc::new(overshoot_body(&model, max_tokens, prompt_bytes));
    let body_bytes = body.len();
    let started_ms = now_ms();
    let deadline = Instant::now() + cap;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = urls[c as usize % urls.len()].clone();
        let (tenant, key, model, body) = (tenant.clone(), key.clone(), model.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            // One connection per client, as an SDK would hold.
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build();
            let mut log = ClientLog::default();
            let Ok(client) = client else {
                log.errors += 1;
                return log;
            };
            tokio::time::sleep(Duration::from_millis(stagger * c / clients.max(1))).await;
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let t0 = (Instant::now(), now_ms());
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-tenant-id", &tenant)
                    .header("authorization", format!("Bearer {key}"))
                    .header("x-request-id", format!("{tenant}-{c:02}-{i:05}"))
                    .header("x-demo-model", &model)
                    .header("x-demo-event-delay-ms", delay.to_string())
                    .body(body.as_str().to_owned())
                    .send()
                    .await;
                let status = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                match status {
                    200 => {
                        log.admitted += 1;
                        log.last_admitted_start_ms = t0.1;
                        log.stream_ms.push(t0.0.elapsed().as_secs_f64() * 1e3);
                    }
                    429 => {
                        log.refused_at_ms = Some(now_ms());
                        break;
                    }
                    503 => log.unavailable += 1,
                    0 => log.errors += 1,
                    _ => log.other += 1,
                }
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            log
        }));
    }
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await?);
    }
    let refused: Vec<i64> = logs.iter().filter_map(|l| l.refused_at_ms).collect();
    let mut streams: Vec<f64> = logs.iter().flat_map(|l| l.stream_ms.clone()).collect();
    println!(
        "RESULT clients={clients} urls={} max_tokens={} body_bytes={body_bytes} admitted={} refused_clients={} unavailable={} errors={} other={} started_ms={started_ms} first_429_ms={} all_refused_ms={} last_admitted_start_ms={} stream_p50_ms={:.0} elapsed_s={:.1}",
        urls.len(),
        max_tokens.map_or_else(|| "none".to_string(), |n| n.to_string()),
        logs.iter().map(|l| l.admitted).sum::<u64>(),
        refused.len(),
        logs.iter().map(|l| l.unavailable).sum::<u64>(),
        logs.iter().map(|l| l.errors).sum::<u64>(),
        logs.iter().map(|l| l.other).sum::<u64>(),
        refused.iter().min().copied().unwrap_or(0),
        if refused.len() == clients as usize { refused.iter().max().copied().unwrap_or(0) } else { 0 },
        logs.iter().map(|l| l.last_admitted_start_ms).max().unwrap_or(0),
        pct(&mut streams, 50.0),
        (now_ms() - started_ms) as f64 / 1e3,
    );
    Ok(())
}

async fn ttfb(a: &Args) -> Res<()> {
    let url = a.str("url")?;
    let runs = a.num("runs", 250)?;
    let client = reqwest::Client::new();
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Summarize the billing rules in one line."}]}"#;
    let (mut first, mut total) = (Vec::new(), Vec::new());
    for i in 0..runs + 10 {
        let t0 = Instant::now();
        let mut r = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-tenant-id", "bench")
            .header("x-bench-stream", "1")
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(format!("status {}", r.status()).into());
        }
        let mut t_first = None;
        while let Some(chunk) = r.chunk().await? {
            if t_first.is_none() && !chunk.is_empty() {
                t_first = Some(t0.elapsed());
            }
        }
        // The first requests warm the connection and the VM.
        if i >= 10 {
            first.push(t_first.unwrap_or_default().as_secs_f64() * 1e6);
            total.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!(
        "RESULT runs={runs} ttfb_p50_us={:.0} ttfb_p99_us={:.0} total_p50_us={:.0}",
        pct(&mut first, 50.0),
        pct(&mut first, 99.0),
        pct(&mut total, 50.0),
    );
    Ok(())
}

async fn query(a: &Args) -> Res<()> {
    let url = a.str("url")?;
    let token = a.str("token")?;
    let path = a.str("path")?;
    let runs = a.num("runs", 50)?;
    let tenants: Vec<String> = a.or("tenants", "").split(',').map(String::from).collect();
    let follow = a.flag("follow-cursor");
    let client = reqwest::Client::new();
    let (mut lat, mut rows) = (Vec::new(), 0usize);
    let (mut tenant_ix, mut cursor, mut pages) = (0usize, None::<String>, 0u32);
    for _ in 0..runs {
        let mut p = path.replace("{t}", &tenants[tenant_ix % tenants.len()]);
        if let Some(c) = &cursor {
            p.push_str(&format!("&cursor={c}"));
        }
        let t0 = Instant::now();
        let r = client
            .get(format!("{url}{p}"))
            .bearer_auth(&token)
            .send()
            .await?;
        let status = r.status();
        let v: serde_json::Value = r.json().await?;
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        if !status.is_success() {
            return Err(format!("GET {p}: {status} {v}").into());
        }
        let n = v["groups"]
            .as_array()
            .or(v["transactions"].as_array())
            .map_or(0, Vec::len);
        rows += n;
        pages += 1;
        cursor = v["next_cursor"].as_str().map(String::from);
        if !follow || cursor.is_none() || pages >= 10 {
            cursor = None;
            pages = 0;
            tenant_ix += 1;
        }
    }
    println!(
        "RESULT runs={runs} rows_per_call={:.1} p50_ms={:.2} p95_ms={:.2} max_ms={:.2}",
        rows as f64 / runs as f64,
        pct(&mut lat, 50.0),
        pct(&mut lat, 95.0),
        pct(&mut lat, 100.0),
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let cmd = raw.first().cloned().unwrap_or_default();
    let args = Args::parse(&raw[raw.len().min(1)..]);
    let result = match cmd.as_str() {
        "ingest" => ingest(&args).await,
        "dbwrite" => dbwrite(&args).await,
        "rate" => rate(&args).await,
        "query" => query(&args).await,
        "ttfb" => ttfb(&args).await,
        "overshoot" => overshoot(&args).await,
        _ => Err(
            "usage: benchtool ingest|dbwrite|rate|query|ttfb|overshoot --help in src/main.rs"
                .into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("benchtool {cmd}: {e}");
        std::process::exit(1);
    }
}
