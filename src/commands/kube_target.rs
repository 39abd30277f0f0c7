//! Which cluster `sync`, `apps` and `diff` talk to from a laptop: `--kubeconfig`, else the lab's
//! own kubeconfig (written by `up`), else `$KUBECONFIG`, else `~/.kube/config`.

use std::path::PathBuf;

use super::Ctx;
use crate::cli::KubeArgs;
use crate::cluster::kube::{ClientOptions, KubeTarget, connect};
use crate::edges::error::{Error, Result};
use crate::edges::state::LabState;

/// The lab state file holding the lab's kubeconfig.
const LAB_KUBECONFIG: &str = "kubeconfig";

/// Resolve the kubeconfig and context.
pub(super) fn target(ctx: &Ctx, args: &KubeArgs) -> Result<KubeTarget> {
    let context = args
        .context
        .clone()
        .or_else(|| ctx.settings.context.clone());
    if let Some(p) = &args.kubeconfig {
        return Ok(KubeTarget::new(p).with_context(context));
    }
    if let Ok(state) = LabState::locate(&ctx.settings.lab) {
        let p = state.path(LAB_KUBECONFIG);
        if p.exists() {
            return Ok(KubeTarget::new(p).with_context(context));
        }
    }
    let from_env =
        std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).find(|p| p.exists()));
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
    match from_env.or(home.filter(|p| p.exists())) {
        Some(p) => Ok(KubeTarget::new(p).with_context(context)),
        None => Err(
            Error::msg(format!("no kubeconfig for lab `{}`", ctx.settings.lab))
                .hint("run `homelab up` first, or pass `--kubeconfig FILE`"),
        ),
    }
}

/// A client for `args`.
pub(super) async fn client(ctx: &Ctx, args: &KubeArgs) -> Result<kube::Client> {
    let t = target(ctx, args)?;
    Ok(connect(&t, &ClientOptions::default()).await?)
}
