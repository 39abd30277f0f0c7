//! Benchmark (not a timed test): apply 1,000 objects against the fake API server, then apply the
//! same set again. Prints requests per verb, wall time and peak memory (VmHWM of this process,
//! which also hosts the fake server).
//!
//! Run: `cargo bench --bench apply`

// The bench drives part of the test fake; the rest is used by the tests.
#[allow(dead_code)]
#[path = "../tests/support/fake_kube/mod.rs"]
mod fake_kube;
// The HTTP kit the fakes share; the bench uses the part the fake API server needs.
#[allow(dead_code)]
#[path = "../tests/support/http_kit/mod.rs"]
mod http_kit;

use std::collections::BTreeMap;
use std::time::Instant;

use homelab::cluster::apply::{Applier, ApplyOptions, Manifest};
use homelab::model::render::label;
use serde_json::json;

fn objects() -> Vec<Manifest> {
    let mut out = Vec::new();
    for n in 0..10 {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("bench-{n}")}}));
    }
    for i in 0..400 {
        out.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "namespace": format!("bench-{}", i % 10)},
            "data": {"key": format!("value-{i}"), "other": "x".repeat(200)}}));
    }
    for i in 0..300 {
        out.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": format!("bench-{}", i % 10)},
            "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}));
    }
    for i in 0..290 {
        out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("app-{i}"), "namespace": format!("bench-{}", i % 10)},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.29.3", "ports": [{"containerPort": 8080}],
                        "env": [{"name": "N", "value": i.to_string()}]}]}}}}));
    }
    out.into_iter()
        .map(|mut o| {
            label(&mut o, "bench", "bench");
            Manifest {
                origin: "bench".into(),
                object: o,
            }
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = fake_kube::FakeKube::start().await;
        let dir = tempfile::tempdir().unwrap();
        let target = homelab::cluster::kube::KubeTarget::new(fake.write_kubeconfig(dir.path()));
        let client = homelab::cluster::kube::connect(&target, &Default::default())
            .await
            .unwrap();
        let set = objects();
        let opts = ApplyOptions {
            ownership: BTreeMap::from([("homelab.dev/lab".to_string(), "bench".to_string())]),
            live_selector: Some("homelab.dev/lab=bench".into()),
            ..ApplyOptions::default()
        };
        println!("objects: {}", set.len());
        for run in ["first apply (creates)", "second apply (unchanged)"] {
            fake.clear_requests();
            let started = Instant::now();
            let report = Applier::new(client.clone())
                .apply(&set, &opts)
                .await
                .unwrap();
            let elapsed = started.elapsed();
            let counts = fake.verb_counts();
            println!(
                "{run}: {:.0} ms, {} created, {} unchanged, requests {:?}, writes {}",
                elapsed.as_secs_f64() * 1000.0,
                report.count(homelab::cluster::apply::Change::Created),
                report.count(homelab::cluster::apply::Change::Unchanged),
                counts,
                fake.writes().len()
            );
        }
        println!(
            "peak memory (VmHWM, client + fake server in one process): {:.1} MiB",
            peak_rss_mib()
        );
    });
}
