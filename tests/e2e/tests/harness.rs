//! Every kind of process the suite starts, in one test: Envoy with the
//! built filter, the demo upstream, a collector on a private PostgreSQL
//! cluster that the test restarts itself. It bills one request across the
//! restart.
//!
//! `./dev test` also runs it as the stand-in for a failing or interrupted
//! suite (`DEV_CHECK_THEN=fail` or `hang`, with `DEV_CHECK_PIDS` naming a
//! file for the pids), then checks that none of those processes is left.

use std::io::Write;
use std::time::Duration;

use e2e::{Stack, StackOptions};
use serde_json::json;

fn postmaster_pid(cluster_url_port: u16) -> Option<String> {
    // The private cluster lives under the temp dir; its pid file names it.
    let dir = std::env::temp_dir();
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let text = std::fs::read_to_string(e.path().join("postmaster.pid")).ok()?;
        let mut lines = text.lines();
        let pid = lines.next()?.to_string();
        let port = lines.nth(2)?.trim().parse::<u16>().ok()?;
        (port == cluster_url_port).then_some(pid)
    })
}

#[tokio::test]
async fn every_kind_of_process_comes_up_and_bills_across_a_database_restart() {
    let mut stack = Stack::start("harness", StackOptions::default())
        .await
        .unwrap();
    let (cluster, collector) = stack.collector_on_private_cluster().await.unwrap();
    let c = cluster.clone_handle();
    tokio::task::spawn_blocking(move || c.stop("fast").and_then(|()| c.start()))
        .await
        .unwrap()
        .unwrap();

    let r = stack
        .http
        .post(stack.envoy_url("/v1/chat/completions"))
        .header("x-tenant-id", "harness")
        .header("x-request-id", "harness-1")
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows = stack
        .wait_rows("harness", 1, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(rows[0]["request_id"], "harness-1");
    assert_eq!(rows[0]["cost"], "0.000345");

    let Ok(then) = std::env::var("DEV_CHECK_THEN") else {
        return;
    };
    let pids = [
        stack.envoy.pid().map(|p| p.to_string()),
        stack.upstream.pid().map(|p| p.to_string()),
        collector.pid().map(|p| p.to_string()),
        postmaster_pid(cluster.port),
    ];
    let listed: Vec<String> = pids.into_iter().flatten().collect();
    assert_eq!(listed.len(), 4, "every pid must be known: {listed:?}");
    if let Ok(path) = std::env::var("DEV_CHECK_PIDS") {
        let mut f = std::fs::File::create(path).unwrap();
        writeln!(f, "{}", listed.join("\n")).unwrap();
    }
    match then.as_str() {
        "fail" => {
            // Skip every destructor, as a crashing or killed suite would.
            std::process::exit(1)
        }
        "hang" => loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
        },
        other => panic!("DEV_CHECK_THEN={other:?}: expected fail or hang"),
    }
}
