//! End-to-end harness: starts the real collector binary on a fresh database
//! of the test PostgreSQL, the demo upstream, and the real Envoy loading the
//! built filter with the repository's `envoy/envoy.yaml` (ports and plugin
//! settings substituted). Every process is killed on drop.
//!
//! Environment (set by `./dev test`): `DATABASE_URL` (a server the tests may
//! create databases on), `BILLING_WASM`, `BILLING_NATIVE`, `COLLECTOR_BIN`,
//! `ENVOY_BIN`, and `BILLING_ARTIFACT` (`wasm`, the default, or `native`):
//! which build of the filter every test runs against.

pub mod eventstream;
pub mod fixtures;
pub mod pg;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub const INGEST_TOKEN: &str = "e2e-ingest-token";
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default))
}

/// Which build of the filter Envoy loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// The proxy-wasm plugin (`filter.wasm`, V8).
    Wasm,
    /// The dynamic module (`libllm_billing.so`).
    Native,
}

impl Artifact {
    /// The artifact of this test run (`BILLING_ARTIFACT`).
    pub fn current() -> Artifact {
        match std::env::var("BILLING_ARTIFACT").as_deref() {
            Ok("native") => Artifact::Native,
            _ => Artifact::Wasm,
        }
    }

    /// Where Envoy puts the filter's own stats.
    pub fn stat_prefix(self) -> &'static str {
        match self {
            Artifact::Wasm => "wasmcustom.",
            Artifact::Native => "dynamicmodulescustom.",
        }
    }

    /// A stat name as written for the wasm plugin, for this artifact.
    pub fn stat(self, wasm_name: &str) -> String {
        match wasm_name.strip_prefix("wasmcustom.") {
            Some(rest) => format!("{}{rest}", self.stat_prefix()),
            None => wasm_name.to_string(),
        }
    }
}

/// The built filter of `artifact`, as an absolute path.
pub fn artifact_path(artifact: Artifact) -> Result<PathBuf, BoxError> {
    let path = match artifact {
        Artifact::Wasm => env_path("BILLING_WASM", "target/wasm32-wasip1/release/filter.wasm"),
        Artifact::Native => env_path("BILLING_NATIVE", "target/release/libllm_billing.so"),
    };
    std::fs::canonicalize(&path)
        .map_err(|e| format!("{}: {e} (build the filter first)", path.display()).into())
}

/// The HTTP filter entry that loads the billing filter with `plugin` (its
/// JSON configuration), as an Envoy config value: the same JSON for both.
pub fn billing_filter(artifact: Artifact, plugin: &Value) -> Result<Value, BoxError> {
    let path = artifact_path(artifact)?.display().to_string();
    let config = serde_json::json!({
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": plugin.to_string(),
    });
    Ok(match artifact {
        Artifact::Wasm => serde_json::json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "llm_billing", "root_id": "llm_billing",
                    "configuration": config,
                    "vm_config": {"vm_id": "llm_billing", "runtime": "envoy.wasm.runtime.v8",
                                  "code": {"local": {"filename": path}}}
                }
            }
        }),
        Artifact::Native => serde_json::json!({
            "name": "envoy.filters.http.dynamic_modules",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                "dynamic_module_config": {"name": "llm_billing", "do_not_close": true,
                                          "module": {"local": {"filename": path}}},
                "filter_name": "llm_billing",
                "filter_config": config,
            }
        }),
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A child process killed when dropped, with its log file kept for failures.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Result<Proc, BoxError> {
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = cmd
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates a fresh, empty database and returns its URL.
pub async fn fresh_database(prefix: &str) -> Result<String, BoxError> {
    let base =
        std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set (run ./dev test)")?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await?;
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        DB_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let (root, _) = base
        .rsplit_once('/')
        .ok_or("DATABASE_URL has no database part")?;
    Ok(format!("{root}/{name}"))
}

pub async fn wait_http(url: &str, timeout: Duration) -> Result<(), BoxError> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not become ready in {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the collector binary on `database_url`.
pub async fn start_collector(
    database_url: &str,
    port: u16,
    log_dir: &Path,
    name: &str,
) -> Result<Proc, BoxError> {
    start_collector_with(database_url, port, log_dir, name, &[]).await
}

/// Starts the collector binary on `database_url` with more environment
/// (`WEBHOOK_SECRET`, `PRICE_SYNC_URL`, ...).
pub async fn start_collector_with(
    database_url: &str,
    port: u16,
    log_dir: &Path,
    name: &str,
    env: &[(&str, String)],
) -> Result<Proc, BoxError> {
    let bin = env_path("COLLECTOR_BIN", "target/debug/collector");
    let mut cmd = Command::new(bin);
    cmd.env("DATABASE_URL", database_url)
        .env("COLLECTOR_ADDR", format!("127.0.0.1:{port}"))
        .env("INGEST_TOKEN", INGEST_TOKEN)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(name, &mut cmd, log_dir)?;
    wait_http(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| format!("{e}\n{}", proc.log_text()))?;
    Ok(proc)
}

/// Renders the repository's envoy/envoy.yaml (or, for the native module,
/// envoy/envoy-native.yaml) for the given ports and plugin overrides.
pub fn render_envoy_config(
    listen: u16,
    admin: u16,
    upstream: u16,
    collector: u16,
    plugin_overrides: &Value,
) -> Result<String, BoxError> {
    let artifact = Artifact::current();
    let (file, built, path) = match artifact {
        Artifact::Wasm => (
            "envoy/envoy.yaml",
            "filename: target/wasm32-wasip1/release/filter.wasm",
            artifact_path(Artifact::Wasm)?,
        ),
        Artifact::Native => (
            "envoy/envoy-native.yaml",
            "filename: target/release/libllm_billing.so",
            artifact_path(Artifact::Native)?,
        ),
    };
    let template = std::fs::read_to_string(repo_root().join(file))?;
    let mut out = template
        .replace("port_value: 10000", &format!("port_value: {listen}"))
        .replace("port_value: 9901", &format!("port_value: {admin}"))
        .replace("port_value: 8090", &format!("port_value: {upstream}"))
        .replace("port_value: 8081", &format!("port_value: {collector}"))
        .replace(built, &format!("filename: {}", path.display()));
    // Swap the plugin JSON (the block under `value: |`) for the merged one.
    let start = out
        .find("value: |")
        .ok_or("plugin configuration not found in the Envoy config")?;
    let body_start = out[start..]
        .find('\n')
        .map(|i| start + i + 1)
        .ok_or("bad yaml")?;
    let mut values = serde_json::Deserializer::from_str(&out[body_start..]).into_iter::<Value>();
    let mut config: Value = values.next().ok_or("no plugin JSON under `value: |`")??;
    let end = body_start + values.byte_offset();
    let indent: String = out[body_start..]
        .chars()
        .take_while(|c| *c == ' ')
        .collect();
    config["ingest_token"] = Value::from(INGEST_TOKEN);
    if let (Some(map), Some(overrides)) = (config.as_object_mut(), plugin_overrides.as_object()) {
        for (k, v) in overrides {
            map.insert(k.clone(), v.clone());
        }
    }
    out.replace_range(body_start..end, &format!("{indent}{config}"));
    Ok(out)
}

/// `yaml` (a rendered Envoy config) with the `billing_collector` cluster's
/// one endpoint replaced by one endpoint per port in `ports`: Envoy's
/// default load balancing (round robin) then spreads the filter's calls
/// over every collector replica.
pub fn with_collector_endpoints(yaml: &str, ports: &[u16]) -> Result<String, BoxError> {
    let cluster = yaml
        .find("- name: billing_collector")
        .ok_or("no billing_collector cluster")?;
    let start = cluster
        + yaml[cluster..]
            .find("- endpoint:")
            .ok_or("billing_collector has no endpoint")?;
    let socket = start
        + yaml[start..]
            .find("socket_address:")
            .ok_or("billing_collector endpoint has no socket_address")?;
    let end = yaml[socket..].find('\n').map_or(yaml.len(), |i| socket + i);
    let entry = &yaml[start..end];
    let port_at = entry.find("port_value: ").ok_or("no port_value")? + "port_value: ".len();
    let port: String = entry[port_at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let line_start = yaml[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = &yaml[line_start..start];
    let entries: Vec<String> = ports
        .iter()
        .map(|p| entry.replace(&format!("port_value: {port}"), &format!("port_value: {p}")))
        .collect();
    Ok(format!(
        "{}{}{}",
        &yaml[..start],
        entries.join(&format!("\n{indent}")),
        &yaml[end..]
    ))
}

/// Options of a test stack.
#[derive(Clone)]
pub struct StackOptions {
    pub plugin_overrides: Value,
    pub concurrency: u32,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            plugin_overrides: serde_json::json!({"flush_interval_ms": 100}),
            concurrency: 1,
        }
    }
}

/// A running Envoy + collector + upstream + database.
pub struct Stack {
    pub name: String,
    pub database_url: String,
    pub db: PgPool,
    pub envoy_port: u16,
    pub admin_port: u16,
    pub collector_port: u16,
    pub upstream_port: u16,
    pub log_dir: PathBuf,
    pub envoy: Proc,
    pub collector: Option<Proc>,
    /// Every collector replica's port, `collector_port` first
    /// ([`Stack::start_replicas`]; one for [`Stack::start`]).
    pub replica_ports: Vec<u16>,
    /// The replicas after the first (`collector`), in `replica_ports` order.
    pub replicas: Vec<Option<Proc>>,
    /// The environment every replica was started with (beyond the usual).
    pub collector_env: Vec<(&'static str, String)>,
    pub upstream: Proc,
    pub http: reqwest::Client,
}

impl Stack {
    pub async fn start(name: &str, options: StackOptions) -> Result<Stack, BoxError> {
        Self::start_replicas(name, options, 1, Vec::new()).await
    }

    /// A stack with `replicas` collectors on the one database, each started
    /// with `env`, all behind Envoy's `billing_collector` cluster (round
    /// robin). The first is `collector` / `collector_port`.
    pub async fn start_replicas(
        name: &str,
        options: StackOptions,
        replicas: usize,
        env: Vec<(&'static str, String)>,
    ) -> Result<Stack, BoxError> {
        let log_dir = repo_root().join("tests/output").join(name);
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir)?;
        let database_url = fresh_database("e2e").await?;
        let (envoy_port, admin_port, upstream_port) = (free_port(), free_port(), free_port());
        let replica_ports: Vec<u16> = (0..replicas.max(1)).map(|_| free_port()).collect();
        let collector_port = replica_ports[0];
        // The first one migrates the database; the others start on it.
        let collector =
            start_collector_with(&database_url, collector_port, &log_dir, "collector", &env)
                .await?;
        let mut others = Vec::new();
        for (i, port) in replica_ports.iter().enumerate().skip(1) {
            let name = format!("collector-replica-{i}");
            others.push(Some(
                start_collector_with(&database_url, *port, &log_dir, &name, &env).await?,
            ));
        }
        let upstream_bin = env_path("DEMO_UPSTREAM_BIN", "target/debug/demo-upstream");
        let upstream = Proc::spawn(
            "upstream",
            Command::new(upstream_bin)
                .arg("--addr")
                .arg(format!("127.0.0.1:{upstream_port}")),
            &log_dir,
        )?;
        wait_http(
            &format!("http://127.0.0.1:{upstream_port}/healthz"),
            Duration::from_secs(10),
        )
        .await?;
        // A port found free can be taken by another test's process before
        // Envoy binds it: then Envoy exits at once, and it is started again
        // on new ports.
        let mut attempt = 0;
        let (envoy, envoy_port, admin_port) = loop {
            attempt += 1;
            let (envoy_port, admin_port) = if attempt == 1 {
                (envoy_port, admin_port)
            } else {
                (free_port(), free_port())
            };
            let config = with_collector_endpoints(
                &render_envoy_config(
                    envoy_port,
                    admin_port,
                    upstream_port,
                    collector_port,
                    &options.plugin_overrides,
                )?,
                &replica_ports,
            )?;
            let config_path = log_dir.join("envoy.yaml");
            std::fs::write(&config_path, config)?;
            let envoy_bin =
                std::env::var("ENVOY_BIN").map_err(|_| "ENVOY_BIN is not set (run ./dev test)")?;
            let mut envoy = Proc::spawn(
                "envoy",
                Command::new(envoy_bin)
                    .arg("-c")
                    .arg(&config_path)
                    .arg("--concurrency")
                    .arg(options.concurrency.to_string())
                    .arg("--disable-hot-restart")
                    .arg("--log-level")
                    .arg("info")
                    .current_dir(repo_root()),
                &log_dir,
            )?;
            let ready = format!("http://127.0.0.1:{admin_port}/ready");
            let deadline = Instant::now() + Duration::from_secs(30);
            let up = loop {
                if wait_http(&ready, Duration::from_millis(200)).await.is_ok() {
                    break true;
                }
                if envoy.exited() || Instant::now() > deadline {
                    break false;
                }
            };
            if up {
                break (envoy, envoy_port, admin_port);
            }
            if attempt >= 3 || !envoy.log_text().contains("Address already in use") {
                return Err(format!("{ready} did not become ready\n{}", envoy.log_text()).into());
            }
        };
        let db = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await?;
        Ok(Stack {
            name: name.to_string(),
            database_url,
            db,
            envoy_port,
            admin_port,
            collector_port,
            upstream_port,
            log_dir,
            envoy,
            collector: Some(collector),
            replica_ports,
            replicas: others,
            collector_env: env,
            upstream,
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    pub fn envoy_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.envoy_port)
    }

    pub fn collector_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.collector_port)
    }

    /// A URL on collector replica `i` (0 = `collector_url`).
    pub fn replica_url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.replica_ports[i])
    }

    pub fn upstream_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.upstream_port)
    }

    /// GET on the collector's admin API.
    pub async fn admin_get(&self, path_and_query: &str) -> Result<Value, BoxError> {
        let r = self
            .http
            .get(self.collector_url(path_and_query))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if !status.is_success() {
            return Err(format!("GET {path_and_query}: {status} {body}").into());
        }
        Ok(body)
    }

    /// Waits until the ledger holds `n` rows for `tenant`, and returns them.
    pub async fn wait_rows(
        &self,
        tenant: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self
                .admin_get(&format!("/v1/transactions?tenant_id={tenant}&limit=1000"))
                .await
                .ok();
            let rows = body
                .as_ref()
                .and_then(|b| b["transactions"].as_array().cloned())
                .unwrap_or_default();
            if rows.len() >= n {
                return Ok(rows);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "expected {n} rows for tenant {tenant}, found {} after {timeout:?}\n--- envoy log tail ---\n{}",
                    rows.len(),
                    tail(&self.envoy.log_text(), 40)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads one Envoy stat (e.g. the filter's `wasmcustom.llm_billing.records_dropped`;
    /// the name of the wasm plugin's stat is mapped to the artifact under test).
    pub async fn envoy_stat(&self, name: &str) -> Result<u64, BoxError> {
        let name = &Artifact::current().stat(name);
        let text = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/stats?filter={name}",
                self.admin_port
            ))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.ends_with(name))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum())
    }

    /// An admin call to the collector: status and JSON body (`null` when
    /// there is none).
    pub async fn admin_call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return (0, Value::Null);
        };
        let Ok(r) = self
            .http
            .request(method, self.collector_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
        else {
            return (0, Value::Null);
        };
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A tenant's ledger rows and priced spend, straight from PostgreSQL.
    pub async fn ledger_spend(
        &self,
        tenant: &str,
    ) -> Result<(i64, rust_decimal::Decimal), BoxError> {
        Ok(sqlx::query_as(
            "SELECT count(*), coalesce(sum(cost), 0) FROM transactions WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(&self.db)
        .await?)
    }

    /// Waits until every record the filter captured was acknowledged (the
    /// ledger is complete); returns how many were captured.
    pub async fn settled(&self, within: Duration) -> Result<u64, BoxError> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let captured = self
                .envoy_stat("wasmcustom.llm_billing.records_captured")
                .await?;
            let flushed = self
                .envoy_stat("wasmcustom.llm_billing.records_flushed")
                .await?;
            if captured == flushed {
                return Ok(captured);
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("{captured} records captured, {flushed} flushed").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves the collector onto a private PostgreSQL cluster that the test
    /// may stop and start (the shared one must stay up); returns both.
    pub async fn collector_on_private_cluster(&mut self) -> Result<(pg::Cluster, Proc), BoxError> {
        let cluster = tokio::task::spawn_blocking(pg::Cluster::init).await??;
        if let Some(mut c) = self.collector.take() {
            c.kill();
        }
        let collector = start_collector(
            &cluster.url(),
            self.collector_port,
            &self.log_dir,
            "collector-private",
        )
        .await?;
        Ok((cluster, collector))
    }

    pub async fn restart_collector(&mut self) -> Result<(), BoxError> {
        self.restart_replica(0).await
    }

    /// Starts collector replica `i` again (after the test killed it), on
    /// its port, with the stack's collector environment.
    pub async fn restart_replica(&mut self, i: usize) -> Result<(), BoxError> {
        let n = std::fs::read_dir(&self.log_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        let port = *self.replica_ports.get(i).ok_or("no such replica")?;
        let proc = start_collector_with(
            &self.database_url,
            port,
            &self.log_dir,
            &format!("collector-{n}"),
            &self.collector_env,
        )
        .await?;
        match i {
            0 => self.collector = Some(proc),
            _ => self.replicas[i - 1] = Some(proc),
        }
        Ok(())
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The native example config is the wasm one with only the filter
    /// entry changed: the same routes, clusters and plugin JSON.
    #[test]
    fn the_native_envoy_config_differs_only_in_the_filter_entry() {
        let read = |f: &str| std::fs::read_to_string(repo_root().join(f)).unwrap();
        let (wasm, native) = (read("envoy/envoy.yaml"), read("envoy/envoy-native.yaml"));
        let parts = |text: &str| {
            let body = &text[text.find("admin:").unwrap()..];
            let start = body.find("http_filters:").unwrap();
            let end = body.find("- name: envoy.filters.http.router").unwrap();
            let filter = &body[start..end];
            let json_at = filter.find('{').unwrap();
            let json: Value = serde_json::Deserializer::from_str(&filter[json_at..])
                .into_iter::<Value>()
                .next()
                .unwrap()
                .unwrap();
            (format!("{}{}", &body[..start], &body[end..]), json)
        };
        let (wasm_rest, wasm_json) = parts(&wasm);
        let (native_rest, native_json) = parts(&native);
        assert_eq!(wasm_rest, native_rest);
        assert_eq!(wasm_json, native_json);
        assert!(native.contains("filename: target/release/libllm_billing.so"));
        assert!(native.contains("filter_name: llm_billing"));
    }

    #[test]
    fn the_collector_cluster_gets_one_endpoint_per_replica() {
        let template = std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
        let two = with_collector_endpoints(&template, &[8081, 8082]).unwrap();
        let endpoint = |port: u16| {
            format!(
                "              - endpoint:\n                  address:\n                    socket_address: {{ address: 127.0.0.1, port_value: {port} }}"
            )
        };
        let cluster = &two[two.find("- name: billing_collector").unwrap()..];
        assert!(
            cluster.contains(&format!("{}\n{}", endpoint(8081), endpoint(8082))),
            "{cluster}"
        );
        // The rest is untouched: the upstream cluster keeps its one endpoint.
        let one = with_collector_endpoints(&template, &[8081]).unwrap();
        assert_eq!(one, template);
        assert_eq!(
            two.replacen(&format!("\n{}", endpoint(8082)), "", 1),
            template
        );
    }

    #[test]
    fn stat_names_follow_the_artifact() {
        let name = "wasmcustom.llm_billing.records_captured";
        assert_eq!(Artifact::Wasm.stat(name), name);
        assert_eq!(
            Artifact::Native.stat(name),
            "dynamicmodulescustom.llm_billing.records_captured"
        );
        assert_eq!(
            Artifact::Native.stat("llm_billing.records_dropped"),
            "llm_billing.records_dropped"
        );
    }
}
