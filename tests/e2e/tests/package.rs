//! `./dev package`: its script builds both images (the collector in the dev
//! profile, the one difference from a release run), then the real tools
//! take them apart: skopeo reads the OCI layouts and archives, umoci unpacks
//! them, the wasm layer is read entry by entry, and the collector runs from
//! the unpacked rootfs alone (chroot, as the image's user) against the test
//! PostgreSQL.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{free_port, fresh_database, repo_root, wait_http, Proc, ADMIN_TOKEN, INGEST_TOKEN};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo_json(args: &[&str]) -> Value {
    serde_json::from_str(&run(Command::new("skopeo").args(args))).unwrap()
}

/// The entries of an uncompressed tar: (name, type flag, mode, size, content).
fn tar_entries(tar: &[u8]) -> Vec<(String, u8, u32, Vec<u8>)> {
    let octal = |field: &[u8]| -> u64 {
        let s = String::from_utf8_lossy(field);
        let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
        u64::from_str_radix(s, 8).unwrap_or(0)
    };
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let mut name = String::from_utf8_lossy(&header[..name_end]).into_owned();
        let prefix_end = header[345..500].iter().position(|&b| b == 0).unwrap_or(155);
        if prefix_end > 0 && &header[257..262] == b"ustar" {
            name = format!(
                "{}/{name}",
                String::from_utf8_lossy(&header[345..345 + prefix_end])
            );
        }
        let mode = octal(&header[100..108]) as u32;
        let size = octal(&header[124..136]) as usize;
        let kind = header[156];
        let body = tar[at + 512..at + 512 + size].to_vec();
        entries.push((name, kind, mode, body));
        at += 512 + size.div_ceil(512) * 512;
    }
    entries
}

/// Whether an ELF executable asks for a program interpreter (dynamic linking).
fn elf_has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// umoci unpack IMAGE BUNDLE (rootless when not root: ownership is then mapped).
fn umoci_unpack(image: String, bundle: &Path) {
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    run(cmd.arg("--image").arg(image).arg(bundle));
}

struct Built {
    out: PathBuf,
    env: BTreeMap<String, String>,
    stdout: String,
}

fn build_packages(name: &str) -> Built {
    let tmp = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let out = tmp.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let stdout = run(Command::new(repo_root().join("deploy/package"))
        .current_dir(repo_root())
        .env("PACKAGE_PROFILE", "dev")
        // One revision label for both runs, whatever is committed meanwhile.
        .env("PACKAGE_REVISION", "e2e-test")
        .env("PACKAGE_OUT", &out));
    let env = std::fs::read_to_string(out.join("digests.env"))
        .expect("deploy/package writes digests.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Built { out, env, stdout }
}

fn check_filter_image(b: &Built, version: &str) {
    let layout = format!("oci:{}/filter:{version}", b.out.display());
    let manifest_raw = run(Command::new("skopeo").args(["inspect", "--raw", &layout]));
    let manifest: Value = serde_json::from_str(&manifest_raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "the compat wasm image has a single layer");
    assert_eq!(
        layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
        "Istio and Envoy Gateway read the compat variant's layer as OCI tar+gzip"
    );

    // The image digest printed for pinning is the manifest's sha256, as
    // skopeo (and so a registry) computes it, and the archive carries the same image.
    let digest = format!("sha256:{}", sha256_hex(manifest_raw.as_bytes()));
    assert_eq!(b.env["FILTER_IMAGE_DIGEST"], digest);
    assert_eq!(
        skopeo_json(&["inspect", &layout])["Digest"],
        digest.as_str()
    );
    let archive = format!("oci-archive:{}", b.env["FILTER_ARCHIVE"]);
    assert_eq!(
        skopeo_json(&["inspect", &archive])["Digest"],
        digest.as_str()
    );
    assert!(
        b.stdout.contains(&digest[7..]),
        "the digest to pin is printed"
    );

    // The layer, read from the layout's blobs: content-addressed, and its
    // tar holds exactly one regular file, plugin.wasm, the built filter.
    let wasm = std::fs::read(std::env::var("BILLING_WASM").unwrap_or_else(|_| {
        repo_root()
            .join("target/wasm32-wasip1/release/filter.wasm")
            .display()
            .to_string()
    }))
    .unwrap();
    let wasm_sha = sha256_hex(&wasm);
    assert_eq!(b.env["PLUGIN_WASM_SHA256"], wasm_sha);
    assert!(
        b.stdout.contains(&wasm_sha),
        "plugin.wasm's sha256 is printed"
    );
    let layer_digest = layers[0]["digest"].as_str().unwrap();
    let blob = std::fs::read(
        b.out
            .join("filter/blobs/sha256")
            .join(layer_digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&blob)), layer_digest);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .unwrap();
    let config = skopeo_json(&["inspect", "--config", &layout]);
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&tar)).as_str()
    );
    let entries = tar_entries(&tar);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["plugin.wasm"],
        "the layer holds exactly plugin.wasm"
    );
    let (_, kind, _, body) = &entries[0];
    assert_eq!(*kind, b'0', "plugin.wasm is a regular file");
    assert_eq!(&body[..4], b"\0asm");
    assert_eq!(sha256_hex(body), wasm_sha);

    // umoci unpacks it to the same single file.
    let bundle = b.out.join("filter-bundle");
    umoci_unpack(format!("{}/filter:{version}", b.out.display()), &bundle);
    let rootfs = bundle.join("rootfs");
    assert_eq!(files_under(&rootfs), ["plugin.wasm"]);
    assert_eq!(
        sha256_hex(&std::fs::read(rootfs.join("plugin.wasm")).unwrap()),
        wasm_sha
    );
}

async fn check_collector_image(b: &Built, version: &str) {
    let layout = format!("oci:{}/collector:{version}", b.out.display());
    let manifest_raw = run(Command::new("skopeo").args(["inspect", "--raw", &layout]));
    let manifest: Value = serde_json::from_str(&manifest_raw).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    let digest = format!("sha256:{}", sha256_hex(manifest_raw.as_bytes()));
    assert_eq!(b.env["COLLECTOR_IMAGE_DIGEST"], digest);
    let archive = format!("oci-archive:{}", b.env["COLLECTOR_ARCHIVE"]);
    assert_eq!(
        skopeo_json(&["inspect", &archive])["Digest"],
        digest.as_str()
    );

    let config = skopeo_json(&["inspect", "--config", &layout]);
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    let uid: u32 = c["User"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, 0, "the image runs as a non-root user");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/collector"]));
    assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "COLLECTOR_ADDR=0.0.0.0:8081"));
    assert!(c["ExposedPorts"].get("8081/tcp").is_some());

    let bundle = b.out.join("collector-bundle");
    umoci_unpack(format!("{}/collector:{version}", b.out.display()), &bundle);
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        files_under(&rootfs),
        ["collector"],
        "FROM scratch: the binary and nothing else"
    );
    let bin = std::fs::read(rootfs.join("collector")).unwrap();
    assert!(
        !elf_has_interpreter(&bin),
        "the collector is statically linked"
    );

    // The runtime spec umoci derived from the image config says what a
    // runtime would start: the image's arguments, user and environment.
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    let process = &spec["process"];
    let args: Vec<String> = process["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args, ["/collector", "serve"]);
    assert_eq!(process["user"]["uid"], 65532);
    assert_eq!(process["user"]["gid"], 65532);

    let database_url = fresh_database("package").await.unwrap();
    let port = free_port();
    let mut cmd = if is_root() {
        // Only the rootfs is visible and the process is the image's user.
        let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("chroot");
        let mut cmd = Command::new(chroot);
        cmd.arg("--userspec=65532:65532").arg(&rootfs).args(&args);
        cmd
    } else {
        let mut cmd = Command::new(rootfs.join("collector"));
        cmd.args(&args[1..]);
        cmd
    };
    cmd.env_clear();
    for e in process["env"].as_array().unwrap() {
        if let Some((k, v)) = e.as_str().unwrap().split_once('=') {
            cmd.env(k, v);
        }
    }
    // Loopback for the test instead of the image's 0.0.0.0.
    cmd.env("COLLECTOR_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &database_url)
        .env("INGEST_TOKEN", INGEST_TOKEN)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info");
    let proc = Proc::spawn("image-collector", &mut cmd, &b.out).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/healthz"), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));

    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "the database answers the image's binary"
    );
    let prices = http
        .get(format!("{base}/v1/prices"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(prices.status(), 200, "{}", proc.log_text());

    if is_root() {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", proc.pid().unwrap())).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
        assert_eq!(
            uids, ["65532"; 4],
            "the collector runs as 65532: {uid_line}"
        );
    }

    // It migrated the fresh database: the schema is the binary's own.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&database_url)
        .await
        .unwrap();
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(migrations > 0, "the image's collector ran its migrations");
    pool.close().await;
}

#[tokio::test]
async fn dev_package_builds_a_compat_wasm_image_and_a_static_nonroot_collector_image() {
    if std::env::var("BILLING_ARTIFACT").as_deref() == Ok("native") {
        // The images do not depend on the artifact under test: the suite's
        // wasm pass built and checked them already.
        eprintln!("package images: checked in the wasm pass, not again for the native module");
        return;
    }
    let built = build_packages("package-test");
    let version = built.env["VERSION"].clone();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    check_filter_image(&built, &version);
    check_collector_image(&built, &version).await;

    // A second run from the same commit gives the same images, so a digest
    // pinned once can be rebuilt and checked.
    let again = build_packages("package-test-again");
    for key in [
        "FILTER_IMAGE_DIGEST",
        "COLLECTOR_IMAGE_DIGEST",
        "PLUGIN_WASM_SHA256",
    ] {
        assert_eq!(
            built.env[key], again.env[key],
            "{key} differs between two runs"
        );
    }
    let _ = std::fs::remove_dir_all(&built.out);
    let _ = std::fs::remove_dir_all(&again.out);
}
