//! The multipass provider's operations behind `up`'s steps `vms`, `provisioned`, `join`,
//! `kubeconfig` and `ready`: plain async functions over an [`OpCx`], each given what it works on.
//!
//! Architecture invariant: each operation looks first (`multipass info`, `multipass exec … test`,
//! `kubectl get nodes`) and acts only on what is missing, so a healthy lab costs one `info` and
//! a few read-only `exec`s; every wait is bounded by [`crate::provider::op::Waits`] and reports
//! progress.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future::join_all;

use super::cli::{LaunchSpec, Launched, Multipass, MultipassError};
use super::cloud_init::{self, Verdict};
use super::decide::{
    LabSpec, NodeRecord, VmAction, VmSpec, decide, effective_spec, ip_changes, lab_instances,
    readiness, size_drift, to_join, vm_name,
};
use super::json::{self, Instance, NodeView, VmState};
use super::{CLOUD_INIT_FILE, CloudInit, FAILED_MARKER, PROVISIONED_MARKER, ProvisionError, limit};
use crate::cluster::kubeconfig::{self, UserKubeconfig};
use crate::edges::error::{Error, Result};
use crate::edges::output::human_duration;
use crate::model::settings::{ProviderKind, Settings};
use crate::provider::op::{OpCx, StepReport};
use crate::provider::{Cluster, KUBECONFIG_FILE, LabRecord};

/// The lab's VMs once they run, first node first, with the `multipass` that runs them.
#[derive(Clone, Debug)]
pub struct Vms {
    /// The `multipass` program.
    pub multipass: Multipass,
    /// Name and address of each.
    pub nodes: Vec<NodeRecord>,
    /// The shape they were built for.
    pub spec: LabSpec,
}

impl Vms {
    /// The first node: the one the others join, whose address the lab's names point at.
    pub fn first(&self) -> &NodeRecord {
        &self.nodes[0]
    }

    /// Every VM's name.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
}

/// Make every lab VM exist and run, without ever rebuilding one silently (`recreate`:
/// `--recreate`): new VMs are launched with `cloud_init` and Ubuntu `image`.
pub async fn vms(
    cx: &dyn OpCx,
    image: &str,
    recreate: bool,
    cloud_init: &CloudInit,
) -> Result<(StepReport, Vms)> {
    let settings = cx.settings();
    let lab = settings.lab.as_str();
    let state = cx.state();
    let mp = Multipass::find(cx.waits().exec)?;
    let record = LabRecord::load(state)?;
    let spec = effective_spec(
        settings,
        image,
        record.as_ref().and_then(|r| r.spec.as_ref()),
    );
    let names: Vec<String> = (1..=spec.nodes).map(|i| vm_name(lab, i)).collect();

    let observed = mp.info().await?;
    for (index, inst) in lab_instances(lab, &observed) {
        if index > spec.nodes && inst.state != VmState::Deleted {
            cx.warn(&format!(
                "VM `{}` belongs to lab `{lab}`, which has {} node(s); homelab leaves it alone (`homelab down` removes every VM of the lab)",
                inst.name, spec.nodes
            ));
        }
    }
    let plan: Vec<(String, VmAction)> = names
        .iter()
        .map(|n| (n.clone(), decide(observed.get(n), recreate)))
        .collect();
    if let Some((name, VmAction::Unusable(state))) = plan
        .iter()
        .find(|(_, a)| matches!(a, VmAction::Unusable(_)))
    {
        return Err(ProvisionError::Unusable {
            name: name.clone(),
            state: state.to_string(),
        }
        .into());
    }
    for (name, action) in &plan {
        if *action == VmAction::Reuse {
            let drift = size_drift(&spec.vm, &observed[name]);
            if !drift.is_empty() {
                cx.warn(&format!(
                    "VM `{name}` has {}; homelab does not resize VMs: keep it as it is, or rebuild it with `homelab up --recreate` (everything inside is lost)",
                    drift.join(", ")
                ));
            }
        }
    }
    // New VMs are launched with the cloud-init `up` rendered: written only when one is.
    let launches = plan
        .iter()
        .any(|(_, a)| matches!(a, VmAction::Launch | VmAction::Recreate));
    if launches && state.read(CLOUD_INIT_FILE)?.as_deref() != Some(cloud_init.0.as_bytes()) {
        state.write(CLOUD_INIT_FILE, cloud_init.0.as_bytes())?;
    }

    // Every VM at once: launches are the slow part of `up`.
    let results = join_all(
        plan.iter()
            .map(|(name, action)| act(cx, &mp, name, action.clone(), &spec.vm)),
    )
    .await;
    let mut did = Vec::new();
    for r in results {
        if let Some(line) = r? {
            did.push(line);
        }
    }

    let running = if did.is_empty() && all_running(&names, &observed) {
        observed
    } else {
        wait_running(cx, &mp, &names).await?
    };
    let nodes: Vec<NodeRecord> = names
        .iter()
        .map(|n| NodeRecord {
            name: n.clone(),
            ip: running[n].ip().unwrap_or_default().to_string(),
        })
        .collect();
    if let Some(rec) = &record {
        for change in ip_changes(&rec.nodes, &nodes) {
            let first = change.name == names[0];
            cx.warn(&ip_change_message(settings, &change, first));
        }
    }
    LabRecord {
        provider: ProviderKind::Multipass,
        context: settings.context_name(),
        spec: Some(spec.clone()),
        nodes: nodes.clone(),
    }
    .store(state)?;
    let summary = nodes
        .iter()
        .map(|n| format!("{} ({})", n.name, n.ip))
        .collect::<Vec<_>>()
        .join(", ");
    let report = if did.is_empty() {
        StepReport::skipped(format!("running: {summary}"))
    } else {
        StepReport::done(format!("{}; running: {summary}", did.join("; ")))
    };
    Ok((
        report,
        Vms {
            multipass: mp,
            nodes,
            spec,
        },
    ))
}

fn ip_change_message(settings: &Settings, c: &super::decide::IpChange, first: bool) -> String {
    let mut m = format!(
        "VM `{}` changed its address from {} to {} since the last run; the kubeconfig follows it",
        c.name, c.old, c.new
    );
    if first {
        match &settings.domain {
            None => m.push_str(&format!(
                ", and the lab's hostnames moved with it: `*.{}.sslip.io` is now `*.{}.sslip.io`",
                c.old, c.new
            )),
            Some(d) => m.push_str(&format!(
                "; point `*.{d}` at {} (it pointed at {})",
                c.new, c.old
            )),
        }
    }
    m
}

fn all_running(names: &[String], observed: &BTreeMap<String, Instance>) -> bool {
    names.iter().all(|n| {
        observed
            .get(n)
            .is_some_and(|i| i.state == VmState::Running && i.ip().is_some())
    })
}

/// Carry out one VM's action; `Some(line)` when something was done.
async fn act(
    cx: &dyn OpCx,
    mp: &Multipass,
    name: &str,
    action: VmAction,
    vm: &VmSpec,
) -> Result<Option<String>> {
    match action {
        VmAction::Reuse => Ok(None),
        VmAction::Launch => launch(cx, mp, name, vm).await.map(Some),
        VmAction::Recreate => {
            cx.warn(&format!(
                "recreating VM `{name}` (`--recreate`): everything inside it is lost"
            ));
            mp.delete_purge(&[name.to_string()]).await?;
            launch(cx, mp, name, vm)
                .await
                .map(|_| Some(format!("recreated {name}")))
        }
        VmAction::Start => {
            cx.update(&format!("starting {name}"));
            mp.start(name).await?;
            Ok(Some(format!("started {name}")))
        }
        VmAction::Recover => {
            cx.warn(&format!(
                "VM `{name}` was deleted but not purged; recovering it (`homelab up --recreate` builds a fresh one instead)"
            ));
            mp.recover(name).await?;
            mp.start(name).await?;
            Ok(Some(format!("recovered {name}")))
        }
        VmAction::CancelShutdown => {
            mp.cancel_shutdown(name).await?;
            Ok(Some(format!("cancelled the scheduled shutdown of {name}")))
        }
        VmAction::Wait => {
            // Let the transition finish, then act on where it landed (start a suspended VM).
            let settled = wait_settled(cx, mp, name).await?;
            match decide(Some(&settled), false) {
                VmAction::Start => {
                    mp.start(name).await?;
                    Ok(Some(format!("started {name}")))
                }
                VmAction::Reuse => Ok(Some(format!("waited for {name} to start"))),
                _ => Err(ProvisionError::NotRunning {
                    name: name.to_string(),
                    state: settled.state.to_string(),
                    limit: limit(cx.waits().vm_running),
                }
                .into()),
            }
        }
        VmAction::Unusable(state) => Err(ProvisionError::Unusable {
            name: name.to_string(),
            state: state.to_string(),
        }
        .into()),
    }
}

async fn launch(cx: &dyn OpCx, mp: &Multipass, name: &str, vm: &VmSpec) -> Result<String> {
    cx.update(&format!(
        "launching {name} (Ubuntu {}, {} CPUs, {} memory, {} disk)",
        vm.image, vm.cpus, vm.memory, vm.disk
    ));
    let cloud_init = cx.state().path(CLOUD_INIT_FILE);
    let launched = mp
        .launch(&LaunchSpec {
            name,
            cpus: vm.cpus,
            memory: vm.memory.to_string(),
            disk: vm.disk.to_string(),
            image: &vm.image,
            cloud_init: &cloud_init,
        })
        .await?;
    Ok(match launched {
        Launched::Ok => format!("launched {name}"),
        Launched::StoppedWaiting(said) => {
            cx.update(&format!(
                "{name}: Multipass stopped waiting (`{said}`); the VM goes on initialising"
            ));
            format!(
                "launched {name} (Multipass stopped waiting; homelab waits for cloud-init itself)"
            )
        }
        Launched::AlreadyExists => format!("{name} was launched by another run"),
    })
}

async fn wait_settled(cx: &dyn OpCx, mp: &Multipass, name: &str) -> Result<Instance> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let info = mp.info().await?;
        let inst = info
            .get(name)
            .cloned()
            .ok_or_else(|| MultipassError::NoSuchInstance {
                name: name.to_string(),
                argv: "multipass info --format json".into(),
            })?;
        if !matches!(
            inst.state,
            VmState::Starting | VmState::Restarting | VmState::Suspending
        ) {
            return Ok(inst);
        }
        if started.elapsed() >= cx.waits().vm_running {
            return Err(ProvisionError::NotRunning {
                name: name.to_string(),
                state: inst.state.to_string(),
                limit: limit(cx.waits().vm_running),
            }
            .into());
        }
        cx.update(&format!("{name} is {}", inst.state));
        tokio::time::sleep(cx.waits().pause(attempt)).await;
        attempt += 1;
    }
}

/// Poll `info` until every VM runs and has an address.
pub(super) async fn wait_running(
    cx: &dyn OpCx,
    mp: &Multipass,
    names: &[String],
) -> Result<BTreeMap<String, Instance>> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let info = mp.info().await?;
        let pending: Vec<&String> = names
            .iter()
            .filter(|n| {
                !info
                    .get(*n)
                    .is_some_and(|i| i.state == VmState::Running && i.ip().is_some())
            })
            .collect();
        let Some(first_pending) = pending.first() else {
            return Ok(info);
        };
        let state = info
            .get(*first_pending)
            .map(|i| {
                if i.state == VmState::Running {
                    "running without an address yet".to_string()
                } else {
                    i.state.to_string()
                }
            })
            .unwrap_or_else(|| "missing".into());
        if started.elapsed() >= cx.waits().vm_running {
            return Err(ProvisionError::NotRunning {
                name: first_pending.to_string(),
                state,
                limit: limit(cx.waits().vm_running),
            }
            .into());
        }
        cx.update(&format!("waiting for {first_pending} ({state})"));
        tokio::time::sleep(cx.waits().pause(attempt)).await;
        attempt += 1;
    }
}

/// Wait (bounded) until cloud-init wrote its completion marker on every VM. Multipass's own
/// launch wait gives up after 5 minutes while cloud-init goes on; this one knows what "done"
/// means.
///
/// A VM whose cloud-init waits for the microk8s snaps from the cache (`channel`) gets them
/// here ([`super::snaps`]), and the wait goes on.
pub async fn provisioned(cx: &dyn OpCx, vms: &Vms, channel: &str) -> Result<StepReport> {
    let mp = &vms.multipass;
    let started = Instant::now();
    let waited = join_all(
        vms.nodes
            .iter()
            .map(|n| wait_marker(cx, mp, &n.name, channel)),
    )
    .await;
    let mut any_waited = false;
    let mut from_cache = Vec::new();
    for w in waited {
        let (waited, installed) = w?;
        any_waited |= waited;
        from_cache.extend(installed);
    }
    let n = vms.nodes.len();
    let mut what = if n == 1 {
        "cloud-init finished".to_string()
    } else {
        format!("cloud-init finished on {n} VMs")
    };
    if let Some(snaps) = from_cache.first() {
        what.push_str(&format!(
            "; microk8s installed from the cache ({snaps}) on {} VM(s)",
            from_cache.len()
        ));
    }
    Ok(if any_waited {
        StepReport::done(format!(
            "{what} after {}",
            human_duration(started.elapsed())
        ))
    } else {
        StepReport::skipped(what)
    })
}

/// What one look at a VM's provisioning found.
enum Look {
    /// The completion marker is there.
    Provisioned,
    /// Not yet.
    Pending,
}

/// Look for the completion marker, then for the failure marker the script writes instead.
async fn look(mp: &Multipass, name: &str) -> Result<Look> {
    let out = mp
        .exec(
            name,
            &["test", "-f", PROVISIONED_MARKER],
            format!("check whether cloud-init finished on `{name}`"),
        )
        .await?;
    if out.success() {
        return Ok(Look::Provisioned);
    }
    // A failed script says so at once; without this, `up` would wait out the whole limit.
    let failed = mp
        .exec(
            name,
            &["cat", FAILED_MARKER],
            format!("check whether provisioning failed on `{name}`"),
        )
        .await?;
    let step = failed.stdout.trim();
    if failed.success() && !step.is_empty() {
        return Err(ProvisionError::ProvisioningFailed {
            name: name.to_string(),
            step: step.to_string(),
        }
        .into());
    }
    Ok(Look::Pending)
}

/// Wait for the marker on one VM; true when it was not there at first, with the snaps it
/// installed from the cache, if it did.
async fn wait_marker(
    cx: &dyn OpCx,
    mp: &Multipass,
    name: &str,
    channel: &str,
) -> Result<(bool, Option<String>)> {
    let started = Instant::now();
    let mut attempt = 0;
    let mut installed = None;
    loop {
        if let Look::Provisioned = look(mp, name).await? {
            return Ok((attempt > 0 || installed.is_some(), installed));
        }
        // cloud-init itself may have failed before the script ran (issue 12): once it says it
        // is done, the marker will never come. It exits 1 or 2 with errors; the JSON is what
        // counts (`cloud_init` module doc).
        let out = mp
            .exec(
                name,
                &["cloud-init", "status", "--format", "json"],
                format!("ask cloud-init how it is doing on `{name}`"),
            )
            .await?;
        let status = cloud_init::parse_status(&out.stdout);
        let mut reported = None;
        if let Some(status) = &status {
            match cloud_init::verdict(status) {
                Verdict::Finished(said) => {
                    // The script may have finished between the two looks.
                    if let Look::Provisioned = look(mp, name).await? {
                        return Ok((true, installed));
                    }
                    // cloud-init left the install to `up` (microk8s from the cache): bring the
                    // files, once; the script's markers say how it went.
                    if installed.is_none()
                        && super::snaps::launched_awaiting(cx)?
                        && super::snaps::awaiting(mp, name).await?
                    {
                        installed = Some(super::snaps::install(cx, mp, name, channel).await?);
                        continue;
                    }
                    return Err(ProvisionError::CloudInitEnded {
                        name: name.to_string(),
                        status: status.extended_status.clone(),
                        said,
                    }
                    .into());
                }
                Verdict::Waiting(said) => reported = said,
            }
        }
        if started.elapsed() >= cx.waits().provisioned {
            return Err(ProvisionError::NotProvisioned {
                name: name.to_string(),
                limit: limit(cx.waits().provisioned),
            }
            .into());
        }
        let mut line = format!(
            "waiting for cloud-init on {name} ({})",
            human_duration(started.elapsed())
        );
        if let (Some(status), Some(said)) = (&status, reported) {
            line.push_str(&format!("; it is {}: {said}", status.extended_status));
        }
        cx.update(&line);
        tokio::time::sleep(cx.waits().pause(attempt)).await;
        attempt += 1;
    }
}

/// `kubectl get nodes` from inside `node`: `Ok(Err(why))` while the API does not answer.
pub async fn get_nodes(
    mp: &Multipass,
    node: &str,
) -> Result<std::result::Result<Vec<NodeView>, String>, MultipassError> {
    let out = mp
        .exec(
            node,
            &["sudo", "microk8s", "kubectl", "get", "nodes", "-o", "json"],
            format!("list the cluster's nodes from `{node}`"),
        )
        .await?;
    if out.success() {
        return Ok(Ok(json::parse_nodes(&out.stdout)?));
    }
    let said = [out.stderr.trim(), out.stdout.trim()]
        .into_iter()
        .find(|s| !s.is_empty())
        .and_then(|s| s.lines().next())
        .unwrap_or("no output")
        .to_string();
    Ok(Err(format!(
        "`microk8s kubectl get nodes` exited with {}: {said}",
        out.code.map_or("signal".into(), |c| c.to_string())
    )))
}

/// Nodes 2..N join the first (`microk8s add-node` there, `microk8s join` on them).
///
/// One at a time: each join changes the membership of the cluster's datastore, and microk8s
/// hands out one single-use token per joiner (inferred from the single-use default of
/// `add-node`); VMs were launched and provisioned in parallel already.
pub async fn join(cx: &dyn OpCx, vms: &Vms) -> Result<StepReport> {
    if vms.nodes.len() == 1 {
        return Ok(StepReport::skipped("single node"));
    }
    let mp = &vms.multipass;
    let first = vms.first();
    let registered = api_nodes(cx, mp, &first.name).await?;
    let joiners = to_join(&vms.names(), &registered);
    if joiners.is_empty() {
        return Ok(StepReport::skipped(format!(
            "{} nodes in the cluster",
            vms.nodes.len()
        )));
    }
    for name in &joiners {
        cx.update(&format!("adding {name} to the cluster"));
        let out = mp
            .exec_ok(
                &first.name,
                &["sudo", "microk8s", "add-node", "--format", "json"],
                format!("create a join token on `{}`", first.name),
            )
            .await?;
        let add = json::parse_add_node(&out.stdout).map_err(MultipassError::from)?;
        mp.join(name, add.url_for(Some(&first.ip))).await?;
    }
    Ok(StepReport::done(format!("joined {}", joiners.join(", "))))
}

/// The node list once the API answers (bounded by the readiness wait).
async fn api_nodes(cx: &dyn OpCx, mp: &Multipass, first: &str) -> Result<Vec<NodeView>> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match get_nodes(mp, first).await? {
            Ok(nodes) => return Ok(nodes),
            Err(why) => {
                if started.elapsed() >= cx.waits().ready {
                    return Err(ProvisionError::ApiNotAnswering {
                        node: first.to_string(),
                        limit: limit(cx.waits().ready),
                        last: why,
                    }
                    .into());
                }
                cx.update(&format!("waiting for the API: {why}"));
            }
        }
        tokio::time::sleep(cx.waits().pause(attempt)).await;
        attempt += 1;
    }
}

/// The lab kubeconfig from `microk8s config` (server = the first VM's address),
/// stored in the lab state and merged into the user's kubeconfig as `homelab-<lab>`.
pub async fn kubeconfig(cx: &dyn OpCx, vms: &Vms) -> Result<(StepReport, Cluster)> {
    let mp = &vms.multipass;
    let first = vms.first();
    let context = cx.settings().context_name();
    let out = mp
        .exec_ok(
            &first.name,
            &["sudo", "microk8s", "config"],
            format!("read the cluster's kubeconfig on `{}`", first.name),
        )
        .await?;
    let lab = kubeconfig::from_microk8s(&out.stdout, &first.name, &context, &first.ip)?;
    let state = cx.state();
    let mut wrote = Vec::new();
    if state.read(KUBECONFIG_FILE)?.as_deref() != Some(lab.yaml.expose().as_bytes()) {
        state.write(KUBECONFIG_FILE, lab.yaml.expose().as_bytes())?;
        wrote.push("lab kubeconfig");
    }
    let user = UserKubeconfig::from_env()?;
    let file = match user.merge(&lab)? {
        Some(p) => {
            wrote.push("your kubeconfig");
            p
        }
        None => user
            .holding(&context)?
            .ok_or_else(|| Error::msg("the lab's context vanished while being written"))?,
    };
    let detail = format!(
        "context `{context}` ({}) in `{}`",
        lab.server,
        file.display()
    );
    let cluster = Cluster {
        provider: ProviderKind::Multipass,
        context,
        kubeconfig: Some(state.path(KUBECONFIG_FILE)),
        server: lab.server.clone(),
        node_ips: vms.nodes.iter().map(|n| n.ip.clone()).collect(),
    };
    let report = if wrote.is_empty() {
        StepReport::skipped(detail)
    } else {
        StepReport::done(detail)
    };
    Ok((report, cluster))
}

/// Wait until the API answers and every VM is a Ready node (bounded; never
/// `microk8s status --wait-ready`, which can wait forever).
pub async fn ready(cx: &dyn OpCx, vms: &Vms) -> Result<StepReport> {
    let mp = &vms.multipass;
    let first = &vms.first().name;
    let expected = vms.names();
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let seen = match get_nodes(mp, first).await? {
            Ok(nodes) => {
                let r = readiness(&expected, &nodes);
                if r.ready {
                    let versions: Vec<String> = nodes
                        .iter()
                        .filter_map(|n| n.version.clone())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let detail = if versions.is_empty() {
                        r.seen
                    } else {
                        format!("{} ({})", r.seen, versions.join(", "))
                    };
                    return Ok(if attempt == 0 {
                        StepReport::skipped(detail)
                    } else {
                        StepReport::done(detail)
                    });
                }
                r.seen
            }
            Err(why) => format!("the API does not answer: {why}"),
        };
        not_ready_yet(cx, first, started, &mut attempt, seen).await?;
    }
}

/// One turn of a bounded wait for node `node` to be Ready: gives up with what was last `seen`
/// once the ready limit has passed, otherwise shows it and pauses (longer each `attempt`).
pub(super) async fn not_ready_yet(
    cx: &dyn OpCx,
    node: &str,
    started: Instant,
    attempt: &mut u32,
    seen: String,
) -> Result<()> {
    if started.elapsed() >= cx.waits().ready {
        return Err(ProvisionError::NotReady {
            node: node.to_string(),
            limit: limit(cx.waits().ready),
            seen,
        }
        .into());
    }
    cx.update(&format!("{seen} ({})", human_duration(started.elapsed())));
    tokio::time::sleep(cx.waits().pause(*attempt)).await;
    *attempt += 1;
    Ok(())
}
