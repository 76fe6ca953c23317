//! The manifests in deploy/: every YAML document parses (PyYAML from the
//! project's .venv, which `./dev setup` installs), and they hold what the
//! README promises: probes, a non-root locked-down pod, a disruption budget,
//! the images `./dev package` builds under the same names and digest
//! placeholder, and an Envoy Gateway wiring whose `collector_cluster` names
//! the cluster Envoy Gateway makes for the collector's route.

use std::collections::BTreeMap;
use std::process::Command;

use e2e::repo_root;
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const DIGEST_PLACEHOLDER: &str = "REPLACE_WITH_FILTER_IMAGE_DIGEST";

/// Every document of every deploy/*.yaml, by file name.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./dev setup",
        python.display()
    );
    let script = r#"
import glob, json, os, sys, yaml
out = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
    with open(path) as f:
        out[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d is not None]
json.dump(out, sys.stdout)
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("deploy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a deploy/ manifest does not parse:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).unwrap()
}

/// The filter's configuration fields, from the README's table.
fn documented_filter_fields() -> Vec<String> {
    let readme = readme();
    let section = readme
        .split("## Filter configuration")
        .nth(1)
        .expect("README has a Filter configuration section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_manifest_parses_and_names_itself() {
    let all = manifests();
    for name in ["collector.yaml", "wasmplugin.yaml", "envoy-gateway.yaml"] {
        assert!(all.contains_key(name), "deploy/{name} is missing");
    }
    for (file, docs) in &all {
        assert!(!docs.is_empty(), "deploy/{file} has no document");
        for d in docs {
            assert!(
                d["apiVersion"].is_string(),
                "{file}: a document has no apiVersion"
            );
            assert!(d["kind"].is_string(), "{file}: a document has no kind");
            assert!(
                d["metadata"]["name"].is_string(),
                "{file}: a {} has no name",
                d["kind"]
            );
        }
    }
}

#[test]
fn the_collector_deployment_is_probed_bounded_non_root_and_disruption_budgeted() {
    let all = manifests();
    let docs = &all["collector.yaml"];
    let deployment = one(docs, "Deployment");
    let ns = deployment["metadata"]["namespace"].as_str().unwrap();
    let labels = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(
        &deployment["spec"]["template"]["metadata"]["labels"],
        labels
    );
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap();
    assert!(
        replicas >= 2,
        "more than one replica, so a PDB can hold one"
    );

    let pod = &deployment["spec"]["template"]["spec"];
    let pod_sc = &pod["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true);
    // The image's user (deploy/package: --user 65532:65532).
    assert_eq!(pod_sc["runAsUser"], 65532);
    assert_eq!(pod_sc["runAsGroup"], 65532);
    assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["automountServiceAccountToken"], false);

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"],
        format!("registry.example.com/llm-billing/collector:{VERSION}").as_str(),
        "the image ./dev package builds, at the workspace version"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    let port_name = c["ports"][0]["name"].as_str().unwrap();
    assert_eq!(c["ports"][0]["containerPort"], 8081);
    let probe = |name: &str| -> (String, String) {
        let get = &c[name]["httpGet"];
        assert!(
            get.is_object(),
            "{name} is an HTTP probe (the image has no shell)"
        );
        (
            get["path"].as_str().unwrap().to_string(),
            get["port"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        probe("livenessProbe"),
        ("/healthz".into(), port_name.into())
    );
    assert_eq!(probe("startupProbe"), ("/healthz".into(), port_name.into()));
    assert_eq!(
        probe("readinessProbe"),
        ("/readyz".into(), port_name.into())
    );

    let res = &c["resources"];
    for key in ["cpu", "memory"] {
        assert!(res["requests"][key].is_string(), "requests.{key}");
        assert!(res["limits"][key].is_string(), "limits.{key}");
    }

    let pdb = one(docs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["metadata"]["namespace"], ns);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let min = pdb["spec"]["minAvailable"].as_i64().unwrap();
    assert!(
        (1..replicas).contains(&min),
        "the PDB keeps one replica yet lets a drain proceed"
    );

    let svc = one(docs, "Service");
    assert_eq!(svc["metadata"]["namespace"], ns);
    assert_eq!(&svc["spec"]["selector"], labels);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port_name);
}

#[test]
fn istio_and_envoy_gateway_pull_the_packaged_filter_image_pinned_by_digest() {
    let all = manifests();
    let fields = documented_filter_fields();
    assert!(fields.contains(&"collector_cluster".to_string()));
    let check_config = |what: &str, config: &Value| {
        for key in config.as_object().unwrap().keys() {
            assert!(
                fields.contains(key),
                "{what}: `{key}` is not a filter field of the README's table"
            );
        }
        for key in ["collector_cluster", "collector_authority", "ingest_token"] {
            assert!(config[key].is_string(), "{what}: {key} is required");
        }
    };

    let plugin = one(&all["wasmplugin.yaml"], "WasmPlugin");
    let spec = &plugin["spec"];
    assert_eq!(
        spec["url"],
        format!("oci://registry.example.com/llm-billing/filter:{VERSION}").as_str()
    );
    assert_eq!(spec["sha256"], DIGEST_PLACEHOLDER);
    assert_eq!(spec["failStrategy"], "FAIL_OPEN");
    check_config("WasmPlugin", &spec["pluginConfig"]);

    let collector = &all["collector.yaml"];
    let svc = one(collector, "Service");
    let svc_host = format!(
        "{}.{}.svc.cluster.local",
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap()
    );
    let svc_port = &svc["spec"]["ports"][0]["port"];
    assert_eq!(
        spec["pluginConfig"]["collector_cluster"],
        format!("outbound|{svc_port}||{svc_host}").as_str(),
        "Istio's name for the collector Service's cluster"
    );

    let eg = &all["envoy-gateway.yaml"];
    let policy = one(eg, "EnvoyExtensionPolicy");
    assert_eq!(policy["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    let ns = policy["metadata"]["namespace"].as_str().unwrap();
    let wasm = &policy["spec"]["wasm"][0];
    assert_eq!(wasm["code"]["type"], "Image");
    assert_eq!(
        wasm["code"]["image"]["url"],
        format!("registry.example.com/llm-billing/filter:{VERSION}").as_str(),
        "Envoy Gateway's image URL has no oci:// scheme"
    );
    assert_eq!(wasm["code"]["image"]["sha256"], DIGEST_PLACEHOLDER);
    assert_eq!(wasm["failOpen"], true);
    let config = &wasm["config"];
    check_config("EnvoyExtensionPolicy", config);
    for key in ["ingest_path", "tenant_header", "flush_interval_ms"] {
        assert_eq!(
            config[key], spec["pluginConfig"][key],
            "{key} is the same for Istio and Envoy Gateway"
        );
    }

    // collector_cluster = httproute/<ns>/<route>/rule/<i>: that route exists,
    // its rule i goes to the collector's Backend, and that Backend is the
    // collector Service of deploy/collector.yaml.
    let cluster = config["collector_cluster"].as_str().unwrap();
    let parts: Vec<&str> = cluster.split('/').collect();
    assert_eq!(parts.len(), 5, "{cluster}");
    assert_eq!((parts[0], parts[1], parts[3]), ("httproute", ns, "rule"));
    let route = find(eg, "HTTPRoute")
        .into_iter()
        .find(|r| r["metadata"]["name"] == parts[2] && r["metadata"]["namespace"] == ns)
        .unwrap_or_else(|| panic!("no HTTPRoute {} in {ns}", parts[2]));
    let rule = &route["spec"]["rules"][parts[4].parse::<usize>().unwrap()];
    let backend_ref = &rule["backendRefs"][0];
    assert_eq!(backend_ref["group"], "gateway.envoyproxy.io");
    assert_eq!(backend_ref["kind"], "Backend");
    let backend = one(eg, "Backend");
    assert_eq!(backend["metadata"]["name"], backend_ref["name"]);
    assert_eq!(backend["metadata"]["namespace"], ns);
    let fqdn = &backend["spec"]["endpoints"][0]["fqdn"];
    assert_eq!(fqdn["hostname"], svc_host.as_str());
    assert_eq!(&fqdn["port"], svc_port);
    assert_eq!(&backend_ref["port"], svc_port);
    let hostnames = route["spec"]["hostnames"].as_array().unwrap();
    assert!(
        hostnames.contains(&config["collector_authority"]),
        "the filter's :authority matches the ingest route"
    );
    let paths: Vec<&Value> = rule["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["path"]["value"])
        .collect();
    assert!(paths.contains(&&config["ingest_path"]));

    // The policy bills the LLM route, not the collector's own.
    for target in policy["spec"]["targetRefs"].as_array().unwrap() {
        assert_eq!(target["group"], "gateway.networking.k8s.io");
        assert_ne!(target["name"], route["metadata"]["name"]);
    }
}

#[test]
fn the_readme_packages_section_matches_the_manifests_and_the_script() {
    let readme = readme();
    let using = readme
        .split("## Using the filter in your own Envoy or Istio")
        .nth(1)
        .expect("README has the Using the filter section");
    let using = using.split("\n## ").next().unwrap();
    let packages = using
        .split("### Packages")
        .nth(1)
        .expect("a ### Packages subsection under Using the filter");
    for needle in [
        "./dev package".to_string(),
        format!("skopeo copy oci:target/package/filter:{VERSION} docker://"),
        format!("skopeo copy oci:target/package/collector:{VERSION} docker://"),
        "FILTER_IMAGE_DIGEST".to_string(),
        "PLUGIN_WASM_SHA256".to_string(),
        DIGEST_PLACEHOLDER.to_string(),
        "deploy/envoy-gateway.yaml".to_string(),
        "deploy/wasmplugin.yaml".to_string(),
        "65532".to_string(),
    ] {
        assert!(
            packages.contains(&needle),
            "README ### Packages does not mention {needle}"
        );
    }
    let script = std::fs::read_to_string(repo_root().join("deploy/package")).unwrap();
    for needle in [
        "FILTER_IMAGE_DIGEST=",
        "PLUGIN_WASM_SHA256=",
        "COLLECTOR_IMAGE_DIGEST=",
        "--user 65532:65532",
    ] {
        assert!(script.contains(needle), "deploy/package lost {needle}");
    }
}
