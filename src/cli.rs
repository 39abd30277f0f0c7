//! Raw command-line arguments: only what was typed. `Settings` is the merged result.
//!
//! Architecture invariant: nothing here decides defaults or reads the environment (apart from
//! `HOMELAB_CONFIG` locating the config file, and the `HOMELAB_SYNC_*` runtime variables the
//! in-cluster engine's Deployment sets for `homelab sync --in-cluster`); [`Cli::layer`] hands
//! what flags set to `settings::Settings::resolve`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::edges::output::OutputFormat;
use crate::model::settings::{ByteSize, Layer, ProviderKind};

/// One command to a complete, wired GitOps lab on your laptop.
///
/// homelab builds a Multipass VM with microk8s, NGINX ingress, cert-manager issuing from a lab
/// CA, Gitea (git + container registry), Drone CI, an Argo CD-compatible sync engine and a
/// NyanCat demo app, and wires them so a push to the app repository ends up live over HTTPS.
#[derive(Debug, Parser)]
#[command(
    name = "homelab",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Lab to act on; several labs can coexist [default: homelab]
    #[arg(long, global = true, value_name = "NAME")]
    pub lab: Option<String>,

    /// Config file [default: ./homelab.yaml when present]
    #[arg(long, global = true, value_name = "FILE", env = "HOMELAB_CONFIG")]
    pub config: Option<PathBuf>,

    /// More detail on stderr (-v debug, -vv trace); shows each subprocess as it runs
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors and warnings on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Format of what goes to stdout
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text, value_name = "FORMAT")]
    pub output: OutputFormat,

    /// No spinners, even on a terminal (plain lines instead)
    #[arg(long, global = true)]
    pub no_progress: bool,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the lab, or repair it: VMs, microk8s, kube context
    ///
    /// Each step looks at what exists first and does only what is missing, so running `up`
    /// again on a healthy lab changes nothing, and an interrupted `up` resumes where it stopped.
    Up(UpArgs),

    /// Delete the lab's VMs and kube context; keep its CA and secrets unless --purge
    Down(DownArgs),

    /// Show the lab: VMs, cluster, nodes, and which `up` steps are done
    Status(StatusArgs),

    /// Put the lab back as `up` left it: restore every VM to the snapshot `up` took at its end
    ///
    /// Stops the lab's VMs, restores each to that Multipass snapshot, starts them and waits until
    /// the cluster answers and every component is healthy again: between exercises, or before
    /// the next group. Not available on an existing cluster.
    Reset(ResetArgs),

    /// Print or write the complete manifest set the lab runs
    ///
    /// Renders every component of the stack with the lab's domain, secrets and CA, in dependency
    /// order. Works offline: secrets and the CA are generated into the lab state on first use
    /// (or replaced by fixed markers with --placeholder-secrets).
    Render(RenderArgs),

    /// Print every step `homelab up` will take, without doing anything
    Plan(PlanArgs),

    /// Download the upstream manifests `up` needs and list the images the stack pulls
    ///
    /// Each release manifest is downloaded once into the cache and its sha256 recorded in the
    /// lab's lock; a later file with a different hash is refused. Run it ahead of a workshop.
    Prepare(PrepareArgs),

    /// Check the prerequisites (Multipass, git, disk, memory, virtualisation)
    ///
    /// Exits 0 when everything needed is in place, 1 when something blocks `homelab up`.
    Doctor(DoctorArgs),

    /// Inspect the resolved settings
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Print the commands that make this computer trust the lab CA; `--apply` runs them
    ///
    /// Covers the system trust store (macOS keychain, Debian/Ubuntu, Fedora/RHEL, Arch,
    /// openSUSE, Windows), Firefox and Chromium NSS databases when NSS's `certutil` is on PATH,
    /// and git for the lab's Gitea URL only. With --apply every change is recorded in the lab's
    /// trust ledger, with its undo, so `homelab untrust` reverses exactly those. Creates the lab
    /// CA if it does not exist yet, so a computer can trust it before `homelab up`.
    Trust(TrustArgs),

    /// Undo every change `homelab trust --apply` recorded for this lab, and nothing else
    Untrust,

    /// Inspect (or deliberately replace) the lab CA
    #[command(subcommand)]
    Ca(CaCommand),

    /// Print the lab's URLs and logins, passwords included
    ///
    /// The only command that shows secrets: the Gitea admin login and password, where the API
    /// token is stored, and the Drone and app URLs. `--output json` for scripts.
    Credentials(CredentialsArgs),

    /// Open the lab page, https://lab.<domain>, in the default browser
    ///
    /// The page shows every component with its URL and health, the Applications, the last
    /// verify and how to trust the lab CA. The URL is always printed; `--print` only prints it
    /// (for a browser on another computer).
    Open(OpenArgs),

    /// Prove the loop works: commit a change to `lab/nyan-cat` and follow it to the live site
    ///
    /// Commits a new version marker through Gitea's API, then waits for each hop and reports
    /// its time: Drone build started, build succeeded, image tag bumped in `lab/gitops`,
    /// Application `nyan-cat` Synced and Healthy at that revision, and https://nyan.<domain>
    /// (trusted through the lab CA only) serving the new version. Exit 1 names the hop that
    /// failed and why.
    Verify(VerifyArgs),

    /// Keep the cluster in line with git: the Argo CD-compatible sync engine
    ///
    /// Reads `argoproj.io/v1alpha1 Application` objects and reconciles them as Argo CD would
    /// (automated sync, prune, self-heal, sync waves), reporting status in Argo's vocabulary.
    /// `--once` reconciles every Application once; naming Applications syncs them now whatever
    /// their policy (like `argocd app sync`); `--watch` keeps going from this machine;
    /// `--in-cluster` is how the engine's Deployment runs it.
    Sync(SyncArgs),

    /// List Applications with their sync and health status
    Apps(AppsArgs),

    /// Show what a sync of an Application would change (secrets redacted)
    ///
    /// Exits 1 when there are differences, 0 when the cluster matches git.
    Diff(DiffArgs),

    /// Write everything needed to learn why a lab failed into one archive
    #[command(subcommand)]
    Export(ExportCommand),

    /// Print a shell completion script
    ///
    /// e.g. `homelab completions bash > ~/.local/share/bash-completion/completions/homelab`
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Which cluster the sync commands talk to.
#[derive(Debug, Args, Default)]
pub struct KubeArgs {
    /// Kubeconfig [default: the lab's, else $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context [default: the file's current context]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace of the Applications
    #[arg(
        long,
        value_name = "NS",
        env = "HOMELAB_SYNC_APPLICATION_NAMESPACE",
        default_value = "argocd"
    )]
    pub app_namespace: String,
}

/// Arguments of `sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Applications to sync now, whatever their sync policy (implies --once)
    #[arg(value_name = "APP", conflicts_with_all = ["watch", "in_cluster"])]
    pub apps: Vec<String>,

    /// Reconcile every Application once, then exit
    #[arg(long, conflicts_with_all = ["watch", "in_cluster"])]
    pub once: bool,

    /// Keep reconciling from this machine until interrupted
    #[arg(long, conflicts_with = "in_cluster")]
    pub watch: bool,

    /// Run as the in-cluster engine: service account (or --kubeconfig), HTTP endpoints, JSON logs
    #[arg(long)]
    pub in_cluster: bool,

    /// With APP: also delete what git no longer has
    #[arg(long, requires = "apps")]
    pub prune: bool,

    #[command(flatten)]
    pub kube: KubeArgs,

    /// Namespace of the Lease that keeps two engines from acting at once [default: the pod's
    /// namespace ($POD_NAMESPACE) with --in-cluster, else homelab-system]
    #[arg(long, value_name = "NS", env = "HOMELAB_SYNC_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Address of /healthz, /readyz, /webhook and /metrics (--in-cluster)
    #[arg(
        long,
        value_name = "ADDR",
        env = "HOMELAB_SYNC_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: std::net::SocketAddr,

    /// Namespace-scoped mode: manage objects in these namespaces only (comma-separated), for an
    /// engine whose RBAC is a Role per namespace instead of a ClusterRole
    #[arg(
        long,
        value_name = "NS,…",
        env = "HOMELAB_SYNC_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Option<Vec<String>>,

    /// Polling interval when no webhook arrives (jitter of up to 20 % is added)
    #[arg(
        long,
        value_name = "DURATION",
        env = "HOMELAB_SYNC_POLL",
        default_value = "2m"
    )]
    pub poll: String,

    /// Where git checkouts are kept [default: a `homelab-sync` folder in the temp dir]
    #[arg(long, value_name = "DIR", env = "HOMELAB_SYNC_WORK_DIR")]
    pub work_dir: Option<PathBuf>,

    /// PEM file of a CA to trust for git over HTTPS (the lab CA)
    #[arg(long, value_name = "FILE", env = "HOMELAB_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// File holding the webhook's HMAC secret (or set HOMELAB_SYNC_WEBHOOK_SECRET)
    #[arg(long, value_name = "FILE", env = "HOMELAB_SYNC_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
}

/// Arguments of `apps`.
#[derive(Debug, Args)]
pub struct AppsArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Arguments of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The Application
    #[arg(value_name = "APP")]
    pub app: String,

    #[command(flatten)]
    pub kube: KubeArgs,

    /// Where git checkouts are kept [default: a `homelab-sync` folder in the temp dir]
    #[arg(long, value_name = "DIR", env = "HOMELAB_SYNC_WORK_DIR")]
    pub work_dir: Option<PathBuf>,

    /// PEM file of a CA to trust for git over HTTPS (the lab CA)
    #[arg(long, value_name = "FILE", env = "HOMELAB_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting with its value and where it came from (secrets redacted)
    Show(ShowArgs),
}

/// Arguments of `config show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Arguments of `trust`.
#[derive(Debug, Args)]
pub struct TrustArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Run the commands (sudo only where needed, never a prompt) and record each change
    #[arg(long)]
    pub apply: bool,

    /// os-release file to detect the Linux family from [default: /etc/os-release] (tests)
    #[arg(long, value_name = "FILE", hide = true)]
    pub os_release: Option<PathBuf>,
}

/// `export` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write the lab's logs and diagnostics into one `.tar.gz` in DIR and print its path
    ///
    /// Like `kind export logs`: `status`, `up.json`, the upstream lock, the settings and the
    /// rendered manifests; `multipass version` and `info`, and from each VM cloud-init's status
    /// and logs, the provisioning markers and `microk8s inspect`'s report; from the cluster the
    /// lab namespaces' events, pods, workloads and container logs, the Applications and the
    /// nodes. A `README.txt` inside lists what was collected and what failed and why; nothing
    /// that fails stops the export. Secret objects are never read, and every secret value of
    /// the lab is replaced by `<redacted>` in every file, so the archive can be shared.
    Logs(ExportLogsArgs),
}

/// Arguments of `export logs`.
#[derive(Debug, Args)]
pub struct ExportLogsArgs {
    /// Directory to write the archive into (created if missing) [default: the current directory]
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Log lines kept per container and per VM log file
    #[arg(long, value_name = "N", default_value_t = crate::host::export::DEFAULT_TAIL_LINES)]
    pub tail: usize,
}

/// `ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the path of the lab CA certificate (or of its key with --key)
    Path(CaPathArgs),
    /// Print the lab CA's paths, SHA-256 fingerprint, subject, validity and name constraints
    Show,
    /// Replace the lab CA with a new one covering `sslip.io` and the domain
    ///
    /// Needed when the lab moves to a domain the CA's name constraints do not cover. Every
    /// computer that trusted the old CA must trust the new one; refused while this computer's
    /// trust ledger still records the old one (run `homelab untrust` first).
    Regenerate(CaRegenerateArgs),
}

/// Arguments of `ca path`.
#[derive(Debug, Args)]
pub struct CaPathArgs {
    /// The private key's path instead of the certificate's
    #[arg(long)]
    pub key: bool,
}

/// Arguments of `ca regenerate`.
#[derive(Debug, Args)]
pub struct CaRegenerateArgs {
    /// Domain the new CA must cover besides `sslip.io` [default: the `domain` setting]
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
}

/// Choosing the stack and domain.
#[derive(Debug, Args, Default)]
pub struct StackArgs {
    /// Stack name (`default`, `argocd`) or path to a stack file
    #[arg(long, value_name = "NAME|FILE")]
    pub stack: Option<String>,

    /// Domain for lab hostnames [default: <node-ip>.sslip.io]
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
}

/// Choosing and sizing the cluster.
#[derive(Debug, Args, Default)]
pub struct ClusterArgs {
    /// Where the lab runs: Multipass VMs, or an existing cluster from your kubeconfig
    #[arg(long, value_enum, value_name = "PROVIDER")]
    pub provider: Option<ProviderArg>,

    /// Kubeconfig context for `--provider existing`
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// CPUs per VM (at least 2) [default: 4]
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,

    /// Memory per VM, e.g. 8G (at least 4G) [default: 8G]
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<ByteSize>,

    /// Disk per VM, e.g. 40G (at least 20G) [default: 40G]
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<ByteSize>,

    /// Number of VMs; more than one joins them into one cluster [default: 1]
    #[arg(long, value_name = "N")]
    pub nodes: Option<u32>,
}

/// `--provider` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProviderArg {
    /// Multipass VMs running microk8s
    Multipass,
    /// A cluster you already have (kubeconfig)
    Existing,
}

/// Arguments of `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Delete the lab's VMs and launch them again (everything inside them is lost; the CA and
    /// secrets are kept)
    #[arg(long)]
    pub recreate: bool,

    /// Don't end with `homelab verify` (which commits a change to `lab/nyan-cat` and follows it
    /// through build, bump, sync and HTTPS)
    #[arg(long)]
    pub no_verify: bool,

    /// Don't snapshot the lab's VMs at the end (Multipass; `homelab reset` restores that
    /// snapshot; taking it stops and starts the VMs once)
    #[arg(long)]
    pub no_snapshot: bool,

    /// Stop after this step, e.g. `--until ready` for a bare cluster;
    /// `homelab status` lists the steps
    #[arg(long, value_name = "STEP")]
    pub until: Option<String>,
}

/// Arguments of `down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete the lab's CA, secrets and every other file it keeps: nothing of the lab is
    /// left (browsers that trusted its CA must trust a new one next time)
    #[arg(long)]
    pub purge: bool,

    /// With --purge: first undo every change `homelab trust --apply` made on this computer
    /// (`homelab untrust`); without it, --purge refuses while such changes are recorded
    #[arg(long, requires = "purge")]
    pub untrust: bool,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The lab's stack and domain, as `up` was given them (component health renders them)
    #[command(flatten)]
    pub stack: StackArgs,
}

/// Arguments of `reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Where the lab runs [default: what the lab was built on]; `existing` has no snapshots
    #[arg(long, value_enum, value_name = "PROVIDER")]
    pub provider: Option<ProviderArg>,
}

/// Arguments of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Write one file per component (plus cloud-init and repository content) into DIR instead of stdout
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace secrets and CA material with fixed markers, for review; touches no lab state
    #[arg(long)]
    pub placeholder_secrets: bool,

    /// Print the values of Secrets (passwords, tokens, the CA key) instead of `<redacted>` when
    /// rendering to stdout; files written with --out always hold them (mode 0600)
    #[arg(long, conflicts_with_all = ["placeholder_secrets", "out"])]
    pub show_secrets: bool,
}

/// Arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Arguments of `prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// After preparing, serve the cache (images, snaps, upstream manifests) read-only over HTTP
    /// for a workshop room, until Ctrl-C [default address: 0.0.0.0:8787]
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "0.0.0.0:8787")]
    pub serve: Option<String>,
    /// Fetch from a workshop mirror (`http://HOST:8787`, what `prepare --serve` prints) instead
    /// of the internet; every digest is still checked here (sets `upstream.mirror`)
    #[arg(long, value_name = "URL", conflicts_with = "serve")]
    pub from: Option<String>,
    /// Only the upstream manifests: download them and list the images they and the stack
    /// name, without pulling any image
    #[arg(long, conflicts_with = "serve")]
    pub manifests_only: bool,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub stack: StackArgs,
}

/// Arguments of `credentials`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    #[command(flatten)]
    pub stack: StackArgs,
}

/// Arguments of `open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Only print the URL; do not start a browser
    #[arg(long)]
    pub print: bool,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// Arguments of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Stack whose cache `--offline` looks at (`default`, `argocd`) or path to a stack file
    #[arg(long, value_name = "NAME|FILE", requires = "offline")]
    pub stack: Option<String>,
    /// Say what the cache holds for the stack and what would still be downloaded; exit 1 when
    /// anything would be
    #[arg(long)]
    pub offline: bool,
}

impl StackArgs {
    fn apply(&self, layer: &mut Layer) {
        layer.stack = self.stack.clone();
        layer.domain = self.domain.clone();
    }
}

impl ClusterArgs {
    fn apply(&self, layer: &mut Layer) {
        layer.provider = self.provider.map(|p| match p {
            ProviderArg::Multipass => ProviderKind::Multipass,
            ProviderArg::Existing => ProviderKind::Existing,
        });
        layer.context = self.context.clone();
        layer.vm_cpus = self.cpus;
        layer.vm_memory = self.memory;
        layer.vm_disk = self.disk;
        layer.vm_nodes = self.nodes;
    }
}

impl Cli {
    /// What the flags set, as a settings layer.
    pub fn layer(&self) -> Layer {
        let mut layer = Layer {
            lab: self.global.lab.clone(),
            ..Layer::default()
        };
        match &self.command {
            Command::Render(a) => a.stack.apply(&mut layer),
            Command::Plan(a) => {
                a.stack.apply(&mut layer);
                a.cluster.apply(&mut layer);
            }
            Command::Doctor(a) => {
                a.cluster.apply(&mut layer);
                if a.stack.is_some() {
                    layer.stack = a.stack.clone();
                }
            }
            Command::Prepare(a) => {
                a.stack.apply(&mut layer);
                if a.from.is_some() {
                    layer.upstream_mirror = a.from.clone();
                }
            }
            Command::Config(ConfigCommand::Show(a)) => {
                a.stack.apply(&mut layer);
                a.cluster.apply(&mut layer);
            }
            Command::Trust(a) => a.stack.apply(&mut layer),
            Command::Ca(CaCommand::Regenerate(a)) => layer.domain = a.domain.clone(),
            Command::Untrust | Command::Ca(_) => {}
            Command::Credentials(a) => a.stack.apply(&mut layer),
            Command::Open(a) => a.stack.apply(&mut layer),
            Command::Verify(a) => a.stack.apply(&mut layer),
            Command::Up(a) => {
                a.stack.apply(&mut layer);
                a.cluster.apply(&mut layer);
            }
            Command::Status(a) => a.stack.apply(&mut layer),
            Command::Down(_) => {}
            Command::Reset(a) => {
                a.stack.apply(&mut layer);
                layer.provider = a.provider.map(|p| match p {
                    ProviderArg::Multipass => ProviderKind::Multipass,
                    ProviderArg::Existing => ProviderKind::Existing,
                });
            }
            Command::Sync(a) => layer.context = a.kube.context.clone(),
            Command::Apps(a) => layer.context = a.kube.context.clone(),
            Command::Diff(a) => layer.context = a.kube.context.clone(),
            Command::Export(_) | Command::Completions { .. } => {}
        }
        layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
