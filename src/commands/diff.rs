//! `homelab diff <app>`: what a sync would change — per object, a unified diff from live to git
//! (secrets redacted), and what would be pruned. Writes nothing, not even status.

use kube::api::{Api, DynamicObject};
use serde_json::json;

use super::{Ctx, ExitStatus};
use crate::cli::DiffArgs;
use crate::edges::error::{Error, Result};
use crate::edges::output::OutputFormat;
use crate::sync::engine::{Engine, EngineConfig, Mode, app_resource};

pub(super) async fn run(ctx: &Ctx, args: &DiffArgs) -> Result<ExitStatus> {
    let client = super::kube_target::client(ctx, &args.kube).await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &args.kube.app_namespace, &app_resource());
    let app = api
        .get_opt(&args.app)
        .await
        .map_err(|e| {
            Error::msg(format!(
                "read Application `{}`: {}",
                args.app,
                crate::cluster::kube::describe(&e)
            ))
        })?
        .ok_or_else(|| {
            Error::msg(format!(
                "no Application `{}` in `{}`",
                args.app, args.kube.app_namespace
            ))
            .hint("list them with `homelab apps`")
        })?;
    let mut app = serde_json::to_value(&app).expect("objects serialize");
    app["apiVersion"] = json!(crate::sync::app::API_VERSION);
    app["kind"] = json!(crate::sync::app::KIND);
    let mut cfg = EngineConfig::new(super::sync::work_dir(ctx, args.work_dir.as_deref()));
    cfg.app_namespace = args.kube.app_namespace.clone();
    cfg.ca_pem = super::sync::read_ca(args.ca_file.as_deref())?;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(client, cfg, tx);
    let outcome = engine.reconcile(&app, Mode::Preview).await?;
    if let Some(c) = outcome.conditions.iter().find(|c| c.kind.is_error()) {
        return Err(Error::msg(format!(
            "compare Application `{}`: {}",
            args.app, c.message
        )));
    }
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&json!({
            "app": outcome.name,
            "revision": outcome.revision,
            "sync": outcome.sync.as_str(),
            "objects": outcome.diffs.iter().map(|d| json!({
                "object": d.key.to_string().replace('`', ""),
                "change": d.change,
                "diff": d.text,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            let mut out = String::new();
            for d in &outcome.diffs {
                let what = match d.change {
                    "Prune" => "would be pruned",
                    "Missing" => "would be created",
                    _ => "would change",
                };
                out.push_str(&format!(
                    "==== {} {what} ====\n",
                    d.key.to_string().replace('`', "")
                ));
                out.push_str(&d.text);
            }
            if out.is_empty() {
                ctx.printer.info(&format!(
                    "`{}` matches git at {}",
                    args.app,
                    outcome.revision.as_deref().unwrap_or("?")
                ));
            } else {
                ctx.printer.data(&out);
            }
        }
    }
    Ok(if outcome.diffs.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
