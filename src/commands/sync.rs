//! `homelab sync`: the sync engine, once (`--once`, or named Applications), from a laptop
//! (`--watch`), or as the in-cluster Deployment (`--in-cluster`: service account, `/healthz`,
//! `/readyz`, `/webhook`, `/metrics`, the lab page at `/`, JSON logs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::{Ctx, ExitStatus};
use crate::cli::SyncArgs;
use crate::edges::error::{Error, Result, io_err};
use crate::edges::output::OutputFormat;
use crate::edges::redact::Secret;
use crate::sync::engine::{Engine, EngineConfig, Mode, Outcome};
use crate::sync::lease::{Leader, LeaseConfig};
use crate::sync::page::gather::{PageConfig, PageSource};
use crate::sync::run::{self, SchedulerConfig, Trigger};
use crate::sync::server::{self, ServerState};
use crate::sync::webhook::{DEFAULT_MAX_BODY, DEFAULT_REMEMBERED, Webhook, WebhookConfig};

/// Where checkouts go by default.
pub(super) fn work_dir(ctx: &Ctx, flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(p) => p.to_path_buf(),
        None => std::env::temp_dir().join(format!("homelab-sync-{}", ctx.settings.lab)),
    }
}

/// The CA bundle to trust for git, if one is configured.
pub(super) fn read_ca(file: Option<&Path>) -> Result<Option<String>> {
    match file {
        None => Ok(None),
        Some(p) => Ok(Some(std::fs::read_to_string(p).map_err(io_err("read", p))?)),
    }
}

fn identity(in_cluster: bool) -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into());
    if in_cluster {
        host
    } else {
        format!("laptop-{host}-{}", std::process::id())
    }
}

fn webhook_secret(args: &SyncArgs) -> Result<Option<Secret>> {
    if let Some(p) = &args.webhook_secret_file {
        let s = std::fs::read_to_string(p).map_err(io_err("read", p))?;
        return Ok(Some(Secret::new(s.trim_end_matches(['\n', '\r']))));
    }
    Ok(std::env::var("HOMELAB_SYNC_WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(Secret::new))
}

pub(super) async fn run(ctx: &Ctx, args: &SyncArgs) -> Result<ExitStatus> {
    if !args.once && !args.watch && !args.in_cluster && args.apps.is_empty() {
        return Err(Error::msg("say how to run the sync engine")
            .hint("`homelab sync --once` reconciles every Application once; `homelab sync APP` syncs one now; `homelab sync --watch` keeps going"));
    }
    // `--in-cluster` with `--kubeconfig` runs the in-cluster mode (endpoints, JSON logs) from
    // anywhere, e.g. to debug it from a laptop.
    let client = if args.in_cluster && args.kube.kubeconfig.is_none() {
        crate::cluster::kube::connect_in_cluster(&Default::default()).await?
    } else {
        super::kube_target::client(ctx, &args.kube).await?
    };
    let poll = crate::sync::app::parse_duration(&args.poll).ok_or_else(|| {
        Error::msg(format!("`--poll {}` is not a duration", args.poll)).hint("e.g. `2m`, `90s`")
    })?;
    let mut cfg = EngineConfig::new(work_dir(ctx, args.work_dir.as_deref()));
    cfg.app_namespace = args.kube.app_namespace.clone();
    cfg.poll = poll;
    cfg.status_refresh = poll;
    cfg.ca_pem = read_ca(args.ca_file.as_deref())?;
    cfg.namespaces = args.namespaces.clone().filter(|n| !n.is_empty());
    let (touched_tx, touched_rx) = mpsc::unbounded_channel();
    let engine = Arc::new(Engine::new(client.clone(), cfg, touched_tx));
    let mut lease = LeaseConfig::new(identity(args.in_cluster));
    lease.namespace = match &args.lease_namespace {
        Some(ns) => ns.clone(),
        None if args.in_cluster => {
            std::env::var("POD_NAMESPACE").unwrap_or_else(|_| lease.namespace.clone())
        }
        None => lease.namespace.clone(),
    };
    let (leader, leader_rx) = Leader::new(client, lease);

    if args.once || !args.apps.is_empty() {
        return once(ctx, args, &engine, &leader).await;
    }

    // Fail fast on what would otherwise be a warning every few seconds forever.
    match leader.try_acquire().await {
        Ok(true) => {}
        Ok(false) => {
            let holder = leader.current_holder().await.ok().flatten();
            ctx.printer.info(&format!(
                "standing by: `{}` holds the Lease; this engine acts once it is released",
                holder.unwrap_or_else(|| "another engine".into())
            ));
        }
        Err(e @ crate::sync::lease::LeaseError::NoNamespace { .. }) => return Err(e.into()),
        Err(e) => tracing::warn!(error = %e, "lease"),
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (trig_tx, trig_rx) = mpsc::unbounded_channel::<Trigger>();
    let (ready_tx, ready_rx) = watch::channel(false);
    let leader = Arc::new(leader);
    let lease_task = {
        let leader = leader.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { leader.run(stop).await })
    };
    let loop_task = tokio::spawn(run::run(
        engine.clone(),
        SchedulerConfig::default(),
        trig_rx,
        touched_rx,
        leader_rx.clone(),
        ready_tx,
        stopped(stop_rx.clone()),
    ));
    let server_task = if args.in_cluster {
        let secret = webhook_secret(args)?;
        if secret.is_none() {
            tracing::warn!(
                "no webhook secret (HOMELAB_SYNC_WEBHOOK_SECRET or --webhook-secret-file): /webhook is disabled; polling every {}",
                args.poll
            );
        }
        let mut scrub = crate::edges::redact::Scrubber::new();
        if let Some(s) = &secret {
            scrub.add_secret(s);
        }
        let page = Arc::new(PageSource::new(PageConfig {
            namespace: std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
                .or_else(|| args.lease_namespace.clone())
                .unwrap_or_else(|| "homelab-system".into()),
            ca_pem: engine
                .config()
                .ca_pem
                .as_deref()
                .and_then(crate::sync::page::public_certificates),
            scrub,
        }));
        let hook = secret.map(|secret| {
            Arc::new(Webhook::new(WebhookConfig {
                secret,
                max_body: DEFAULT_MAX_BODY,
                remembered: DEFAULT_REMEMBERED,
            }))
        });
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Error::msg(format!("listen on `{}`: {e}", args.listen)))?;
        tracing::info!(addr = %args.listen, "serving /healthz, /readyz, /webhook, /metrics and the lab page at /");
        let state = Arc::new(ServerState {
            engine: engine.clone(),
            webhook: hook,
            triggers: trig_tx.clone(),
            ready: ready_rx,
            leader: leader_rx,
            page: Some(page),
        });
        Some(tokio::spawn(server::serve(
            listener,
            state,
            stopped(stop_rx.clone()),
        )))
    } else {
        ctx.printer.info(&format!(
            "watching Applications in `{}`; Ctrl-C to stop",
            args.kube.app_namespace
        ));
        None
    };
    shutdown_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = loop_task.await;
    let _ = lease_task.await;
    if let Some(t) = server_task {
        let _ = t.await;
    }
    drop(trig_tx);
    Ok(ExitStatus::Success)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn once(ctx: &Ctx, args: &SyncArgs, engine: &Engine, leader: &Leader) -> Result<ExitStatus> {
    leader.acquire_or_fail().await?;
    let result = reconcile_all(args, engine).await;
    leader.release().await;
    let outcomes = result?;
    let failed = outcomes
        .iter()
        .any(|o| o.conditions.iter().any(|c| c.kind.is_error()));
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(
            &outcomes
                .iter()
                .map(|o| {
                    json!({
                        "name": o.name,
                        "sync": o.sync.as_str(),
                        "health": o.health.status.as_str(),
                        "revision": o.revision,
                        "operation": o.operation,
                        "applied": o.applied,
                        "pruned": o.pruned,
                        "conditions": o.conditions,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Text => {
            if outcomes.is_empty() {
                ctx.printer
                    .info(&format!("no Applications in `{}`", args.kube.app_namespace));
            }
            let mut out = String::new();
            for o in &outcomes {
                let rev = o.revision.as_deref().unwrap_or("-");
                out.push_str(&format!(
                    "{:<24} {:<10} {:<12} {:<9} applied {:<4} pruned {}\n",
                    o.name,
                    o.sync.as_str(),
                    o.health.status.as_str(),
                    &rev[..rev.len().min(8)],
                    o.applied,
                    o.pruned
                ));
                for c in &o.conditions {
                    out.push_str(&format!("    {}: {}\n", c.kind.as_str(), c.message));
                }
            }
            if !out.is_empty() {
                ctx.printer.data(&out);
            }
        }
    }
    Ok(if failed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

async fn reconcile_all(args: &SyncArgs, engine: &Engine) -> Result<Vec<Outcome>> {
    let apps = engine.list_apps().await?;
    for name in &args.apps {
        if !apps.iter().any(|a| a["metadata"]["name"] == name.as_str()) {
            return Err(Error::msg(format!(
                "no Application `{name}` in `{}`",
                args.kube.app_namespace
            ))
            .hint("list them with `homelab apps`"));
        }
    }
    let mode = if args.apps.is_empty() {
        Mode::Auto
    } else {
        Mode::Manual { prune: args.prune }
    };
    let mut out = Vec::new();
    for app in &apps {
        let name = app["metadata"]["name"].as_str().unwrap_or_default();
        if !args.apps.is_empty() && !args.apps.iter().any(|a| a == name) {
            continue;
        }
        out.push(engine.reconcile(app, mode).await?);
    }
    Ok(out)
}
