//! `collector ledger export` on the real PostgreSQL: a closed month with
//! several tenants, two currencies, a discount, a request fee, reasoning,
//! a reported cost and unpriced rows, plus rows in the months around it,
//! exported in all three formats and read back by an independent reader
//! (DuckDB from the project's .venv, installed by `./dev setup`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use collector::db;
use collector::export::{self, ExportFormat, Job, Period};
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap().normalize()
}

/// A decimal DuckDB printed (`0.00069000000000000000`), normalized.
fn duck_dec(v: &Value) -> String {
    dec(v
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}")))
    .to_string()
}

/// The month before the one the clock is in: closed, with the current
/// month (the clock's) after it.
fn closed_month(now: DateTime<Utc>) -> Period {
    Period::containing(Period::containing(now).start() - Duration::milliseconds(1))
}

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./dev setup (it installs DuckDB there)",
        python.display()
    );
    python
}

/// What DuckDB reads in a file: its columns, and per currency the row
/// count, distinct requests and sums (decimals as DuckDB prints them).
const READER: &str = r#"
import duckdb, json, sys
kind, path = sys.argv[1], sys.argv[2]
con = duckdb.connect()
if kind == "focus-csv":
    src = f"read_csv('{path}', header = true, all_varchar = true)"
else:
    src = f"read_parquet('{path}')"
out = {"columns": [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]}
D = "DECIMAL(38, 20)"
if kind == "parquet":
    q = f"""SELECT coalesce(currency, '') AS currency, count(*), count(DISTINCT tenant_id || '/' || request_id),
        CAST(sum(cost) AS VARCHAR), CAST(sum(reported_cost) AS VARCHAR),
        CAST(sum(input_tokens) AS VARCHAR), CAST(sum(output_tokens) AS VARCHAR),
        CAST(sum(cache_read_tokens) AS VARCHAR), CAST(sum(reasoning_tokens) AS VARCHAR),
        strftime(min(occurred_at), '%Y-%m-%dT%H:%M:%S.%gZ'), strftime(max(occurred_at), '%Y-%m-%dT%H:%M:%S.%gZ')
        FROM {src} GROUP BY 1 ORDER BY 1"""
    out["row_groups"] = con.execute(
        f"SELECT count(DISTINCT row_group_id) FROM parquet_metadata('{path}')").fetchone()[0]
    out["types"] = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
else:
    q = f"""SELECT coalesce(BillingCurrency, '') AS currency, count(*), count(DISTINCT x_RequestId),
        CAST(sum(CAST(BilledCost AS {D})) AS VARCHAR), CAST(sum(CAST(x_ReportedCost AS {D})) AS VARCHAR),
        CAST(sum(CAST(EffectiveCost AS {D})) AS VARCHAR), CAST(sum(CAST(ListCost AS {D})) AS VARCHAR),
        CAST(sum(CAST(ConsumedQuantity AS {D})) AS VARCHAR), CAST(sum(CAST(ContractedCost AS {D})) AS VARCHAR),
        CAST(min(CAST(ChargePeriodStart AS TIMESTAMPTZ)) AS VARCHAR), CAST(max(CAST(ChargePeriodEnd AS TIMESTAMPTZ)) AS VARCHAR),
        string_agg(DISTINCT CAST(BillingPeriodStart AS VARCHAR) || ' ' || CAST(BillingPeriodEnd AS VARCHAR), ';'),
        string_agg(DISTINCT ChargeCategory || '/' || ServiceCategory, ';')
        FROM {src} GROUP BY 1 ORDER BY 1"""
    out["components"] = {r[0]: r[1] for r in con.execute(
        f"SELECT x_CostComponent, count(*) FROM {src} GROUP BY 1").fetchall()}
con.execute("SET TimeZone = 'UTC'")
out["groups"] = [list(r) for r in con.execute(q).fetchall()]
print(json.dumps(out, default=str))
"#;

fn duckdb(format: ExportFormat, path: &Path) -> Value {
    let kind = match format {
        ExportFormat::Parquet => "parquet",
        ExportFormat::FocusCsv => "focus-csv",
        ExportFormat::FocusParquet => "focus-parquet",
    };
    let out = Command::new(python())
        .arg("-c")
        .arg(READER)
        .arg(kind)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "DuckDB could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The month's rows and its neighbours' through the ingest API; returns
/// how many rows went into the month.
async fn populate(s: &collector::AppState, month: Period) -> usize {
    // A EUR model with a per-request fee; 10 % off everything for acme.
    let (status, v) = call(
        s,
        "PUT",
        "/v1/prices/eu-llm",
        Some(ADMIN),
        Some(
            json!({"input": "1.00", "output": "2.00", "per_request": "0.001",
            "currency": "EUR", "effective_from": "2020-01-01T00:00:00Z"}),
        ),
    )
    .await;
    assert!(status.is_success(), "{v}");
    let (status, v) = call(
        s,
        "POST",
        "/v1/tenants/acme/pricing",
        Some(ADMIN),
        Some(json!({"discount": {"percent": "10"}, "effective_from": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert!(status.is_success(), "{v}");

    let (start, end) = (month.start(), month.end());
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    let hour = |h: i64| start + Duration::hours(h);
    let mut inside = Vec::new();
    // acme: 6 gpt-4o-mini, from the month's first instant to its last.
    inside.push(record("a-first", "acme", "gpt-4o-mini", ms(start)));
    for i in 1..5 {
        inside.push(record(
            &format!("a-{i}"),
            "acme",
            "gpt-4o-mini",
            ms(hour(24 * i)),
        ));
    }
    inside.push(record(
        "a-last",
        "acme",
        "gpt-4o-mini",
        ms(end - Duration::milliseconds(1)),
    ));
    // globex: 5 EUR requests and 3 USD ones with 100 reasoning tokens.
    for i in 0..5 {
        inside.push(record(
            &format!("g-eu-{i}"),
            "globex",
            "eu-llm",
            ms(hour(3 + i)),
        ));
    }
    for i in 0..3 {
        let mut r = record(
            &format!("g-think-{i}"),
            "globex",
            "gpt-4o-mini",
            ms(hour(30 + i)),
        );
        r["reasoning_tokens"] = json!(100);
        inside.push(r);
    }
    // initech: 4 unpriced, 2 priced (one with the provider's reported cost).
    for i in 0..4 {
        inside.push(record(
            &format!("i-unpriced-{i}"),
            "initech",
            "mystery-model",
            ms(hour(50 + i)),
        ));
    }
    inside.push(record("i-1", "initech", "gpt-4o-mini", ms(hour(60))));
    let mut reported = record("i-2", "initech", "gpt-4o-mini", ms(hour(61)));
    reported["reported_cost"] = json!("0.00042");
    inside.push(reported);

    let outside = vec![
        record(
            "a-before",
            "acme",
            "gpt-4o-mini",
            ms(start - Duration::milliseconds(1)),
        ),
        record(
            "g-before",
            "globex",
            "eu-llm",
            ms(start - Duration::days(10)),
        ),
        record("i-after", "initech", "mystery-model", ms(end)),
        record(
            "a-after",
            "acme",
            "gpt-4o-mini",
            ms(end + Duration::seconds(1)),
        ),
    ];
    let n = inside.len();
    let body = ingest(s, inside.into_iter().chain(outside).collect()).await;
    assert_eq!(body["accepted"], json!(n + 4), "{body}");
    n
}

#[sqlx::test(migrations = "../migrations")]
async fn a_closed_month_exports_in_every_format_and_reads_back_exactly(pool: PgPool) {
    let s = state(pool.clone()).await;
    let month = closed_month(s.clock.now());
    let n = populate(&s, month).await;
    assert_eq!(n, 20);

    // What the ledger holds, by figures worked out by hand: USD 6 × 0.0003105
    // (acme, 10 % off 0.000345) + 5 × 0.000345; EUR 5 × (0.001 + 0.0002 +
    // 0.0006 + the 0.001 fee).
    let mut conn = pool.acquire().await.unwrap();
    let totals = db::period_totals(&mut conn, month.start(), month.end())
        .await
        .unwrap();
    drop(conn);
    assert_eq!(totals.rows, 20);
    let by_currency: Vec<(Option<&str>, i64, String)> = totals
        .currencies
        .iter()
        .map(|(c, t)| (c.as_deref(), t.rows, t.cost.to_string()))
        .collect();
    assert_eq!(
        by_currency,
        [
            (None, 4, "0".to_string()),
            (Some("EUR"), 5, "0.014".to_string()),
            (Some("USD"), 11, "0.003588".to_string()),
        ]
    );
    let usd = &totals.currencies[&Some("USD".to_string())];
    assert_eq!(usd.reported_cost, dec("0.00042"));
    assert_eq!(usd.input_tokens, Decimal::from(11 * 1200));
    assert_eq!(usd.reasoning_tokens, Decimal::from(300));

    let dir = std::env::temp_dir().join(format!("ledger-export-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let export = |format: ExportFormat| {
        let (s, dir) = (s.clone(), dir.clone());
        async move {
            let path = dir.join(format.default_file_name(month));
            // 7 rows a chunk: pages end inside a tenant and across tenants.
            let job = Job {
                chunk_rows: 7,
                invoice_issuer: "Acme Platform Team".into(),
                ..Job::new(month, format)
            };
            let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            let (report, out) = export::run(&s.pool, &s.clock, &job, file).await.unwrap();
            out.into_inner().unwrap().sync_all().unwrap();
            (report, path)
        }
    };

    // Our own Parquet: every ledger row of the month, none of its neighbours.
    let (report, path) = export(ExportFormat::Parquet).await;
    assert_eq!((report.rows_written, report.ledger.rows), (20, 20));
    assert_eq!(report.ledger, totals);
    let read = duckdb(ExportFormat::Parquet, &path);
    assert_eq!(read["row_groups"], json!(3), "20 rows in chunks of 7");
    assert_eq!(read["columns"].as_array().unwrap().len(), 31);
    assert_eq!(read["types"]["cost"], json!("DECIMAL(38,20)"));
    assert_eq!(
        read["types"]["occurred_at"],
        json!("TIMESTAMP WITH TIME ZONE")
    );
    let groups = read["groups"].as_array().unwrap();
    let row = |currency: &str| {
        groups
            .iter()
            .find(|g| g[0] == json!(currency))
            .unwrap_or_else(|| panic!("no {currency} rows: {read}"))
            .clone()
    };
    assert_eq!(groups.len(), 3, "{read}");
    let (unpriced, eur, usd_g) = (row(""), row("EUR"), row("USD"));
    assert_eq!(
        (unpriced[1].clone(), unpriced[2].clone()),
        (json!(4), json!(4))
    );
    assert_eq!(unpriced[3], Value::Null, "unpriced rows have no cost");
    assert_eq!(
        (eur[1].clone(), duck_dec(&eur[3])),
        (json!(5), "0.014".into())
    );
    assert_eq!(
        (usd_g[1].clone(), duck_dec(&usd_g[3])),
        (json!(11), "0.003588".into())
    );
    assert_eq!(duck_dec(&usd_g[4]), "0.00042");
    assert_eq!(duck_dec(&usd_g[5]), (11 * 1200).to_string());
    assert_eq!(duck_dec(&usd_g[8]), "300");
    // The month's first and last instants are in; the neighbours are not.
    let first = groups.iter().map(|g| g[9].as_str().unwrap()).min().unwrap();
    let last = groups
        .iter()
        .map(|g| g[10].as_str().unwrap())
        .max()
        .unwrap();
    let iso = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    assert_eq!(first, iso(month.start()));
    assert_eq!(last, iso(month.end() - Duration::milliseconds(1)));

    // FOCUS, Parquet and CSV: the same figures.
    for format in [ExportFormat::FocusParquet, ExportFormat::FocusCsv] {
        let (report, path) = export(format).await;
        // acme 6 × 3 components, globex EUR 5 × 4 (with the fee), globex
        // USD 3 × 4 (with reasoning), initech 2 × 3; unpriced rows left out.
        assert_eq!(report.rows_written, 56, "{format:?}");
        assert_eq!(report.unpriced_rows_left_out(), 4);
        let read = duckdb(format, &path);
        let columns: Vec<&str> = read["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for mandatory in [
            "BilledCost",
            "BillingAccountId",
            "BillingAccountName",
            "BillingCurrency",
            "BillingPeriodEnd",
            "BillingPeriodStart",
            "ChargeCategory",
            "ChargeClass",
            "ChargeDescription",
            "ChargePeriodEnd",
            "ChargePeriodStart",
            "ContractedCost",
            "EffectiveCost",
            "InvoiceIssuerName",
            "ListCost",
            "PricingQuantity",
            "PricingUnit",
            "ProviderName",
            "PublisherName",
            "ServiceCategory",
            "ServiceName",
        ] {
            assert!(columns.contains(&mandatory), "{format:?} lacks {mandatory}");
        }
        let groups = read["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "no unpriced rows in FOCUS: {read}");
        let eur = groups.iter().find(|g| g[0] == json!("EUR")).unwrap();
        let usd = groups.iter().find(|g| g[0] == json!("USD")).unwrap();
        // Rows, requests, BilledCost, x_ReportedCost, EffectiveCost, ListCost,
        // ConsumedQuantity, ContractedCost.
        assert_eq!((eur[1].clone(), eur[2].clone()), (json!(20), json!(5)));
        assert_eq!((usd[1].clone(), usd[2].clone()), (json!(36), json!(11)));
        assert_eq!(duck_dec(&eur[3]), "0.014", "{format:?}");
        assert_eq!(duck_dec(&usd[3]), "0.003588", "{format:?}");
        assert_eq!(duck_dec(&usd[4]), "0.00042", "reported once per request");
        assert_eq!(duck_dec(&usd[5]), "0.003588");
        assert_eq!(duck_dec(&usd[8]), "0.003588");
        // List cost: before acme's discount (11 × 0.000345).
        assert_eq!(duck_dec(&usd[6]), "0.003795");
        assert_eq!(duck_dec(&eur[6]), "0.014");
        // Tokens plus one request per fee row.
        assert_eq!(duck_dec(&usd[7]), (11 * 1500).to_string());
        assert_eq!(duck_dec(&eur[7]), (5 * 1500 + 5).to_string());
        // Charge periods are the rows' hours, inside the billing period.
        let (lo, hi) = (
            groups.iter().map(|g| g[9].as_str().unwrap()).min().unwrap(),
            groups
                .iter()
                .map(|g| g[10].as_str().unwrap())
                .max()
                .unwrap(),
        );
        let duck_time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S+00").to_string();
        assert_eq!(lo, duck_time(month.start()));
        assert_eq!(hi, duck_time(month.end()));
        for g in groups {
            assert_eq!(g[12], json!("Usage/AI and Machine Learning"));
            let billing = g[11].as_str().unwrap();
            assert!(
                billing.starts_with(&month.start().format("%Y-%m-%d").to_string())
                    && billing.contains(&month.end().format("%Y-%m-%d").to_string())
                    && !billing.contains(';'),
                "{billing}"
            );
        }
        assert_eq!(
            read["components"],
            json!({"input": 16, "cache_read": 16, "output": 16, "reasoning": 3,
                "request_fee": 5}),
            "{format:?}"
        );
    }

    // The archive step takes the export's totals: they match the month's
    // partition, which goes; the neighbouring months stay.
    while db::fold_rollups(&pool, month.end())
        .await
        .unwrap()
        .is_some()
    {}
    let file = db::ArchiveFile {
        format: "parquet".into(),
        path: path_of(&dir, ExportFormat::Parquet, month),
        sha256: "00".repeat(32),
    };
    let exported = report.ledger.month_totals();
    assert_eq!(exported.rows, 20);
    db::archive_partition(&pool, month.start(), &exported, &file, s.clock.now())
        .await
        .unwrap();
    let job = Job::new(month, ExportFormat::Parquet);
    let (again, _) = export::run(&s.pool, &s.clock, &job, Vec::new())
        .await
        .unwrap();
    assert_eq!((again.ledger.rows, again.rows_written), (0, 0));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 4, "the neighbouring months' rows");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn path_of(dir: &Path, format: ExportFormat, month: Period) -> String {
    dir.join(format.default_file_name(month))
        .display()
        .to_string()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_current_month_is_not_exported(pool: PgPool) {
    let s = state(pool).await;
    let now = s.clock.now();
    let month = Period::containing(now);
    let job = Job::new(month, ExportFormat::FocusCsv);
    let Err(e) = export::run(&s.pool, &s.clock, &job, Vec::new()).await else {
        panic!("the month of {now} was exported before its end");
    };
    assert_eq!(
        e.to_string(),
        format!(
            "period {month} is not over yet: it ends at {} and it is now {}; \
             only a closed month can be exported",
            month.end().to_rfc3339_opts(SecondsFormat::Secs, true),
            now.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    );
    // Its last instant is still too early; its end is not.
    s.clock.set(month.end() - Duration::milliseconds(1));
    assert!(export::run(&s.pool, &s.clock, &job, Vec::new())
        .await
        .is_err());
    s.clock.set(month.end());
    let (report, csv) = export::run(&s.pool, &s.clock, &job, Vec::new())
        .await
        .unwrap();
    assert_eq!((report.ledger.rows, report.rows_written), (0, 0));
    let header = String::from_utf8(csv).unwrap();
    assert!(
        header.starts_with("BilledCost,BillingAccountId,"),
        "{header}"
    );
    assert_eq!(header.lines().count(), 1);
}

/// `collector ledger archive --before <this month>`: the two closed months
/// with rows (the populated one and the one before it) are exported,
/// checked and dropped; their files read back with DuckDB to the ledger's
/// figures; the current month stays; summaries of the archived month
/// answer as before, from the daily rollups, saying so.
#[sqlx::test(migrations = "../migrations")]
async fn archive_exports_checks_and_drops_every_closed_month_before(pool: PgPool) {
    let s = state(pool.clone()).await;
    let month = closed_month(s.clock.now());
    let current = Period::containing(s.clock.now());
    populate(&s, month).await;
    while db::fold_rollups(&pool, current.start())
        .await
        .unwrap()
        .is_some()
    {}
    let summary_uri = format!(
        "/v1/summary?group_by=day&start={}&end={}",
        month.start().to_rfc3339_opts(SecondsFormat::Secs, true),
        month.end().to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let (_, before) = call(&s, "GET", &summary_uri, Some(ADMIN), None).await;
    let expected = db::month_totals(&pool, month.start()).await.unwrap();
    let month_rows = month_digest(&pool, month).await;

    let dir = std::env::temp_dir().join(format!("ledger-archive-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    // A month that has not ended cannot be archived.
    let next = Period::containing(current.end());
    let err = collector::archive::run(&pool, &s.clock, next, &dir)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only closed months"), "{err}");

    let archived = collector::archive::run(&pool, &s.clock, current, &dir)
        .await
        .unwrap();
    let previous = Period::containing(month.start() - Duration::milliseconds(1));
    // Months with rows; the empty partitions made ahead by the migration
    // (at the real time, before a pinned test clock) go too, with 0 rows.
    let got: Vec<(String, i64)> = archived
        .iter()
        .filter(|a| a.rows > 0)
        .map(|a| (a.period.to_string(), a.rows))
        .collect();
    assert_eq!(got, [(previous.to_string(), 2), (month.to_string(), 20)]);
    let ours = archived.iter().find(|a| a.period == month).unwrap();
    assert_eq!(ours.cost, expected.cost);
    assert_eq!(
        ours.cost
            .values()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["0.014", "0.003588"]
    );
    // The file holds every row and the same sums, read by DuckDB; its
    // checksum is the one recorded.
    let read = duckdb(ExportFormat::Parquet, &ours.file);
    let groups = read["groups"].as_array().unwrap();
    let rows: i64 = groups.iter().map(|g| g[1].as_i64().unwrap()).sum();
    assert_eq!(rows, 20);
    let eur = groups.iter().find(|g| g[0] == "EUR").unwrap();
    assert_eq!(duck_dec(&eur[3]), "0.014");
    let usd = groups.iter().find(|g| g[0] == "USD").unwrap();
    assert_eq!(duck_dec(&usd[3]), "0.003588");
    let bytes = std::fs::read(&ours.file).unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), ours.sha256);
    let recorded: (i64, String) =
        sqlx::query_as("SELECT rows, file_sha256 FROM ledger_archives WHERE month = $1")
            .bind(month.start())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, (20, ours.sha256.clone()));

    // Only the current month is left in the ledger.
    let left: Vec<(String,)> = sqlx::query_as("SELECT request_id FROM transactions ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [("a-after".to_string(),), ("i-after".to_string(),)]);
    // The archived month's summary is unchanged, and says where it comes from.
    let (status, after) = call(&s, "GET", &summary_uri, Some(ADMIN), None).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{after}");
    assert_eq!(after["groups"], before["groups"]);
    assert_eq!(after["archived"]["months"], json!([month.to_string()]));
    // Nothing is left to archive; the files stay.
    let again = collector::archive::run(&pool, &s.clock, current, &dir)
        .await
        .unwrap();
    assert!(again.is_empty());
    assert!(ours.file.exists());

    // Restored as docs/operations.md says: DuckDB writes the file as CSV
    // (flags as an array literal), COPY loads it into a table shaped like
    // `transactions`, and ledger_load puts the rows back, exactly.
    let csv = dir.join("restore.csv");
    let out = Command::new(python())
        .arg("-c")
        .arg(RESTORE_CSV)
        .arg(&ours.file)
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("CREATE TABLE restore (LIKE transactions)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY restore ({}) FROM STDIN (FORMAT csv, HEADER true)",
            EXPORT_COLUMNS
        ))
        .await
        .unwrap();
    copy.send(std::fs::read(&csv).unwrap()).await.unwrap();
    copy.finish().await.unwrap();
    let loaded: i64 = sqlx::query_scalar("SELECT ledger_load('restore', true)")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(loaded, 20);
    assert_eq!(month_digest(&pool, month).await, month_rows);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Our Parquet's columns, in the file's order (docs/export.md).
const EXPORT_COLUMNS: &str = "request_id, tenant_id, api_key_id, provider, model, route,
    http_status, streamed, occurred_at, received_at, ttfb_ms, duration_ms, input_tokens,
    output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
    reasoning_tokens, status, currency, cost, cost_input, cost_cache_read, cost_cache_write,
    cost_output, cost_reasoning, cost_request_fee, cost_discount, price_version, reported_cost,
    flags";

/// An archived Parquet file as CSV for PostgreSQL's COPY.
const RESTORE_CSV: &str = r#"
import duckdb, sys
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"""COPY (SELECT * REPLACE ('{{' || array_to_string(flags, ',') || '}}' AS flags)
    FROM read_parquet('{sys.argv[1]}')) TO '{sys.argv[2]}' (HEADER)""")
"#;

/// Every exported column of a month's rows (all but `price_id`, which
/// the file names by `price_version`), as one digest.
async fn month_digest(pool: &PgPool, month: Period) -> (i64, String) {
    sqlx::query_as(&format!(
        "SELECT count(*), md5(string_agg(row({EXPORT_COLUMNS})::text, '|'
            ORDER BY tenant_id, occurred_at, request_id))
         FROM transactions WHERE occurred_at >= $1 AND occurred_at < $2"
    ))
    .bind(month.start())
    .bind(month.end())
    .fetch_one(pool)
    .await
    .unwrap()
}
