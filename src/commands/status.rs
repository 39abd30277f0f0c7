//! `homelab status`: the lab's VMs, cluster and nodes, its kube context, and which `up` steps
//! an earlier run finished. Read-only.

use serde::Serialize;
use time::OffsetDateTime;

use super::{Ctx, ExitStatus};
use crate::cluster::deploy::{self, ComponentHealth};
use crate::cluster::kubeconfig::UserKubeconfig;
use crate::edges::error::Result;
use crate::edges::output::OutputFormat;
use crate::edges::output::human;
use crate::edges::state;
use crate::edges::state::LabState;
use crate::model::render::Manifests;
use crate::model::render::{self, Domain, RenderInput};
use crate::model::settings::ProviderKind;
use crate::model::stack::Stack;
use crate::model::templates::Templates;
use crate::provider::multipass::snapshot::SnapshotRecord;
use crate::provider::multipass::{self, ClusterView, Multipass, VmView, decide::gib};
use crate::provider::{LabRecord, existing};
use crate::up::{self, UpRecord, Waits};
use crate::{cluster::upstream, model::tls};

/// What `status` reports; `export logs` writes it into its archive as JSON.
#[derive(Serialize)]
pub(super) struct Status {
    lab: String,
    exists: bool,
    provider: ProviderKind,
    vms: Vec<VmView>,
    cluster: Option<ClusterView>,
    context: Option<ContextView>,
    steps: Vec<StepView>,
    /// Health of each deployed component; empty until the cluster answers and the lab has
    /// been rendered once (secrets and CA exist).
    components: Vec<ComponentHealth>,
    /// Why component health could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    components_note: Option<String>,
    /// The VMs' snapshot `homelab reset` restores (multipass labs), when taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<SnapshotRecord>,
}

#[derive(Serialize)]
struct ContextView {
    name: String,
    kubeconfig: String,
}

#[derive(Serialize)]
struct StepView {
    name: String,
    done: bool,
    completed_at: Option<String>,
    /// How long it took; for people (the JSON keeps its shape).
    #[serde(skip)]
    duration_ms: Option<u64>,
}

pub(super) async fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let status = gather(ctx, Components::Health).await?;
    match ctx.printer.ui().format {
        OutputFormat::Json => ctx.printer.json(&status),
        OutputFormat::Text => ctx.printer.data(&text(&status, OffsetDateTime::now_utc())),
    }
    Ok(ExitStatus::Success)
}

/// Whether [`gather`] reads component health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Components {
    /// Read it (`status`).
    Health,
    /// Leave it out: it reads every object the lab applied, its Secrets included, and
    /// `export logs` never reads a Secret.
    LeftOut,
}

/// Look at the lab (read-only): what `status` prints.
pub(super) async fn gather(ctx: &Ctx, components: Components) -> Result<Status> {
    let settings = &ctx.settings;
    let lab = settings.lab.clone();
    let state = LabState::locate(&lab)?;
    let record = LabRecord::load(&state)?;
    let up_record = UpRecord::load(&state)?;
    let provider = record.as_ref().map_or(settings.provider, |r| r.provider);

    let mut vms = Vec::new();
    let mut cluster = None;
    if provider == ProviderKind::Multipass && (record.is_some() || state.exists()) {
        let waits = Waits::from_env(settings.test_waits.as_deref())?;
        let mp = Multipass::find(waits.exec)?;
        vms = multipass::observe_vms(&mp, &lab).await?;
        cluster = Some(match vms.first() {
            Some(first) if first.state == "Running" => {
                multipass::observe_cluster(&mp, &first.name).await?
            }
            Some(first) => ClusterView {
                reachable: false,
                detail: format!("VM `{}` is {}", first.name, first.state),
                nodes: Vec::new(),
            },
            None => ClusterView {
                reachable: false,
                detail: "no VMs".into(),
                nodes: Vec::new(),
            },
        });
    }
    if provider == ProviderKind::Existing
        && let Some(r) = &record
    {
        let mut with_context = settings.clone();
        with_context.context = Some(r.context.clone());
        cluster = Some(existing_view(&with_context).await);
    }
    let context = match provider {
        ProviderKind::Multipass => {
            let name = settings.context_name();
            UserKubeconfig::from_env()?
                .holding(&name)?
                .map(|p| ContextView {
                    name,
                    kubeconfig: p.display().to_string(),
                })
        }
        ProviderKind::Existing => record.as_ref().map(|r| ContextView {
            name: r.context.clone(),
            kubeconfig: "(your kubeconfig)".into(),
        }),
    };
    let mut as_built = settings.clone();
    as_built.provider = provider;
    let steps = up::pipeline(&as_built)
        .names()
        .into_iter()
        .map(|n| StepView {
            name: n.to_string(),
            done: up_record.steps.contains_key(n),
            completed_at: up_record.steps.get(n).map(|r| r.completed_at.clone()),
            duration_ms: up_record.steps.get(n).map(|r| r.duration_ms),
        })
        .collect();
    let reachable = cluster.as_ref().is_some_and(|c| c.reachable);
    let (components, components_note) = match (&record, reachable) {
        (Some(_), true)
            if up_record.steps.contains_key(crate::up::steps::DEPLOY)
                && components == Components::LeftOut =>
        {
            (
                Vec::new(),
                Some("left out: reading component health reads the lab's Secret objects".into()),
            )
        }
        (Some(r), true) if up_record.steps.contains_key(crate::up::steps::DEPLOY) => {
            match component_health(ctx, &state, r).await {
                Ok(c) => (c, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            }
        }
        _ => (Vec::new(), None),
    };
    let snapshot = SnapshotRecord::load(&state)?;
    let status = Status {
        snapshot,
        lab,
        exists: record.is_some() || !vms.is_empty(),
        provider,
        vms,
        cluster,
        context,
        steps,
        components,
        components_note,
    };
    Ok(status)
}

/// Health of every component, from the cluster (reads only; nothing is generated or written).
async fn component_health(
    ctx: &Ctx,
    state: &LabState,
    record: &LabRecord,
) -> Result<Vec<ComponentHealth>> {
    let Some((stack, manifests)) = lab_manifests(ctx, state, record)? else {
        return Ok(Vec::new());
    };
    let client = record.cluster(state).client().await?;
    Ok(deploy::health(&client, &manifests, &stack).await?)
}

/// The stack and the manifests the lab runs, rendered from its state as `up` rendered them
/// (nothing generated or written); `None` before the lab has secrets and a CA. What `status`
/// and `reset` read component health against.
pub(super) fn lab_manifests(
    ctx: &Ctx,
    state: &LabState,
    record: &LabRecord,
) -> Result<Option<(Stack, Manifests)>> {
    let settings = &ctx.settings;
    let stack = ctx.stack()?;
    let (Some(secrets), Some(ca)) = (state.stored_secrets()?, tls::load(state)?) else {
        return Ok(None);
    };
    let cluster = record.cluster(state);
    let node_ip = cluster.node_ips.first().map(String::as_str);
    let domain = Domain::resolve(settings.domain.as_deref(), node_ip);
    let upstream = upstream::cached(&stack, &upstream::read_lock(state)?, &state::cache_root()?)?;
    let manifests = render::render(
        &Templates::embedded()?,
        &RenderInput::for_lab(settings, &stack, &domain, &secrets, &ca, node_ip, &upstream),
    )?;
    Ok(Some((stack, manifests)))
}

/// An existing cluster as seen through the user's kubeconfig; failures are shown, not raised.
async fn existing_view(settings: &crate::model::settings::Settings) -> ClusterView {
    let unreachable = |detail: String| ClusterView {
        reachable: false,
        detail,
        nodes: Vec::new(),
    };
    let cluster = match existing::resolve(settings) {
        Ok(c) => c,
        Err(e) => return unreachable(e.to_string()),
    };
    let facts = match existing::look(&cluster).await {
        Ok(f) => f,
        Err(e) => return unreachable(e.to_string()),
    };
    let default = facts
        .storage_classes
        .iter()
        .find(|(_, d)| *d)
        .map_or("no default StorageClass".to_string(), |(n, _)| {
            format!("default StorageClass `{n}`")
        });
    let nodes = existing::nodes(&cluster).await.unwrap_or_default();
    ClusterView {
        reachable: true,
        detail: format!("Kubernetes {}, {default}", facts.version),
        nodes,
    }
}

/// What `status` prints for people, seen at `now`: ages and durations, paths under the home
/// directory as `~/…` (the JSON keeps RFC 3339 times and whole paths).
fn text(s: &Status, now: OffsetDateTime) -> String {
    if !s.exists {
        return format!("Lab `{}` does not exist; `homelab up` creates it\n", s.lab);
    }
    let mut out = format!("Lab `{}` ({})\n", s.lab, s.provider);
    if s.provider == ProviderKind::Multipass {
        out.push_str("\nVMs\n");
        if s.vms.is_empty() {
            out.push_str("  none\n");
        }
        for vm in &s.vms {
            let memory = match (vm.memory_used, vm.memory_total) {
                (Some(u), Some(t)) => format!("{} of {} memory", gib(u), gib(t)),
                (None, Some(t)) => format!("{} memory", gib(t)),
                _ => String::new(),
            };
            let cpus = vm.cpus.map(|c| format!("{c} CPUs")).unwrap_or_default();
            let line = format!(
                "  {}  {}  {}  {}  {}",
                vm.name,
                vm.state,
                vm.ip.as_deref().unwrap_or("-"),
                cpus,
                memory
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    if let Some(c) = &s.cluster {
        out.push_str(&format!(
            "\nCluster: {} ({})\n",
            if c.reachable {
                "reachable"
            } else {
                "not reachable"
            },
            c.detail
        ));
        for n in &c.nodes {
            let line = format!(
                "  {}  {}  {}",
                n.name,
                if n.ready {
                    "Ready".to_string()
                } else {
                    n.why_not.clone().unwrap_or_else(|| "not Ready".into())
                },
                n.version.as_deref().unwrap_or("")
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    match &s.context {
        Some(c) => out.push_str(&format!(
            "\nKube context: `{}` in `{}`\n",
            c.name,
            human::tilde_in(&c.kubeconfig)
        )),
        None => out.push_str("\nKube context: none\n"),
    }
    if s.provider == ProviderKind::Multipass {
        out.push_str(&match &s.snapshot {
            Some(snap) => format!(
                "Snapshot: `{}` of {} VM(s), taken {} (`homelab reset` restores it)\n",
                snap.name,
                snap.vms.len(),
                snap.when()
            ),
            None => "Snapshot: none yet (the last step of `homelab up` takes it; `homelab reset` restores it)\n".into(),
        });
    }
    if !s.components.is_empty() || s.components_note.is_some() {
        out.push_str("\nComponents\n");
        if let Some(note) = &s.components_note {
            out.push_str(&format!("  health not available: {note}\n"));
        }
        let width = s.components.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &s.components {
            let line = format!(
                "  {:<width$}  {:<11}  {}",
                c.name,
                c.state,
                c.problems.join("; ")
            );
            out.push_str(line.trim_end());
            out.push('\n');
            // Where the component has Applications: their status as the engine wrote it.
            for a in &c.applications {
                out.push_str(&format!("    {}: {}\n", a.application, a.summary));
            }
        }
    }
    out.push_str("\nSteps of `homelab up`\n");
    let width = s.steps.iter().map(|x| x.name.len()).max().unwrap_or(0);
    for st in &s.steps {
        let line = match &st.completed_at {
            Some(at) => format!(
                "  ✓ {:<width$}  {}",
                st.name,
                done_text(at, st.duration_ms, now)
            ),
            None => format!("  - {:<width$}  not done", st.name),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `done 3 min ago, took 1.4s` for a step an earlier `up` recorded.
fn done_text(completed_at: &str, duration_ms: Option<u64>, now: OffsetDateTime) -> String {
    let mut text = format!("done {}", human::age_of(completed_at, now));
    if let Some(ms) = duration_ms {
        text.push_str(&format!(
            ", took {}",
            human::duration(std::time::Duration::from_millis(ms))
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-05 09:00:00 UTC);

    fn step(name: &str, done: Option<(&str, u64)>) -> StepView {
        StepView {
            name: name.into(),
            done: done.is_some(),
            completed_at: done.map(|(at, _)| at.to_string()),
            duration_ms: done.map(|(_, ms)| ms),
        }
    }

    #[test]
    fn steps_read_in_ages_and_durations() {
        assert_eq!(
            done_text("2026-12-05T08:56:40.125873689Z", Some(1400), NOW),
            "done 3 min ago, took 1.4s"
        );
        assert_eq!(
            done_text("2026-12-05T08:59:58Z", None, NOW),
            "done just now"
        );
    }

    #[test]
    fn status_text_has_no_raw_timestamps() {
        let status = Status {
            lab: "t".into(),
            exists: true,
            provider: ProviderKind::Existing,
            vms: Vec::new(),
            cluster: None,
            context: Some(ContextView {
                name: "homelab-t".into(),
                kubeconfig: "(your kubeconfig)".into(),
            }),
            steps: vec![
                step("secrets", Some(("2026-12-04T08:00:00Z", 12))),
                step("ready", Some(("2026-12-05T08:54:19.125873689Z", 2_300))),
                step("deploy", Some(("2026-12-05T08:58:30Z", 95_000))),
                step("verify", None),
            ],
            components: Vec::new(),
            components_note: None,
            snapshot: None,
        };
        assert_eq!(
            text(&status, NOW),
            "Lab `t` (existing)

Kube context: `homelab-t` in `(your kubeconfig)`

Steps of `homelab up`
  ✓ secrets  done 25 h ago, took 0.0s
  ✓ ready    done 5 min ago, took 2.3s
  ✓ deploy   done 1 min ago, took 1m35s
  - verify   not done
"
        );
    }
}
