//! `homelab apps`: the Applications with their sync and health status, as Argo CD shows them.

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

use super::{Ctx, ExitStatus};
use crate::cli::AppsArgs;
use crate::edges::error::{Error, Result};
use crate::edges::output::OutputFormat;
use crate::sync::engine::app_resource;

pub(super) async fn run(ctx: &Ctx, args: &AppsArgs) -> Result<ExitStatus> {
    let client = super::kube_target::client(ctx, &args.kube).await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, &args.kube.app_namespace, &app_resource());
    let list = api.list(&ListParams::default()).await.map_err(|e| {
        Error::msg(format!(
            "list Applications in `{}`: {}",
            args.kube.app_namespace,
            crate::cluster::kube::describe(&e)
        ))
        .hint("check that the Application CRD is installed (`kubectl get crd applications.argoproj.io`)")
    })?;
    let mut rows: Vec<Value> = list
        .items
        .iter()
        .map(|o| {
            let v = serde_json::to_value(o).expect("objects serialize");
            let s = &v["status"];
            json!({
                "name": v["metadata"]["name"],
                "sync": s["sync"]["status"].as_str().unwrap_or("Unknown"),
                "health": s["health"]["status"].as_str().unwrap_or("Unknown"),
                "revision": s["sync"]["revision"],
                "reconciledAt": s["reconciledAt"],
                "repoURL": crate::edges::redact::redact_url(v["spec"]["source"]["repoURL"].as_str().unwrap_or_default()),
                "path": v["spec"]["source"]["path"],
                "conditions": s["conditions"].as_array().cloned().unwrap_or_default(),
                "operation": s["operationState"]["phase"],
            })
        })
        .collect();
    rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&rows),
        OutputFormat::Text => {
            if rows.is_empty() {
                ctx.printer
                    .info(&format!("no Applications in `{}`", args.kube.app_namespace));
                return Ok(ExitStatus::Success);
            }
            let mut out = format!(
                "{:<24} {:<10} {:<12} {:<9} {:<21} {}\n",
                "NAME", "SYNC", "HEALTH", "REVISION", "RECONCILED", "CONDITIONS"
            );
            for r in &rows {
                let rev = r["revision"].as_str().unwrap_or("-");
                let conds: Vec<String> = r["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c["type"].as_str().unwrap_or_default(),
                            c["message"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "{:<24} {:<10} {:<12} {:<9} {:<21} {}\n",
                    r["name"].as_str().unwrap_or_default(),
                    r["sync"].as_str().unwrap_or_default(),
                    r["health"].as_str().unwrap_or_default(),
                    &rev[..rev.len().min(8)],
                    r["reconciledAt"].as_str().unwrap_or("-"),
                    if conds.is_empty() {
                        "-".to_string()
                    } else {
                        conds.join("; ")
                    }
                ));
            }
            ctx.printer.data(&out);
        }
    }
    Ok(ExitStatus::Success)
}
