//! The deployment files of `deploy/`, checked by the tools each engine has: the Kubernetes
//! overlays rendered by `kubectl kustomize` and every object validated against the schemas of
//! a pinned Kubernetes (`kubernetes-validate --strict`), the Dockerfile linted (`hadolint`),
//! the systemd units verified (`systemd-analyze verify`), the Prometheus scrape configurations
//! and recording rules checked and unit-tested (`promtool`), the Grafana dashboard's queries
//! matched against those rules, the shell scripts linted (`shellcheck`).
//!
//! Nothing here runs a cluster, an image or a unit: no cluster, registry or docker engine is
//! reachable from the machines this runs on (deploy/README.md says what was and was not run).
//!
//! The tools come from `bash scripts/ci-tools.sh` (`.deps/venv/bin` first, then PATH). A test
//! whose tools are missing prints SKIPPED and passes, unless HYPERSWEEP_REQUIRE_CLUSTER_TOOLS=1
//! (CI sets it): then it fails, naming what is missing.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tests::{cluster_tools as tools, repo};

/// The Kubernetes version the manifests are validated against (kubernetes-validate's schemas).
const KUBERNETES: &str = "1.37.0";

/// Every metric a coordinator with `--metrics-listen` serves (deploy/README.md, "Metrics").
pub(crate) const METRICS: [&str; 13] = [
    "hypersweep_trials",
    "hypersweep_epochs_recorded_total",
    "hypersweep_leases_granted_total",
    "hypersweep_leases_expired_total",
    "hypersweep_attempts_failed_total",
    "hypersweep_workers_connected",
    "hypersweep_report_latency_seconds",
    "hypersweep_commit_batch_size",
    "hypersweep_commit_latency_seconds",
    "hypersweep_artifact_bytes_received_total",
    "hypersweep_dataset_bytes_served_total",
    "hypersweep_worker_samples_per_second",
    "hypersweep_worker_gpu_memory_bytes",
];

/// Runs `c`; fails showing its output unless it succeeded.
fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The objects of a multi-document YAML file, as JSON: `kubectl patch --local` with an empty
/// patch prints each one (no YAML parser needed here, and kubectl's reading is what counts).
fn objects(kubectl: &Path, file: &Path) -> Vec<Value> {
    let out = run_ok(
        Command::new(kubectl)
            .args([
                "patch",
                "--local",
                "--type=merge",
                "-p",
                "{}",
                "-o",
                "json",
                "-f",
            ])
            .arg(file),
    );
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(|v| v.expect("kubectl's JSON"))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The secret volume mounted at the folder of the file that `flag` (e.g. `--token-file=`)
/// names in `pod`'s first container.
fn secret_behind<'a>(pod: &'a Value, flag: &str) -> &'a str {
    let c = &pod["containers"][0];
    let file = strings(&c["args"])
        .into_iter()
        .find_map(|a| a.strip_prefix(flag))
        .unwrap_or_else(|| panic!("no {flag} in {}", c["args"]));
    let dir = Path::new(file).parent().unwrap().to_str().unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    assert_eq!(mount["readOnly"], true, "{dir} mounted writable");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    volume["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{dir} is not a Secret: {volume}"))
}

/// What the issue asks of both overlays: batch Jobs, the token a Secret mounted as a file,
/// TLS on, gRPC probes on the plaintext health port, a results volume.
fn check_coordinator(objects: &[Value]) {
    let job = find(objects, "Job", "hypersweep-coordinator");
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    for want in [
        "--listen=0.0.0.0:50051",
        "--local-workers=0",
        "--health-listen=0.0.0.0:50052",
        "--metrics-listen=0.0.0.0:9464",
    ] {
        assert!(
            args.contains(&want),
            "coordinator args lack {want}: {args:?}"
        );
    }
    assert!(args.iter().any(|a| a.starts_with("--tls-cert=")), "TLS off");
    assert_eq!(secret_behind(pod, "--token-file="), "hypersweep-token");
    assert_eq!(secret_behind(pod, "--tls-key="), "hypersweep-tls");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["grpc"]["port"], 50052, "{probe}: {}", c[probe]);
    }
    let results = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "results")
        .unwrap();
    assert_eq!(
        results["persistentVolumeClaim"]["claimName"],
        "hypersweep-results"
    );
    find(objects, "PersistentVolumeClaim", "hypersweep-results");
    let service = find(objects, "Service", "hypersweep-coordinator");
    assert_eq!(
        service["spec"]["selector"],
        job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            .as_str()
            .map(|n| serde_json::json!({ "app.kubernetes.io/name": n }))
            .unwrap()
    );
}

/// The worker Job: a work queue of `parallelism` pods, no data, the token from the Secret,
/// only the certificate (never the key) of the TLS Secret. Returns the container.
fn check_worker(objects: &[Value]) -> &Value {
    let job = find(objects, "Job", "hypersweep-worker");
    assert!(job["spec"]["parallelism"].as_u64().unwrap() >= 1);
    assert!(
        job["spec"]["completions"].is_null(),
        "a work queue has no completions"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(secret_behind(pod, "--token-file="), "hypersweep-token");
    assert_eq!(secret_behind(pod, "--tls-ca="), "hypersweep-tls");
    let tls = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "hypersweep-tls")
        .unwrap();
    assert_eq!(
        tls["secret"]["items"],
        serde_json::json!([{ "key": "tls.crt", "path": "ca.crt" }]),
        "workers must get the certificate only"
    );
    let args = strings(&pod["containers"][0]["args"]);
    assert!(
        !args.iter().any(|a| a.starts_with("--data-dir")),
        "worker images carry no data: {args:?}"
    );
    &pod["containers"][0]
}

#[test]
fn kubernetes_overlays_render_and_validate() {
    let Some(t) = tools(
        "kubernetes_overlays_render_and_validate",
        &["kubectl", "kubernetes-validate"],
    ) else {
        return;
    };
    let (kubectl, validate) = (&t[0], &t[1]);
    let tmp = tempfile::tempdir().unwrap();
    let k8s = repo().join("deploy/kubernetes");
    for overlay in ["cpu", "gpu"] {
        let out = run_ok(
            Command::new(kubectl)
                .arg("kustomize")
                .arg(k8s.join("overlays").join(overlay)),
        );
        let rendered = tmp.path().join(format!("{overlay}.yaml"));
        std::fs::write(&rendered, &out.stdout).unwrap();
        let v = run_ok(
            Command::new(validate)
                .args(["--kubernetes-version", KUBERNETES, "--strict", "--quiet"])
                .arg(&rendered),
        );
        // --quiet prints only warnings and failures.
        let said = text(&v.stdout) + &text(&v.stderr);
        assert!(said.trim().is_empty(), "{overlay}: {said}");

        let objects = objects(kubectl, &rendered);
        let kinds: BTreeSet<String> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["ConfigMap", "Job", "PersistentVolumeClaim", "Service"],
            "{overlay}: Jobs, not Deployments (a sweep ends)"
        );
        check_coordinator(&objects);
        let worker = check_worker(&objects);
        let args = strings(&worker["args"]);
        let gpus = &worker["resources"]["limits"]["nvidia.com/gpu"];
        match overlay {
            "gpu" => {
                assert_eq!(gpus, 1, "one GPU per worker");
                assert!(args.contains(&"--device=cuda:0"), "{args:?}");
            }
            _ => {
                assert!(gpus.is_null(), "the cpu overlay asks for a GPU");
                assert!(args.contains(&"--device=cpu"), "{args:?}");
            }
        }
        eprintln!(
            "{overlay}: {} objects valid for Kubernetes {KUBERNETES}",
            objects.len()
        );
    }

    // The reader pod of the walkthrough is valid too.
    let v = run_ok(
        Command::new(validate)
            .args(["--kubernetes-version", KUBERNETES, "--strict", "--quiet"])
            .arg(k8s.join("tools/results-reader.yaml")),
    );
    assert!(text(&v.stdout).trim().is_empty(), "{}", text(&v.stdout));

    // Scaling is the one command deploy/README.md gives (here on the file, not a cluster).
    let patched = run_ok(
        Command::new(kubectl)
            .args(["patch", "--local", "-o", "json", "-p"])
            .arg(r#"{"spec":{"parallelism":8}}"#)
            .arg("-f")
            .arg(k8s.join("base/worker-job.yaml")),
    );
    let job: Value = serde_json::from_slice(&patched.stdout).unwrap();
    assert_eq!(job["spec"]["parallelism"], 8);

    // The base runs the notebook's sweep: a copy, because kustomize reads no file outside
    // its folder. It must not drift from the original.
    assert_eq!(
        std::fs::read_to_string(k8s.join("base/sweep.toml")).unwrap(),
        std::fs::read_to_string(repo().join("sweeps/lab4.toml")).unwrap(),
        "deploy/kubernetes/base/sweep.toml differs from sweeps/lab4.toml: copy it again"
    );
}

#[test]
fn dockerfile_lints_clean() {
    let Some(t) = tools("dockerfile_lints_clean", &["hadolint"]) else {
        return;
    };
    let dockerfile = repo().join("deploy/docker/Dockerfile");
    let out = run_ok(Command::new(&t[0]).arg(&dockerfile));
    assert!(text(&out.stdout).trim().is_empty(), "{}", text(&out.stdout));
    // The worker image is built from the bundle of scripts/bundle-worker.sh, by its fixed name.
    let body = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(
        body.contains("dist/hypersweep-worker-${VERSION}-linux-x86_64-${VARIANT}.tar.zst"),
        "the Dockerfile no longer copies the worker bundle by its name"
    );
}

/// The absolute program of each `ExecStart=` line of `unit`.
fn exec_start_programs(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// `systemd-analyze verify` checks that the programs a unit starts exist; they are not
/// installed here, so it runs against a temporary root that holds this machine's own units
/// (what `After=`/`WantedBy=` refer to), the units of deploy/systemd, and an executable file
/// at each `ExecStart` path. Any message it prints fails the test: unknown keys and bad
/// values are only warnings to it.
#[test]
fn systemd_units_verify() {
    let Some(t) = tools("systemd_units_verify", &["systemd-analyze"]) else {
        return;
    };
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .expect("this machine's systemd units (sysinit.target)");
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(system_units)
            .arg(mkdir(r.join("usr/lib/systemd"))),
    );
    let etc = mkdir(r.join("etc/systemd/system"));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let unit = std::fs::read_to_string(&path).unwrap();
        for program in exec_start_programs(&unit) {
            assert!(
                program.starts_with('/'),
                "{name}: {program} is not absolute"
            );
            let stand_in = r.join(program.trim_start_matches('/'));
            std::fs::create_dir_all(stand_in.parent().unwrap()).unwrap();
            std::fs::write(
                &stand_in,
                "#!/bin/sh\n# stands in for the binary the unit starts\n",
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::copy(&path, etc.join(&name)).unwrap();
        // A template is verified through an instance of it.
        names.push(name.replace("@.", "@0."));
    }
    assert_eq!(names.len(), 2, "{names:?}");
    let out = run_ok(
        Command::new(&t[0])
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .args(&names),
    );
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// Creates the folder `p` (and its parents) and returns it.
fn mkdir(p: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Each scrape configuration with `promtool check config`, where Prometheus would read it:
/// the token files it names (relative to the configuration's folder) exist there, as the
/// file_sd folder does. Then the rules (`check rules`) and what they compute (`test rules`).
#[test]
fn prometheus_configs_and_rules_check() {
    let Some(t) = tools("prometheus_configs_and_rules_check", &["promtool"]) else {
        return;
    };
    let promtool = &t[0];
    let src = repo().join("deploy/prometheus");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        std::fs::copy(&path, d.join(&name)).unwrap();
        if name.starts_with("scrape-") {
            configs.push(name);
        }
    }
    configs.sort();
    assert_eq!(
        configs,
        [
            "scrape-kubernetes.yml",
            "scrape-slurm.yml",
            "scrape-static.yml"
        ],
        "one scrape configuration per engine"
    );
    std::fs::write(d.join("hypersweep-token"), "0123456789abcdef0123\n").unwrap();
    std::fs::write(
        mkdir(d.join("secrets/hypersweep-token")).join("token"),
        "0123456789abcdef0123\n",
    )
    .unwrap();
    // The certificates the configurations trust (the coordinator serves /metrics over TLS).
    let cert = rcgen::generate_simple_self_signed(["coordinator".to_owned()])
        .unwrap()
        .cert
        .pem();
    std::fs::write(d.join("hypersweep-ca.pem"), &cert).unwrap();
    std::fs::write(
        mkdir(d.join("configmaps/hypersweep-ca")).join("ca.crt"),
        &cert,
    )
    .unwrap();
    // A target file as deploy/slurm/sweep.sbatch writes it (HYPERSWEEP_PROMETHEUS_SD_DIR).
    std::fs::write(
        mkdir(d.join("hypersweep-targets")).join("hypersweep-7.json"),
        r#"[{"targets": ["192.0.2.2:20008"], "labels": {"sweep": "smoke", "slurm_job_id": "7"}}]"#,
    )
    .unwrap();
    for config in &configs {
        let body = std::fs::read_to_string(d.join(config)).unwrap();
        assert!(
            body.contains("type: Bearer") && body.contains("credentials_file:"),
            "{config}: the token must be sent as a bearer token from a file"
        );
        assert!(
            body.contains("scheme: https") && body.contains("ca_file:"),
            "{config}: the token must not cross the network in clear text"
        );
        let out = run_ok(
            Command::new(promtool)
                .args(["check", "config"])
                .arg(d.join(config)),
        );
        let said = text(&out.stdout) + &text(&out.stderr);
        assert!(!said.contains("WARNING"), "{config}: {said}");
    }
    // What Prometheus makes of that file: the job's target with its labels.
    let sd = run_ok(
        Command::new(promtool)
            .current_dir(d)
            .args(["check", "service-discovery", "--timeout=2s"])
            .args(["scrape-slurm.yml", "hypersweep"]),
    );
    let targets: Value = serde_json::from_slice(&sd.stdout).expect("promtool's JSON");
    let labels = &targets[0]["labels"];
    assert_eq!(labels["instance"], "192.0.2.2:20008", "{targets}");
    assert_eq!(labels["sweep"], "smoke");
    assert_eq!(labels["slurm_job_id"], "7");
    assert_eq!(labels["engine"], "slurm");
    run_ok(
        Command::new(promtool)
            .args(["check", "rules"])
            .arg(d.join("rules.yml")),
    );
    run_ok(
        Command::new(promtool)
            .args(["test", "rules"])
            .arg(d.join("rules.test.yml")),
    );
}

/// Names matching `prefix[a-z0-9_:]*` in `s`.
fn names_with(s: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Every `expr` (and query) anywhere in a Grafana dashboard.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The dashboard queries nothing but the recording rules (which promtool checks and tests),
/// the rules read only the metrics the coordinator serves, and every one of those metrics is
/// on the dashboard and in deploy/README.md.
#[test]
fn grafana_dashboard_queries_are_checked_rules() {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/rules.yml")).unwrap();
    let recorded: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(|n| n.trim().to_owned())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/hypersweep.json")).unwrap(),
    )
    .expect("deploy/grafana/hypersweep.json is JSON");
    let mut qs = Vec::new();
    queries(&dashboard, &mut qs);
    assert!(qs.len() > 10, "{qs:?}");
    let mut used = BTreeSet::new();
    for q in &qs {
        assert!(
            names_with(q, "hypersweep_").is_empty(),
            "{q}: the dashboard must query recording rules only, so that promtool checks them"
        );
        for name in names_with(q, "hypersweep:") {
            assert!(
                recorded.contains(&name),
                "{q}: {name} is no rule of rules.yml"
            );
            used.insert(name);
        }
    }
    assert_eq!(used, recorded, "rules the dashboard does not show");

    let documented = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    let read: BTreeSet<String> = names_with(&rules, "hypersweep_")
        .into_iter()
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(&n)
                .to_owned()
        })
        .collect();
    let served: BTreeSet<String> = METRICS.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        read, served,
        "rules.yml and the coordinator's metrics differ"
    );
    for m in METRICS {
        assert!(
            documented.contains(&format!("`{m}")),
            "deploy/README.md lacks {m}"
        );
    }
}

#[test]
fn shell_scripts_lint_clean() {
    let Some(t) = tools("shell_scripts_lint_clean", &["shellcheck"]) else {
        return;
    };
    let r = repo();
    run_ok(
        Command::new(&t[0])
            .args(["--severity=warning", "--shell=bash"])
            .arg(r.join("deploy/slurm/sweep.sbatch"))
            .arg(r.join("deploy/slurm/workers.sbatch"))
            .arg(r.join("scripts/slurm-local.sh"))
            .arg(r.join("scripts/ci-tools.sh"))
            // issue 10: the GPU check runs where nobody can watch it fail.
            .arg(r.join("scripts/gpu-check.sh"))
            .arg(r.join("scripts/gpu-pack.sh")),
    );
}
