//! The plan: every step `homelab up` will take, computed as a value before anything runs.
//!
//! Architecture invariant: pure. `homelab plan` prints it; `up` walks it. Inputs are the
//! resolved settings, the stack, the domain, what the lab state already holds, what this
//! build of homelab is and runs on ([`BuildInfo`], [`Host`]: where the sync engine's image comes
//! from, and whether any can exist — [`Plan::check`] says so before `up` builds anything), and
//! the steps `up` runs ([`PlannedStep`], listed from `up`'s own step graph by the caller, so the
//! plan and the run cannot drift apart). The wiring's sub-steps are named once, in [`wiring`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::model::engine_image::{
    BuildInfo, EngineImageSource, Host, NoEngineImage, engine_image_source,
};
use crate::model::render::{Domain, GITEA_ORG, hosts};
use crate::model::settings::{ProviderKind, Settings};
use crate::model::stack::Stack;
use crate::model::tls;

/// What already exists in the lab state (read by the caller).
#[derive(Clone, Copy, Debug, Default)]
pub struct Known {
    /// The lab CA exists.
    pub ca: bool,
    /// Secrets were generated before.
    pub secrets: bool,
}

/// The whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Lab name.
    pub lab: String,
    /// Stack name.
    pub stack: String,
    /// Lab domain.
    pub domain: Domain,
    /// Where the sync engine's image comes from (`None`: the stack runs no homelab engine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_image: Option<EngineImageSource>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// The steps `up` runs, in order, each with what it needs: the very list `up` walks.
    pub pipeline: Vec<PlannedStep>,
}

/// One step of `up`, as its step graph describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// Its name (shown in progress, recorded in `up.json`, accepted by `up --until`).
    pub name: String,
    /// What it does.
    pub description: String,
    /// The steps that must have finished first.
    pub needs: Vec<String>,
}

/// The names of `up`'s steps: one constant each, used by the step graph (`up::steps`), the
/// lab record and `status`, and by [`Plan::to_text`] to place each step's details.
pub mod step {
    /// Generate or reuse the lab's secrets.
    pub const SECRETS: &str = "secrets";
    /// Create or reuse the lab CA.
    pub const CA: &str = "ca";
    /// Render the VMs' cloud-init (multipass).
    pub const CLOUD_INIT: &str = "cloud-init";
    /// Launch, start or reuse the lab's VMs (multipass).
    pub const VMS: &str = "vms";
    /// Wait for cloud-init (multipass).
    pub const PROVISIONED: &str = "provisioned";
    /// Join the VMs into one cluster (multipass).
    pub const JOIN: &str = "join";
    /// Write the lab's kube context (multipass).
    pub const KUBECONFIG: &str = "kubeconfig";
    /// Side-load the sync engine's image (multipass).
    pub const ENGINE_IMAGE: &str = "engine-image";
    /// The name of every provider's last step: after it, the cluster answers and can take the
    /// lab. Later steps that talk to the cluster need this one.
    pub const CLUSTER_READY: &str = "ready";
    /// The lab's hostnames in the VMs' `/etc/hosts` (multipass).
    pub const NODE_NAMES: &str = "node-names";
    /// Fetch the stack's pinned upstream manifests.
    pub const PREPARE: &str = "prepare";
    /// Render the stack for the lab's domain.
    pub const RENDER: &str = "render";
    /// Side-load the cached images into the VMs (multipass; said unavailable elsewhere).
    pub const IMAGES: &str = "images";
    /// Apply the stack and wait until it is ready.
    pub const DEPLOY: &str = "deploy";
    /// Wire Gitea.
    pub const WIRE_GITEA: &str = "wire-gitea";
    /// Wire the CI server.
    pub const WIRE_CI: &str = "wire-ci";
    /// Prove the loop.
    pub const VERIFY: &str = "verify";
    /// Snapshot the lab's VMs for `homelab reset` (multipass).
    pub const SNAPSHOT: &str = "snapshot";
}

/// The names of the wiring's sub-steps, as the wiring reports them and the plan lists them.
pub mod wiring {
    /// Create the Gitea admin.
    pub const GITEA_ADMIN: &str = "gitea admin";
    /// Create homelab's API token.
    pub const GITEA_TOKEN: &str = "gitea token";
    /// Create the organisation.
    pub const GITEA_ORG: &str = "gitea org";
    /// Log in to Gitea's container registry.
    pub const REGISTRY: &str = "registry";
    /// Push the cached base images of the lab's builds into Gitea's registry.
    pub const BASE_IMAGES: &str = "base images";
    /// Create Drone's OAuth app in Gitea.
    pub const DRONE_OAUTH_APP: &str = "drone oauth app";
    /// Hand the OAuth client to Drone.
    pub const DRONE_CONFIG: &str = "drone config";
    /// Wait for Drone.
    pub const DRONE_READY: &str = "drone ready";
    /// Log in to Drone through Gitea.
    pub const DRONE_LOGIN: &str = "drone login";
    /// Activate the app repository.
    pub const DRONE_ACTIVATE: &str = "drone activate";
    /// Trust the app repository.
    pub const DRONE_TRUST: &str = "drone trust";
    /// Set the pipeline's secrets.
    pub const DRONE_SECRETS: &str = "drone secrets";
    /// Build the app repository's head.
    pub const DRONE_BUILD: &str = "drone build";

    /// The sub-steps of `wire-ci` (the others are `wire-gitea`'s).
    pub const CI: [&str; 8] = [
        DRONE_OAUTH_APP,
        DRONE_CONFIG,
        DRONE_READY,
        DRONE_LOGIN,
        DRONE_ACTIVATE,
        DRONE_TRUST,
        DRONE_SECRETS,
        DRONE_BUILD,
    ];

    /// Create repository `full` (`org/name`).
    pub fn repo(full: &str) -> String {
        format!("repo {full}")
    }

    /// Push repository `full`'s content.
    pub fn push(full: &str) -> String {
        format!("push {full}")
    }

    /// The webhook of repository `full`.
    pub fn webhook(full: &str) -> String {
        format!("webhook {full}")
    }
}

/// One step of `up`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Build or reuse the cluster.
    Provision(Provision),
    /// Create or reuse the lab CA.
    Ca {
        /// `create` or `reuse`.
        action: String,
        /// DNS names it may issue for.
        permitted_domains: Vec<String>,
    },
    /// Generate or reuse the lab's secrets.
    Secrets {
        /// `generate` or `reuse`.
        action: String,
    },
    /// Deploy the components.
    Deploy {
        /// Components in dependency order.
        components: Vec<ComponentStep>,
    },
    /// Wire the services together.
    Wire {
        /// Wiring steps in order.
        steps: Vec<WireStep>,
    },
    /// Prove the loop end to end.
    Verify {
        /// The hops checked.
        hops: Vec<String>,
    },
}

/// The provisioning step.
#[derive(Clone, Debug, Serialize)]
pub struct Provision {
    /// `multipass` or `existing`.
    pub provider: ProviderKind,
    /// VM count (multipass).
    pub nodes: u32,
    /// CPUs per VM.
    pub cpus: u32,
    /// Memory per VM.
    pub memory: String,
    /// Disk per VM.
    pub disk: String,
    /// Ubuntu image.
    pub image: String,
    /// microk8s snap channel.
    pub channel: String,
    /// microk8s addons set at launch.
    pub addons: Vec<String>,
    /// Kube context used (existing) or created (multipass).
    pub context: String,
}

/// One component in the deploy step.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentStep {
    /// Name.
    pub name: String,
    /// Wave (0 = no needs).
    pub wave: usize,
    /// What it waits on.
    pub needs: Vec<String>,
    /// `templates`, `upstream`, `addon`, …
    pub source: String,
    /// Upstream URL, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Pinned version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Images it pulls.
    pub images: Vec<String>,
    /// Namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Public hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One wiring step.
#[derive(Clone, Debug, Serialize)]
pub struct WireStep {
    /// Stable name.
    pub name: String,
    /// What it does.
    pub description: String,
}

fn wire(name: &str, description: String) -> WireStep {
    WireStep {
        name: name.into(),
        description,
    }
}

/// Compute the plan for this build on this host (see [`plan_for`]); `pipeline`: the steps `up`
/// runs for these settings (`up::pipeline(settings).planned()`).
pub fn plan(
    settings: &Settings,
    stack: &Stack,
    domain: &Domain,
    known: Known,
    pipeline: Vec<PlannedStep>,
) -> Plan {
    plan_for(
        settings,
        stack,
        domain,
        known,
        pipeline,
        &Host::current(),
        &BuildInfo::current(),
    )
}

/// Compute the plan as a build `build` running on `host` would.
pub fn plan_for(
    settings: &Settings,
    stack: &Stack,
    domain: &Domain,
    known: Known,
    pipeline: Vec<PlannedStep>,
    host: &Host,
    build: &BuildInfo,
) -> Plan {
    let engine_image = stack
        .component("gitops-engine")
        .and_then(|c| c.images.get("engine"))
        .map(|pinned| {
            engine_image_source(
                pinned,
                settings.sync_image.is_some(),
                settings.provider,
                host,
                build,
            )
        });
    let channel = settings.channel(stack);
    let image = stack
        .cluster
        .image
        .clone()
        .filter(|_| {
            settings.origins.get("vm.image") == Some(&crate::model::settings::Origin::Default)
        })
        .unwrap_or_else(|| settings.vm.image.clone());
    let addons: Vec<String> = stack
        .components
        .iter()
        .filter_map(|c| c.source.addon.clone())
        .collect();
    let provision = Provision {
        provider: settings.provider,
        nodes: settings.vm.nodes,
        cpus: settings.vm.cpus,
        memory: settings.vm.memory.to_string(),
        disk: settings.vm.disk.to_string(),
        image,
        channel,
        addons,
        context: match settings.provider {
            ProviderKind::Multipass => settings.context_name(),
            ProviderKind::Existing => settings
                .context
                .clone()
                .unwrap_or_else(|| "(current context)".into()),
        },
    };
    let waves = stack.waves();
    let hosts = hosts(stack, domain);
    let components = stack
        .components
        .iter()
        .filter(|c| !c.is_addon())
        .map(|c| ComponentStep {
            name: c.name.clone(),
            wave: waves[&c.name],
            needs: c.needs.clone(),
            source: c.source_kind().into(),
            url: c.source.upstream.as_ref().map(|u| u.url.clone()),
            version: c.version.clone(),
            images: c.images.values().cloned().collect(),
            namespace: c.namespace.clone(),
            host: hosts.get(&c.name).cloned(),
        })
        .collect();

    // The names are those the wiring reports as it runs (`wire-gitea`, then `wire-ci`).
    let mut wire_steps = Vec::new();
    let has = |n: &str| stack.component(n).is_some();
    if has("gitea") {
        let user = &settings.gitea_admin_user;
        wire_steps.push(wire(wiring::GITEA_ADMIN, format!("create the Gitea admin `{user}` with the Gitea CLI in the pod (as user `git`), password from the lab state")));
        wire_steps.push(wire(
            wiring::GITEA_TOKEN,
            format!("create an API token for `{user}` (basic auth) and keep it in the lab state"),
        ));
        wire_steps.push(wire(
            wiring::GITEA_ORG,
            format!("create the organisation `{GITEA_ORG}`"),
        ));
        for c in &stack.components {
            for repo in c.repos.keys() {
                wire_steps.push(wire(
                    &wiring::repo(&format!("{GITEA_ORG}/{repo}")),
                    "create the repository".into(),
                ));
                wire_steps.push(wire(
                    &wiring::push(&format!("{GITEA_ORG}/{repo}")),
                    "push its content with git over HTTPS (only when it differs)".into(),
                ));
            }
        }
        if has("gitops-engine") {
            wire_steps.push(wire(
                &wiring::webhook(&format!("{GITEA_ORG}/gitops")),
                "tell the sync engine about pushes (HMAC-signed)".into(),
            ));
        }
        wire_steps.push(wire(
            wiring::REGISTRY,
            "log in to Gitea's container registry with the token".into(),
        ));
        if has("drone") {
            wire_steps.push(wire(
                wiring::BASE_IMAGES,
                "push the cached base images of the lab's builds into Gitea's registry (kaniko's `--registry-map` finds them there)".into(),
            ));
        }
    }
    if has("drone") {
        wire_steps.push(wire(
            wiring::DRONE_OAUTH_APP,
            "create the Gitea OAuth app `drone` (confidential, redirect to Drone's /login)".into(),
        ));
        wire_steps.push(wire(
            wiring::DRONE_CONFIG,
            "hand the OAuth client to Drone's Secret; restart Drone only when it changed".into(),
        ));
        wire_steps.push(wire(
            wiring::DRONE_READY,
            "wait until Drone answers through the ingress".into(),
        ));
        wire_steps.push(wire(
            wiring::DRONE_LOGIN,
            "log in to Drone through Gitea once and keep Drone's API token".into(),
        ));
        wire_steps.push(wire(
            wiring::DRONE_ACTIVATE,
            format!("sync repositories and activate `{GITEA_ORG}/nyan-cat`"),
        ));
        wire_steps.push(wire(
            wiring::DRONE_TRUST,
            format!(
                "mark `{GITEA_ORG}/nyan-cat` trusted when it is not (its pipeline mounts a ConfigMap)"
            ),
        ));
        wire_steps.push(wire(
            wiring::DRONE_SECRETS,
            "set the pipeline's secrets (registry login, gitops push token): update or create"
                .into(),
        ));
        wire_steps.push(wire(
            wiring::DRONE_BUILD,
            format!(
                "build the head of `{GITEA_ORG}/nyan-cat` unless a build of it succeeded or is under way"
            ),
        ));
    }

    let mut hops = Vec::new();
    if has("drone") && has("gitea") {
        hops.extend(
            [
                "commit a visible change to `lab/nyan-cat`",
                "Drone build started",
                "build succeeded",
                "tag bumped in `lab/gitops`",
                "Application `nyan-cat` synced and healthy",
            ]
            .map(String::from),
        );
    }
    if let Some(h) = hosts.get("nyan-cat") {
        hops.push(format!(
            "https://{h} serves the new content, trusted through the lab CA"
        ));
    }

    let steps = vec![
        Step::Provision(provision),
        Step::Ca {
            action: if known.ca { "reuse" } else { "create" }.into(),
            permitted_domains: tls::permitted_domains(settings.domain.as_deref()),
        },
        Step::Secrets {
            action: if known.secrets { "reuse" } else { "generate" }.into(),
        },
        Step::Deploy { components },
        Step::Wire { steps: wire_steps },
        Step::Verify { hops },
    ];
    Plan {
        lab: settings.lab.clone(),
        stack: stack.name.clone(),
        domain: domain.clone(),
        engine_image,
        steps,
        pipeline,
    }
}

impl Plan {
    /// `Err` when `up` cannot succeed as planned: no sync engine image can exist for this build
    /// here (it would end in an image pull that never succeeds, minutes into `up`).
    pub fn check(&self) -> Result<(), NoEngineImage> {
        match &self.engine_image {
            Some(source) => source.check(),
            None => Ok(()),
        }
    }

    /// The plan as text for people: `up`'s steps in the order it runs them (the same list as
    /// [`Plan::pipeline`]), each with its description and, where the plan knows more, the details
    /// of what it will do (the VMs, the CA, the components in waves, the wiring, the hops).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let domain_note = if self.domain.known {
            String::new()
        } else {
            " (a stand-in until the VM has an IP)".into()
        };
        writeln!(
            out,
            "Plan for lab `{}` (stack `{}`, domain `{}`{domain_note})",
            self.lab, self.stack, self.domain.name
        )
        .unwrap();
        let mut details = self.details();
        for (i, p) in self.pipeline.iter().enumerate() {
            writeln!(out, "\n{:>2}. {:<13} {}", i + 1, p.name, p.description).unwrap();
            for line in details.remove(p.name.as_str()).unwrap_or_default() {
                writeln!(out, "      {line}").unwrap();
            }
        }
        debug_assert!(
            details.is_empty(),
            "details of steps up does not run: {details:?}"
        );
        out
    }

    /// The detail lines of the plan's steps, by the name of the step of `up` they describe.
    fn details(&self) -> BTreeMap<&'static str, Vec<String>> {
        let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for s in &self.steps {
            match s {
                Step::Provision(p) => match p.provider {
                    ProviderKind::Multipass => {
                        out.entry(step::VMS).or_default().extend([
                            format!(
                                "multipass: {} VM{} × {} CPU, {} memory, {} disk, Ubuntu {}",
                                p.nodes,
                                if p.nodes == 1 { "" } else { "s" },
                                p.cpus,
                                p.memory,
                                p.disk,
                                p.image
                            ),
                            format!("microk8s {} with addons {}", p.channel, p.addons.join(", ")),
                            format!("kube context `{}`", p.context),
                        ]);
                    }
                    ProviderKind::Existing => {
                        out.entry(step::CLUSTER_READY)
                            .or_default()
                            .push(format!("existing cluster, kube context `{}`", p.context));
                    }
                },
                Step::Ca {
                    action,
                    permitted_domains,
                } => out.entry(step::CA).or_default().push(format!(
                    "{action} the lab CA (ECDSA P-256), valid only for {}",
                    permitted_domains.join(", ")
                )),
                Step::Secrets { action } => out.entry(step::SECRETS).or_default().push(format!(
                    "{action} the lab's secrets (kept 0600 in the lab state)"
                )),
                Step::Deploy { components } => {
                    let lines = out.entry(step::DEPLOY).or_default();
                    if let Some(source) = &self.engine_image {
                        lines.push(format!("sync engine image: {}", source.describe()));
                    }
                    for c in components {
                        let waits = if c.needs.is_empty() {
                            "waits on nothing".to_string()
                        } else {
                            format!("waits on {}", c.needs.join(", "))
                        };
                        let host = c
                            .host
                            .as_ref()
                            .map(|h| format!("  https://{h}"))
                            .unwrap_or_default();
                        lines.push(format!(
                            "wave {}  {:<15} {:<18} {waits}{host}",
                            c.wave, c.name, c.source
                        ));
                    }
                }
                Step::Wire { steps } => {
                    for w in steps {
                        let at = if wiring::CI.contains(&w.name.as_str()) {
                            step::WIRE_CI
                        } else {
                            step::WIRE_GITEA
                        };
                        out.entry(at)
                            .or_default()
                            .push(format!("{:<20} {}", w.name, w.description));
                    }
                }
                Step::Verify { hops } => out
                    .entry(step::VERIFY)
                    .or_default()
                    .extend(hops.iter().map(|h| format!("→ {h}"))),
            }
        }
        out
    }
}
