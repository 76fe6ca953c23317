//! Replicas in agreement (collector/src/changes.rs, migration 0020): two
//! `AppState`s over one database stand for two collector replicas. A price,
//! a tenant pricing agreement or a model alias changed through replica A
//! prices the very next record replica B ingests: B reloads on the
//! notification within milliseconds, and even before it arrives B checks
//! the generation before it writes (ingest) or prices (quotes) and reloads
//! first. Token revocations, a lost listener connection and the price sync
//! are covered too.

mod common;

use std::str::FromStr;
use std::time::{Duration as StdDuration, Instant};

use axum::http::StatusCode;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use collector::changes::{self, Cause};
use collector::AppState;
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

/// No test waits on the fallback poll: it is an hour here.
const NO_POLL: StdDuration = StdDuration::from_secs(3600);
/// How long a test waits for a reload it expects within milliseconds.
const SHORT: StdDuration = StdDuration::from_secs(2);

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// The cost of `common::record`'s usage (1200 input of which 200 cached
/// reads, 300 output) at per-million prices.
fn cost(input: &str, cache_read: &str, output: &str) -> Decimal {
    (d(input) * Decimal::from(1000)
        + d(cache_read) * Decimal::from(200)
        + d(output) * Decimal::from(300))
        / Decimal::from(1_000_000)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Replica B of `a`: its own price book, writer, token cache and replica
/// state over the same database, on the same clock.
async fn replica_of(a: &AppState) -> AppState {
    let b = AppState::new(
        a.pool.clone(),
        collector::price_book::PriceBook::empty(),
        Some(INGEST),
        Some(ADMIN),
        1 << 20,
    )
    .with_clock(a.clock.clone());
    b.reload_prices().await.unwrap();
    b
}

/// Starts `s`'s change listener (and a poll that never fires in a test)
/// and waits until it listens.
async fn listening(s: &AppState) {
    tokio::spawn(changes::run(s.clone(), NO_POLL));
    let mut up = s.replica.listening();
    tokio::time::timeout(SHORT * 5, up.wait_for(|up| *up))
        .await
        .expect("the change listener did not connect")
        .unwrap();
}

/// Waits until `s` prices with pricing generation `at_least`; returns when
/// the reload was seen, measured from `since`.
async fn reloaded(s: &AppState, at_least: i64, since: Instant) -> StdDuration {
    let mut g = s.replica.pricing_generation();
    tokio::time::timeout(SHORT, g.wait_for(|g| *g >= Some(at_least)))
        .await
        .unwrap_or_else(|_| panic!("no reload to generation {at_least} within {SHORT:?}"))
        .unwrap();
    since.elapsed()
}

async fn generation(pool: &PgPool) -> i64 {
    collector::db::generations(pool).await.unwrap().pricing
}

/// (cost, price_version) of a priced ledger row.
async fn priced(pool: &PgPool, id: &str) -> (Decimal, String) {
    let (status, cost, version): (String, Option<Decimal>, Option<String>) = sqlx::query_as(
        "SELECT status, cost, price_version FROM transactions WHERE request_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("{id}: {e}"));
    match (status.as_str(), cost, version) {
        ("priced", Some(c), Some(v)) => (c, v),
        other => panic!("{id} is not priced: {other:?}"),
    }
}

/// A record of `tenant` for `model` from openai, an hour before the clock.
fn rec(s: &AppState, id: &str, tenant: &str, model: &str) -> Value {
    record(
        id,
        tenant,
        model,
        (s.clock.now() - Duration::hours(1)).timestamp_millis(),
    )
}

/// One change made through replica A's API, and what B must then charge.
struct Change {
    what: &'static str,
    method: &'static str,
    uri: &'static str,
    body: Value,
    /// The record B ingests next: (tenant, model).
    record: (&'static str, &'static str),
    cost: Decimal,
    /// A part of the row's price_version only this change explains.
    version: String,
}

/// A new gpt-4o-mini price (from two hours ago), 10 % off for acme, and a
/// global alias `dep` → gpt-4o: three changes, each visible in B's very
/// next record.
fn changes(s: &AppState) -> Vec<Change> {
    let from = rfc3339(s.clock.now() - Duration::hours(2));
    let new_price = cost("1.00", "0.50", "2.00");
    vec![
        Change {
            what: "price",
            method: "PUT",
            uri: "/v1/prices/gpt-4o-mini",
            body: json!({"input": "1.00", "output": "2.00", "cache_read": "0.50",
                         "effective_from": from}),
            record: ("acme", "gpt-4o-mini"),
            cost: new_price,
            version: format!("gpt-4o-mini@{from}"),
        },
        Change {
            what: "tenant pricing agreement",
            method: "POST",
            uri: "/v1/tenants/acme/pricing",
            body: json!({"discount": {"percent": "10"}, "effective_from": from}),
            record: ("acme", "gpt-4o-mini"),
            cost: new_price * d("0.9"),
            version: format!("tenant:acme/*@{from}"),
        },
        Change {
            what: "model alias",
            method: "PUT",
            uri: "/v1/model-aliases",
            body: json!({"alias": "dep", "model": "gpt-4o"}),
            record: ("globex", "dep"),
            // gpt-4o as bundled: 2.50 input, 1.25 cached, 10.00 output.
            cost: cost("2.50", "1.25", "10.00"),
            version: "alias:*/*/dep".into(),
        },
    ]
}

/// B listens: each change through A reloads B by notification (waited for
/// with a short timeout, never a fixed sleep), and B's next record is
/// priced with it; B's fence never had to reload.
#[sqlx::test(migrations = "../migrations")]
async fn a_change_through_one_replica_prices_the_next_record_on_the_other(pool: PgPool) {
    let a = state(pool.clone()).await;
    let b = replica_of(&a).await;
    listening(&b).await;
    let current = generation(&pool).await;
    assert_eq!(b.price_book().generation(), Some(current));

    for (i, c) in changes(&a).into_iter().enumerate() {
        let before = generation(&pool).await;
        let sent = Instant::now();
        let (status, body) = call(&a, c.method, c.uri, Some(ADMIN), Some(c.body)).await;
        assert!(status.is_success(), "{}: {status} {body}", c.what);
        let after = generation(&pool).await;
        assert_eq!(
            after,
            before + 1,
            "{}: one statement, one generation",
            c.what
        );
        let took = reloaded(&b, after, sent).await;
        println!(
            "MEASURED {}: API call on A (commit and A's own reload) to B's reload done: {:.2} ms",
            c.what,
            took.as_secs_f64() * 1000.0
        );
        assert_eq!(b.price_book().generation(), Some(after), "{}", c.what);

        let id = format!("next-{i}");
        let (tenant, model) = c.record;
        let answer = ingest(&b, vec![rec(&b, &id, tenant, model)]).await;
        assert_eq!(answer["accepted"], 1, "{answer}");
        let (charged, version) = priced(&pool, &id).await;
        assert_eq!(charged, c.cost, "{}: {version}", c.what);
        assert!(version.contains(&c.version), "{}: {version}", c.what);
    }
    assert_eq!(b.replica.reloads(Cause::Notification), 3);
    assert_eq!(
        b.replica.reloads(Cause::Fence),
        0,
        "every notification arrived before the next record"
    );
}

/// B does not listen at all (its notification is late, or its listener is
/// down): the very next record B ingests is still priced with the change,
/// since B's writer reads the generation before it writes and hands the
/// batch back to be priced again after a reload.
#[sqlx::test(migrations = "../migrations")]
async fn a_record_ingested_before_the_notification_arrives_is_priced_with_the_change(pool: PgPool) {
    let a = state(pool.clone()).await;
    let b = replica_of(&a).await;
    for (i, c) in changes(&a).into_iter().enumerate() {
        let stale = b.price_book().generation();
        let (status, body) = call(&a, c.method, c.uri, Some(ADMIN), Some(c.body)).await;
        assert!(status.is_success(), "{}: {status} {body}", c.what);
        assert_eq!(b.price_book().generation(), stale, "B has heard nothing");

        let id = format!("fenced-{i}");
        let (tenant, model) = c.record;
        ingest(&b, vec![rec(&b, &id, tenant, model)]).await;
        let (charged, version) = priced(&pool, &id).await;
        assert_eq!(charged, c.cost, "{}: {version}", c.what);
        assert!(version.contains(&c.version), "{}: {version}", c.what);
        let current = generation(&pool).await;
        assert_eq!(b.price_book().generation(), Some(current));
    }
    assert_eq!(b.replica.reloads(Cause::Fence), 3, "one reload per change");
    // Nothing changed since: the next records reload nothing.
    ingest(&b, vec![rec(&b, "again", "acme", "gpt-4o-mini")]).await;
    assert_eq!(b.replica.reloads(Cause::Fence), 3);
    // A quote reads the generation before it prices, too: an alias made
    // through A is quoted by B at once.
    let (status, body) = call(
        &a,
        "PUT",
        "/v1/model-aliases",
        Some(ADMIN),
        Some(json!({"alias": "dep2", "model": "gpt-4o-mini"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, quote) = call(
        &b,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(json!({"model": "dep2", "provider": "openai",
                    "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    assert_eq!(quote["alias"]["model"], "gpt-4o-mini", "{quote}");
    // The new gpt-4o-mini price of the first change.
    assert_eq!(
        d(quote["cost"]["total"].as_str().unwrap()),
        cost("1.00", "0.50", "2.00"),
        "{quote}"
    );
    assert_eq!(b.replica.reloads(Cause::Fence), 4);
}

/// The delay from a commit on one connection (any writer: here a plain
/// statement, as psql or `collector prices import` would run it) to the
/// other replica's reload being done, over 20 changes.
#[sqlx::test(migrations = "../migrations")]
async fn commit_to_reload_delay(pool: PgPool) {
    let a = state(pool.clone()).await;
    let b = replica_of(&a).await;
    listening(&b).await;
    let mut delays = Vec::new();
    for i in 0..20 {
        let entry: collector::pricing::PriceEntry = serde_json::from_value(json!({
            "model": format!("delay-model-{i}"), "effective_from": "2025-01-01T00:00:00Z",
            "input": "1.00", "output": "2.00"}))
        .unwrap();
        let before = Instant::now();
        collector::db::insert_prices(&pool, &[entry], "test")
            .await
            .unwrap();
        // The commit happened between `before` and now.
        let committed = Instant::now();
        let g = generation(&pool).await;
        let upper = reloaded(&b, g, before).await;
        let lower = upper.saturating_sub(committed - before);
        delays.push((lower, upper));
    }
    delays.sort();
    // What part of that is the reload itself (reading the whole catalog).
    let mut loads = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        b.reload_prices().await.unwrap();
        loads.push(started.elapsed());
    }
    loads.sort();
    let ms = |d: StdDuration| d.as_secs_f64() * 1000.0;
    let (median, max) = (delays[delays.len() / 2], delays[delays.len() - 1]);
    println!(
        "MEASURED commit to reload done on the other replica, 20 changes: median {:.2}..{:.2} ms, max {:.2}..{:.2} ms (bounds: from the statement's return, from its start); a reload alone: median {:.2} ms, max {:.2} ms",
        ms(median.0),
        ms(median.1),
        ms(max.0),
        ms(max.1),
        ms(loads[loads.len() / 2]),
        ms(loads[loads.len() - 1])
    );
    assert_eq!(b.replica.reloads(Cause::Notification), 20);
    assert!(
        b.price_book()
            .catalog()
            .unwrap()
            .history("delay-model-19")
            .len()
            == 1
    );
}

/// The listener's connection dies (a PostgreSQL restart, a proxy cutting
/// idle connections): it connects again, and catches up once on what was
/// committed while nobody listened; the poll is out of the picture.
#[sqlx::test(migrations = "../migrations")]
async fn a_lost_listener_reconnects_and_catches_up(pool: PgPool) {
    let a = state(pool.clone()).await;
    let b = replica_of(&a).await;
    listening(&b).await;
    let mut up = b.replica.listening();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(killed, vec![true], "exactly one listener connection");
    tokio::time::timeout(SHORT, up.wait_for(|up| !*up))
        .await
        .expect("the listener did not notice its connection died")
        .unwrap();
    // Committed while nobody listens (the listener waits 100 ms before it
    // connects again): its notification reaches no one.
    let from = rfc3339(a.clock.now() - Duration::hours(2));
    let (status, body) = call(
        &a,
        "POST",
        "/v1/tenants/acme/pricing",
        Some(ADMIN),
        Some(json!({"discount": {"percent": "25"}, "effective_from": from})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let g = generation(&pool).await;
    reloaded(&b, g, Instant::now()).await;
    tokio::time::timeout(SHORT, up.wait_for(|up| *up))
        .await
        .expect("the listener did not come back")
        .unwrap();
    assert_eq!(b.replica.reconnects(), 1);
    let caught_up = b.replica.reloads(Cause::Reconnect);
    let notified = b.replica.reloads(Cause::Notification);
    println!("MEASURED after the listener was cut: {caught_up} catch-up reload(s), {notified} by notification");
    assert_eq!(caught_up + notified, 1, "one reload, and not by the poll");
    assert_eq!(b.replica.reloads(Cause::Poll), 0);
    // B prices with it without a fence reload.
    ingest(&b, vec![rec(&b, "after-cut", "acme", "gpt-4o-mini")]).await;
    let (charged, version) = priced(&pool, "after-cut").await;
    // Bundled gpt-4o-mini: 0.15 input, 0.075 cached, 0.60 output; 25 % off.
    assert_eq!(
        charged,
        cost("0.15", "0.075", "0.60") * d("0.75"),
        "{version}"
    );
    assert_eq!(b.replica.reloads(Cause::Fence), 0);
}

/// A token revoked on A stops working on B as soon as B hears of it, even
/// though B caches verified tokens for an hour here.
#[sqlx::test(migrations = "../migrations")]
async fn a_token_revoked_on_one_replica_is_refused_by_the_other_at_once(pool: PgPool) {
    let a = state(pool.clone()).await;
    let b = replica_of(&a)
        .await
        .with_token_cache_ttl(StdDuration::from_secs(3600));
    listening(&b).await;
    let (status, created) = call(
        &a,
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(json!({"tenant_id": "acme", "name": "replicas"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_i64().unwrap();
    let summary = "/v1/transactions?tenant_id=acme";
    let (status, body) = call(&b, "GET", summary, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "B verified and cached it: {body}");

    let revoked_at = Instant::now();
    let (status, body) = call(&a, "DELETE", &format!("/v1/tokens/{id}"), Some(ADMIN), None).await;
    assert!(status.is_success(), "{status} {body}");
    let deadline = revoked_at + SHORT;
    loop {
        let (status, _) = call(&b, "GET", summary, Some(&token), None).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            Instant::now() < deadline,
            "B still accepts the revoked token after {SHORT:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(2)).await;
    }
    println!(
        "MEASURED token revoked on A to refused on B: {:.2} ms",
        revoked_at.elapsed().as_secs_f64() * 1000.0
    );
}

/// The price sync compares the list with the catalog as it is, not as the
/// syncing replica last loaded it: a change another replica synced a
/// moment ago is not added again (the turns of replicas syncing at once
/// are covered end to end, tests/e2e/tests/replicas.rs).
#[sqlx::test(migrations = "../migrations")]
async fn a_price_synced_by_one_replica_is_not_added_again_by_the_other(pool: PgPool) {
    use axum::routing::get;
    let a = state(pool.clone()).await;
    let b = replica_of(&a).await;
    let list = json!({"data": [{"id": "acme/synced", "pricing": {"prompt": "0.000001", "completion": "0.000002"}}]})
        .to_string();
    let app = axum::Router::new().route("/models", get(move || async move { list }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/models", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::new();
    let format = collector::config::ImportFormat::Openrouter;

    let first = collector::sync::sync_once(&a, &client, &url, format)
        .await
        .unwrap();
    assert_eq!(first.added, 1);
    a.clock.advance(Duration::seconds(1));
    // B has heard nothing of it and syncs a second later.
    assert!(b
        .price_book()
        .catalog()
        .unwrap()
        .history("acme/synced")
        .is_empty());
    let second = collector::sync::sync_once(&b, &client, &url, format)
        .await
        .unwrap();
    assert_eq!((second.added, second.unchanged), (0, 1));
    let versions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM price_catalog WHERE model = 'acme/synced'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(versions, 1);
}

/// A reservation on B right after a price change through A is estimated
/// at the new price: B reads the generation under the tenant's lock and
/// reloads first.
#[sqlx::test(migrations = "../migrations")]
async fn a_reservation_on_the_other_replica_is_estimated_at_the_new_price(pool: PgPool) {
    let a = state(pool.clone()).await;
    let b = replica_of(&a).await;
    let (status, body) = call(
        &a,
        "POST",
        "/v1/budgets",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "acme", "limit": "1.00", "currency": "USD",
                    "period": "total", "hard": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let reservation = |id: &str| {
        json!({"request_id": id, "tenant_id": "acme", "provider": "openai",
               "model": "gpt-4o-mini", "max_input_tokens": 1000, "max_output_tokens": 1000})
    };
    let reserved = |answer: &Value| d(answer["reserved"].as_str().unwrap());
    let (status, before) = call(
        &b,
        "POST",
        "/v1/reservations",
        Some(INGEST),
        Some(reservation("r1")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{before}");
    // Bundled gpt-4o-mini: 1000 × 0.15 + 1000 × 0.60 per million.
    assert_eq!(reserved(&before), d("0.00075"), "{before}");

    let from = rfc3339(a.clock.now() - Duration::hours(2));
    let (status, body) = call(
        &a,
        "PUT",
        "/v1/prices/gpt-4o-mini",
        Some(ADMIN),
        Some(json!({"input": "1.00", "output": "2.00", "effective_from": from})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, after) = call(
        &b,
        "POST",
        "/v1/reservations",
        Some(INGEST),
        Some(reservation("r2")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    // 1000 × 1.00 + 1000 × 2.00 per million.
    assert_eq!(reserved(&after), d("0.003"), "{after}");
    assert_eq!(b.replica.reloads(Cause::Fence), 1);
}
