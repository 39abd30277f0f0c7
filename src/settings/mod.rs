//! Settings: what the user typed, merged once into the one value every command uses.
//!
//! Architecture invariant: pure apart from reading the config file and the environment, which
//! [`Settings::resolve`] receives as inputs. Commands never read `HOMELAB_*` variables or
//! `homelab.yaml` themselves.
//!
//! # Precedence
//!
//! Each key is taken from the first layer that sets it, highest first:
//!
//! 1. command-line flags (`--lab`, `--stack`, `--domain`, `--cpus`, …);
//! 2. `HOMELAB_*` environment variables, named after the key (`vm.cpus` → `HOMELAB_VM_CPUS`);
//! 3. the config file: `--config FILE` (or `HOMELAB_CONFIG`), else `./homelab.yaml` if present;
//! 4. built-in defaults.
//!
//! `homelab config show` prints the result with the layer each value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Diagnostic;
use crate::redact::Secret;
use crate::yaml;

/// Default lab name.
pub const DEFAULT_LAB: &str = "homelab";
/// Default stack.
pub const DEFAULT_STACK: &str = "default";
/// Name of the config file looked up in the current directory.
pub const CONFIG_FILE_NAME: &str = "homelab.yaml";
/// Fewest CPUs a lab VM may have: microk8s plus the stack's components starve below this.
pub const MIN_VM_CPUS: u32 = 2;
/// Least memory a lab VM may have.
pub const MIN_VM_MEMORY: ByteSize = ByteSize::gib(4);
/// Smallest disk a lab VM may have: the snap, images and volumes need the room.
pub const MIN_VM_DISK: ByteSize = ByteSize::gib(20);

/// One documented settings key.
#[derive(Clone, Copy, Debug)]
pub struct KeyDoc {
    /// Dotted key as written in `homelab.yaml`.
    pub key: &'static str,
    /// What it means.
    pub about: &'static str,
    /// An example line for `homelab.yaml`.
    pub example: &'static str,
}

/// Every key homelab accepts, in display order.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "lab",
        about: "name of the lab; several labs can coexist",
        example: "lab: workshop",
    },
    KeyDoc {
        key: "stack",
        about: "stack name (`default`, `argocd`) or path to a stack file",
        example: "stack: argocd",
    },
    KeyDoc {
        key: "domain",
        about: "domain for lab hostnames (default `<node-ip>.sslip.io`)",
        example: "domain: lab.example.test",
    },
    KeyDoc {
        key: "provider",
        about: "`multipass` (default) or `existing` (a cluster from your kubeconfig)",
        example: "provider: existing",
    },
    KeyDoc {
        key: "context",
        about: "kubeconfig context for the `existing` provider",
        example: "context: my-cluster",
    },
    KeyDoc {
        key: "vm.cpus",
        about: "CPUs per VM (at least 2)",
        example: "cpus: 4",
    },
    KeyDoc {
        key: "vm.memory",
        about: "memory per VM, with K/M/G suffix (at least 4G)",
        example: "memory: 8G",
    },
    KeyDoc {
        key: "vm.disk",
        about: "disk per VM, with K/M/G suffix (at least 20G)",
        example: "disk: 40G",
    },
    KeyDoc {
        key: "vm.nodes",
        about: "number of VMs in the cluster",
        example: "nodes: 1",
    },
    KeyDoc {
        key: "vm.image",
        about: "Ubuntu LTS image for the VMs (pinned release)",
        example: "image: \"24.04\"",
    },
    KeyDoc {
        key: "microk8s.channel",
        about: "microk8s snap channel (default: the stack's pinned track)",
        example: "channel: 1.36/stable",
    },
    KeyDoc {
        key: "gitea.admin_user",
        about: "Gitea admin login (not `admin`, which Gitea reserves)",
        example: "admin_user: lab-admin",
    },
    KeyDoc {
        key: "gitea.admin_password",
        about: "Gitea admin password (default: generated once and kept in the lab state)",
        example: "admin_password: …",
    },
    KeyDoc {
        key: "sync.image",
        about: "image of the in-cluster sync engine (default: the stack's pin)",
        example: "image: ghcr.io/homelab-dev/homelab:0.1.0",
    },
    KeyDoc {
        key: "upstream.mirror",
        about: "base URL of a mirror serving upstream release manifests as `<mirror>/<host>/<path>` (for a workshop's slow network)",
        example: "mirror: http://10.0.0.2:8000",
    },
];

/// Environment variables that belong to homelab but are not settings keys.
const NON_SETTING_ENV: &[&str] = &[
    "HOMELAB_CONFIG",
    // The upstream contract documents' folder for the tests' drift check (tests/it/contracts.rs).
    "HOMELAB_UPSTREAM_CONTRACTS",
    "HOMELAB_TEST_KUBECONFIG",
    "HOMELAB_TEST_GITEA_URL",
    "HOMELAB_TEST_GITEA_ADMIN",
    "HOMELAB_E2E",
    // scripts/e2e's own knobs: the lab, extra `up` arguments, where a failure's logs go.
    "HOMELAB_E2E_LAB",
    "HOMELAB_E2E_ARGS",
    "HOMELAB_E2E_LOGS",
    "HOMELAB_VALIDATOR",
    "HOMELAB_LOG",
    "HOMELAB_TEST_WAITS",
    "HOMELAB_TEST_INGRESS_PORT",
    "HOMELAB_TEST_HOST",
    "HOMELAB_TEST_PLATFORM",
    // Runtime parameters of the in-cluster sync engine, set by its Deployment.
    "HOMELAB_SYNC_APPLICATION_NAMESPACE",
    "HOMELAB_SYNC_LEASE_NAMESPACE",
    "HOMELAB_SYNC_LISTEN",
    "HOMELAB_SYNC_POLL",
    "HOMELAB_SYNC_NAMESPACES",
    "HOMELAB_SYNC_WORK_DIR",
    "HOMELAB_CA_FILE",
    "HOMELAB_SYNC_WEBHOOK_SECRET",
    "HOMELAB_SYNC_WEBHOOK_SECRET_FILE",
];

/// The environment variable for a key: `vm.cpus` → `HOMELAB_VM_CPUS`.
pub fn env_name(key: &str) -> String {
    format!("HOMELAB_{}", key.to_uppercase().replace('.', "_"))
}

/// Which cluster provider builds the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Multipass VMs running microk8s.
    Multipass,
    /// Any cluster reachable through a kubeconfig.
    Existing,
}

impl std::str::FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "multipass" => Ok(ProviderKind::Multipass),
            "existing" => Ok(ProviderKind::Existing),
            other => Err(format!(
                "unknown provider `{other}`, expected `multipass` or `existing`"
            )),
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Multipass => "multipass",
            ProviderKind::Existing => "existing",
        })
    }
}

/// A size in bytes, read with an optional K/M/G/T suffix (powers of 1024, as Multipass counts).
///
/// It prints with K, M or G only, never T: the same text is handed to `multipass launch
/// --memory/--disk`, and Multipass's parser knows no other unit. canonical/multipass v1.16.3
/// `src/utils/memory_size.cpp` (`mp::in_bytes`, used by `validate_create_arguments` in
/// `src/daemon/daemon.cpp`) accepts `\s*(\d+)(?:\.(\d+)(?=[KMG]))?(?:([KMG])(?:i?B)?|B)?\s*`,
/// case-insensitive: an integer, a decimal part only before a unit, units K, M, G (optionally
/// followed by `B` or `iB`) or a bare `B`; anything else (`1T`, `1.5`) is "Invalid disk size
/// value supplied" (issue 12). So `1T` is read here and printed as `1024G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
}

/// Bytes as gibibytes with one decimal, for people: `7.8G`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / (1u64 << 30) as f64)
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t
            .strip_suffix("iB")
            .or_else(|| t.strip_suffix('B'))
            .unwrap_or(t);
        let (num, mult) = match t.chars().last() {
            Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
            Some('M' | 'm') => (&t[..t.len() - 1], 1u64 << 20),
            Some('G' | 'g') => (&t[..t.len() - 1], 1u64 << 30),
            Some('T' | 't') => (&t[..t.len() - 1], 1u64 << 40),
            _ => (t, 1u64),
        };
        let value: f64 = num.trim().parse().map_err(|_| {
            format!("`{s}` is not a size; write a number with K, M or G, e.g. `8G`")
        })?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "`{s}` is not a size; write a number with K, M or G, e.g. `8G`"
            ));
        }
        Ok(ByteSize((value * mult as f64).round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        // No `T`: see the type's doc (Multipass refuses it).
        for (suffix, unit) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
            if b >= unit && b.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", b / unit);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The layer a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Built-in default.
    Default,
    /// The config file.
    File,
    /// A `HOMELAB_*` variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Default => "default",
            Origin::File => "file",
            Origin::Env => "env",
            Origin::Flag => "flag",
        })
    }
}

/// VM sizing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VmSettings {
    /// CPUs per VM.
    pub cpus: u32,
    /// Memory per VM.
    pub memory: ByteSize,
    /// Disk per VM.
    pub disk: ByteSize,
    /// Number of VMs.
    pub nodes: u32,
    /// Ubuntu image (version) for `multipass launch`.
    pub image: String,
}

/// The resolved settings: one value, built once per run.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Lab name.
    pub lab: String,
    /// Stack name or file.
    pub stack: String,
    /// Domain override; `None` means `<node-ip>.sslip.io`.
    pub domain: Option<String>,
    /// Cluster provider.
    pub provider: ProviderKind,
    /// Kubeconfig context for the existing provider.
    pub context: Option<String>,
    /// VM sizing.
    pub vm: VmSettings,
    /// microk8s snap channel override; `None` means the stack's pin.
    pub microk8s_channel: Option<String>,
    /// Gitea admin login.
    pub gitea_admin_user: String,
    /// Gitea admin password override.
    pub gitea_admin_password: Option<Secret>,
    /// Sync engine image override.
    pub sync_image: Option<String>,
    /// Mirror for upstream release manifests.
    pub upstream_mirror: Option<String>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Where each key's value came from.
    pub origins: BTreeMap<&'static str, Origin>,
    /// `HOMELAB_TEST_WAITS`: shorter waits and polls for tests (see `up::Waits::from_env`).
    #[serde(skip)]
    pub test_waits: Option<String>,
    /// `HOMELAB_TEST_HOST`: what `doctor` and `up`'s preflight take as this computer's memory,
    /// free disk and virtualisation instead of measuring them (see `doctor::HostOverride`).
    /// Only for tests, whose verdicts must not depend on the machine running them.
    #[serde(skip)]
    pub test_host: Option<String>,
    /// `HOMELAB_TEST_INGRESS_PORT`: the port the lab's `https://<name>.<domain>` URLs connect
    /// to on the first node instead of 443. Only for tests that cannot listen on a privileged
    /// port; see [`Settings::ingress_port`].
    pub test_ingress_port: Option<u16>,
}

/// Values one layer sets; `None` means "not set here".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    /// `lab`
    pub lab: Option<String>,
    /// `stack`
    pub stack: Option<String>,
    /// `domain`
    pub domain: Option<String>,
    /// `provider`
    pub provider: Option<ProviderKind>,
    /// `context`
    pub context: Option<String>,
    /// `vm.cpus`
    pub vm_cpus: Option<u32>,
    /// `vm.memory`
    pub vm_memory: Option<ByteSize>,
    /// `vm.disk`
    pub vm_disk: Option<ByteSize>,
    /// `vm.nodes`
    pub vm_nodes: Option<u32>,
    /// `vm.image`
    pub vm_image: Option<String>,
    /// `microk8s.channel`
    pub microk8s_channel: Option<String>,
    /// `gitea.admin_user`
    pub gitea_admin_user: Option<String>,
    /// `gitea.admin_password`
    pub gitea_admin_password: Option<Secret>,
    /// `sync.image`
    pub sync_image: Option<String>,
    /// `upstream.mirror`
    pub upstream_mirror: Option<String>,
}

/// The config file's shape. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    lab: Option<String>,
    stack: Option<String>,
    domain: Option<String>,
    provider: Option<ProviderKind>,
    context: Option<String>,
    vm: Option<FileVm>,
    microk8s: Option<FileMicrok8s>,
    gitea: Option<FileGitea>,
    sync: Option<FileSync>,
    upstream: Option<FileUpstream>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVm {
    cpus: Option<u32>,
    memory: Option<ByteSize>,
    disk: Option<ByteSize>,
    nodes: Option<u32>,
    image: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMicrok8s {
    channel: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGitea {
    admin_user: Option<String>,
    admin_password: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    mirror: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSync {
    image: Option<String>,
}

/// A settings input that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file names a key homelab doesn't know.
    #[error("unknown key `{key}` in `{file}` at {position}")]
    UnknownKey {
        /// Config file.
        file: String,
        /// Dotted key.
        key: String,
        /// "line L, column C".
        position: String,
        /// Keys accepted at that level.
        expected: Vec<String>,
    },
    /// A value has the wrong type or cannot be parsed.
    #[error("invalid value for `{key}` in `{file}` at {position}: {message}")]
    BadValue {
        /// Config file.
        file: String,
        /// Dotted key.
        key: String,
        /// "line L, column C".
        position: String,
        /// What is wrong.
        message: String,
    },
    /// The file is not YAML at all.
    #[error("`{file}` is not valid YAML at {position}: {message}")]
    Syntax {
        /// Config file.
        file: String,
        /// "line L, column C".
        position: String,
        /// Parser message.
        message: String,
    },
    /// `--config` names a file that does not exist.
    #[error("config file `{file}` does not exist")]
    Missing {
        /// The path given.
        file: String,
    },
    /// The file could not be read.
    #[error("could not read config file `{file}`")]
    Read {
        /// The path.
        file: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An environment variable has a value that cannot be used.
    #[error("invalid value for `{key}` in environment variable `{var}`: {message}")]
    BadEnv {
        /// Dotted key.
        key: String,
        /// Variable name.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A resolved value breaks a rule (lab name syntax, …).
    #[error("invalid `{key}` {value}: {message}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// The offending value, quoted.
        value: String,
        /// What is wrong.
        message: String,
        /// What to do.
        hint: String,
    },
}

impl Diagnostic for ConfigError {
    fn hints(&self) -> Vec<String> {
        match self {
            ConfigError::UnknownKey { expected, key, .. } => {
                let parent = key.rsplit_once('.').map(|(p, _)| p);
                let at = match parent {
                    Some(p) => format!("under `{p}`"),
                    None => "at the top level".to_string(),
                };
                vec![format!(
                    "the keys {at} are {}",
                    expected
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )]
            }
            ConfigError::BadValue { key, .. } | ConfigError::BadEnv { key, .. } => {
                match KEYS.iter().find(|k| k.key == key) {
                    Some(doc) => vec![format!(
                        "`{key}` is the {}, e.g. `{}`",
                        doc.about, doc.example
                    )],
                    None => Vec::new(),
                }
            }
            ConfigError::Syntax { .. } => {
                vec!["check the indentation and quoting around that position".into()]
            }
            ConfigError::Missing { .. } => vec![
                "pass an existing file to `--config`, or drop the flag to use `./homelab.yaml`"
                    .into(),
            ],
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Invalid { hint, .. } => vec![hint.clone()],
        }
    }
}

/// The raw inputs settings are resolved from.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// `--config`, if given.
    pub config_flag: Option<PathBuf>,
    /// Directory searched for `homelab.yaml`.
    pub cwd: PathBuf,
    /// The environment (all variables; non-`HOMELAB_*` ones are ignored).
    pub env: BTreeMap<String, String>,
    /// What flags set.
    pub flags: Layer,
}

impl Inputs {
    /// Inputs from the real process environment.
    pub fn from_process(config_flag: Option<PathBuf>, flags: Layer) -> Self {
        Inputs {
            config_flag,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            env: std::env::vars().collect(),
            flags,
        }
    }
}

impl Settings {
    /// Merge defaults < file < env < flags. See the module docs for the precedence.
    pub fn resolve(inputs: &Inputs) -> Result<Settings, ConfigError> {
        let (config_file, file_layer) = load_file_layer(inputs)?;
        let env_layer = env_layer(&inputs.env)?;
        let layers = [
            (Origin::Flag, &inputs.flags),
            (Origin::Env, &env_layer),
            (Origin::File, &file_layer),
        ];
        let mut origins = BTreeMap::new();

        macro_rules! pick {
            ($key:literal, $field:ident) => {{
                let mut found = None;
                for (origin, layer) in &layers {
                    if let Some(v) = &layer.$field {
                        found = Some((v.clone(), *origin));
                        break;
                    }
                }
                match found {
                    Some((v, o)) => {
                        origins.insert($key, o);
                        Some(v)
                    }
                    None => {
                        origins.insert($key, Origin::Default);
                        None
                    }
                }
            }};
        }

        let lab = pick!("lab", lab).unwrap_or_else(|| DEFAULT_LAB.to_string());
        let stack = pick!("stack", stack).unwrap_or_else(|| DEFAULT_STACK.to_string());
        let domain = pick!("domain", domain);
        let provider = pick!("provider", provider).unwrap_or(ProviderKind::Multipass);
        let context = pick!("context", context);
        let vm = VmSettings {
            cpus: pick!("vm.cpus", vm_cpus).unwrap_or(4),
            memory: pick!("vm.memory", vm_memory).unwrap_or(ByteSize::gib(8)),
            disk: pick!("vm.disk", vm_disk).unwrap_or(ByteSize::gib(40)),
            nodes: pick!("vm.nodes", vm_nodes).unwrap_or(1),
            image: pick!("vm.image", vm_image).unwrap_or_else(|| "24.04".to_string()),
        };
        let microk8s_channel = pick!("microk8s.channel", microk8s_channel);
        let gitea_admin_user =
            pick!("gitea.admin_user", gitea_admin_user).unwrap_or_else(|| "lab-admin".to_string());
        let gitea_admin_password = pick!("gitea.admin_password", gitea_admin_password);
        let sync_image = pick!("sync.image", sync_image);
        let upstream_mirror = pick!("upstream.mirror", upstream_mirror);

        let settings = Settings {
            lab,
            stack,
            domain,
            provider,
            context,
            vm,
            microk8s_channel,
            gitea_admin_user,
            gitea_admin_password,
            sync_image,
            upstream_mirror,
            config_file,
            origins,
            test_waits: inputs.env.get("HOMELAB_TEST_WAITS").cloned(),
            test_host: inputs.env.get("HOMELAB_TEST_HOST").cloned(),
            test_ingress_port: match inputs.env.get("HOMELAB_TEST_INGRESS_PORT") {
                None => None,
                Some(v) => Some(v.trim().parse().map_err(|_| ConfigError::BadEnv {
                    key: "(test) ingress port".into(),
                    var: "HOMELAB_TEST_INGRESS_PORT".into(),
                    message: format!("`{v}` is not a port number"),
                })?),
            },
        };
        settings.check()?;
        Ok(settings)
    }

    /// The port of the nodes' ingress the lab's URLs connect to: 443, the port the stack's
    /// ingress listens on (hostPort), unless a test set `HOMELAB_TEST_INGRESS_PORT`.
    pub fn ingress_port(&self) -> u16 {
        self.test_ingress_port.unwrap_or(443)
    }

    fn check(&self) -> Result<(), ConfigError> {
        check_dns_label("lab", &self.lab, "a lab name")?;
        if let Some(domain) = &self.domain {
            let ok = !domain.is_empty()
                && domain.len() <= 200
                && domain.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "domain".into(),
                    value: format!("`{domain}`"),
                    message: "not a DNS domain".into(),
                    hint: "use dot-separated labels of letters, digits and hyphens, e.g. `lab.example.test`".into(),
                });
            }
        }
        if self.gitea_admin_user.eq_ignore_ascii_case("admin") {
            return Err(ConfigError::Invalid {
                key: "gitea.admin_user".into(),
                value: "`admin`".into(),
                message: "Gitea reserves this name".into(),
                hint: "choose another login, e.g. `lab-admin`".into(),
            });
        }
        if self.provider == ProviderKind::Multipass {
            self.check_vm_minimums()?;
        }
        if self.vm.nodes == 0 {
            return Err(ConfigError::Invalid {
                key: "vm.nodes".into(),
                value: "0".into(),
                message: "a lab needs at least one node".into(),
                hint: "set `vm.nodes` to 1 or more".into(),
            });
        }
        Ok(())
    }

    /// VM sizes below what the lab runs on are refused up front, before any VM exists.
    fn check_vm_minimums(&self) -> Result<(), ConfigError> {
        let vm = &self.vm;
        if vm.cpus < MIN_VM_CPUS {
            return Err(ConfigError::Invalid {
                key: "vm.cpus".into(),
                value: vm.cpus.to_string(),
                message: format!("a lab VM needs at least {MIN_VM_CPUS} CPUs"),
                hint:
                    "microk8s and the lab's components need the CPUs; the default is 4 (`--cpus 4`)"
                        .into(),
            });
        }
        if vm.memory < MIN_VM_MEMORY {
            return Err(ConfigError::Invalid {
                key: "vm.memory".into(),
                value: format!("`{}`", vm.memory),
                message: format!("a lab VM needs at least {MIN_VM_MEMORY} of memory"),
                hint:
                    "Gitea, Drone and the builds need the memory; the default is 8G (`--memory 8G`)"
                        .into(),
            });
        }
        if vm.disk < MIN_VM_DISK {
            return Err(ConfigError::Invalid {
                key: "vm.disk".into(),
                value: format!("`{}`", vm.disk),
                message: format!("a lab VM needs at least {MIN_VM_DISK} of disk"),
                hint:
                    "container images and volumes need the room; the default is 40G (`--disk 40G`)"
                        .into(),
            });
        }
        Ok(())
    }

    /// The microk8s snap channel in effect: the setting, else the stack's pin.
    pub fn channel(&self, stack: &crate::stack::Stack) -> String {
        self.microk8s_channel
            .clone()
            .unwrap_or_else(|| stack.cluster.channel.clone())
    }

    /// `homelab-<lab>`: the kube context name and VM name prefix.
    pub fn context_name(&self) -> String {
        format!("homelab-{}", self.lab)
    }

    /// Every key with its display value and origin, for `homelab config show`.
    pub fn entries(&self) -> Vec<(&'static str, String, Origin)> {
        let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "(unset)".into());
        let values: Vec<(&'static str, String)> = vec![
            ("lab", self.lab.clone()),
            ("stack", self.stack.clone()),
            (
                "domain",
                self.domain
                    .clone()
                    .unwrap_or_else(|| "(unset: <node-ip>.sslip.io)".into()),
            ),
            ("provider", self.provider.to_string()),
            ("context", show(&self.context)),
            ("vm.cpus", self.vm.cpus.to_string()),
            ("vm.memory", self.vm.memory.to_string()),
            ("vm.disk", self.vm.disk.to_string()),
            ("vm.nodes", self.vm.nodes.to_string()),
            ("vm.image", self.vm.image.clone()),
            (
                "microk8s.channel",
                self.microk8s_channel
                    .clone()
                    .unwrap_or_else(|| "(unset: the stack's pin)".into()),
            ),
            ("gitea.admin_user", self.gitea_admin_user.clone()),
            (
                "gitea.admin_password",
                match &self.gitea_admin_password {
                    Some(s) => s.to_string(),
                    None => "(unset: generated into the lab state)".into(),
                },
            ),
            (
                "sync.image",
                self.sync_image
                    .clone()
                    .unwrap_or_else(|| "(unset: the stack's pin)".into()),
            ),
            ("upstream.mirror", show(&self.upstream_mirror)),
        ];
        values
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v,
                    self.origins.get(k).copied().unwrap_or(Origin::Default),
                )
            })
            .collect()
    }
}

/// Lab names become VM names, kube contexts and directory names: keep them DNS-label-like.
fn check_dns_label(key: &str, value: &str, what: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 40
        && value.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: key.into(),
            value: format!("`{value}`"),
            message: format!(
                "{what} must start with a lowercase letter and contain only lowercase letters, digits and hyphens (at most 40)"
            ),
            hint: format!("e.g. `--{key} workshop-1`"),
        })
    }
}

fn load_file_layer(inputs: &Inputs) -> Result<(Option<PathBuf>, Layer), ConfigError> {
    let path = match &inputs.config_flag {
        Some(p) => {
            let p = if p.is_absolute() {
                p.clone()
            } else {
                inputs.cwd.join(p)
            };
            if !p.exists() {
                return Err(ConfigError::Missing {
                    file: display_path(inputs, &p),
                });
            }
            p
        }
        None => {
            let p = inputs.cwd.join(CONFIG_FILE_NAME);
            if !p.exists() {
                return Ok((None, Layer::default()));
            }
            p
        }
    };
    let shown = display_path(inputs, &path);
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        file: shown.clone(),
        source,
    })?;
    let layer = parse_file(&shown, &text)?;
    Ok((Some(path), layer))
}

fn display_path(inputs: &Inputs, p: &Path) -> String {
    p.strip_prefix(&inputs.cwd)
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.display().to_string())
}

/// Parse the text of a config file named `file` into a layer.
pub fn parse_file(file: &str, text: &str) -> Result<Layer, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Layer::default());
    }
    let cfg: FileConfig = yaml::from_str(text).map_err(|e| classify_yaml_error(file, e))?;
    let vm = cfg.vm.unwrap_or_default();
    let mk = cfg.microk8s.unwrap_or_default();
    let gitea = cfg.gitea.unwrap_or_default();
    let sync = cfg.sync.unwrap_or_default();
    let upstream = cfg.upstream.unwrap_or_default();
    Ok(Layer {
        lab: cfg.lab,
        stack: cfg.stack,
        domain: cfg.domain,
        provider: cfg.provider,
        context: cfg.context,
        vm_cpus: vm.cpus,
        vm_memory: vm.memory,
        vm_disk: vm.disk,
        vm_nodes: vm.nodes,
        vm_image: vm.image,
        microk8s_channel: mk.channel,
        gitea_admin_user: gitea.admin_user,
        gitea_admin_password: gitea.admin_password,
        sync_image: sync.image,
        upstream_mirror: upstream.mirror,
    })
}

/// Turn a YAML error into a [`ConfigError`] that names the dotted key.
fn classify_yaml_error(file: &str, e: yaml::YamlError) -> ConfigError {
    let position = e.position().unwrap_or_else(|| "an unknown position".into());
    match e.problem() {
        yaml::Problem::UnknownKey { key, expected } => ConfigError::UnknownKey {
            file: file.into(),
            key,
            position,
            expected,
        },
        yaml::Problem::BadValue { key, message } => ConfigError::BadValue {
            file: file.into(),
            key: key.unwrap_or_else(|| "(top level)".into()),
            position,
            message,
        },
        yaml::Problem::Syntax { message } => ConfigError::Syntax {
            file: file.into(),
            position,
            message,
        },
    }
}

/// Read `HOMELAB_*` settings from an environment map.
pub fn env_layer(env: &BTreeMap<String, String>) -> Result<Layer, ConfigError> {
    let mut layer = Layer::default();
    for (var, value) in env {
        if !var.starts_with("HOMELAB_") || NON_SETTING_ENV.contains(&var.as_str()) {
            continue;
        }
        let Some(doc) = KEYS.iter().find(|k| env_name(k.key) == *var) else {
            tracing::warn!("ignoring unknown environment variable `{var}`");
            continue;
        };
        let key = doc.key;
        let bad = |message: String| ConfigError::BadEnv {
            key: key.into(),
            var: var.clone(),
            message,
        };
        let int = |v: &str| -> Result<u32, ConfigError> {
            v.trim()
                .parse::<u32>()
                .map_err(|_| bad(format!("`{v}` is not a whole number")))
        };
        match key {
            "lab" => layer.lab = Some(value.clone()),
            "stack" => layer.stack = Some(value.clone()),
            "domain" => layer.domain = Some(value.clone()),
            "provider" => layer.provider = Some(value.parse().map_err(bad)?),
            "context" => layer.context = Some(value.clone()),
            "vm.cpus" => layer.vm_cpus = Some(int(value)?),
            "vm.memory" => layer.vm_memory = Some(value.parse().map_err(bad)?),
            "vm.disk" => layer.vm_disk = Some(value.parse().map_err(bad)?),
            "vm.nodes" => layer.vm_nodes = Some(int(value)?),
            "vm.image" => layer.vm_image = Some(value.clone()),
            "microk8s.channel" => layer.microk8s_channel = Some(value.clone()),
            "gitea.admin_user" => layer.gitea_admin_user = Some(value.clone()),
            "gitea.admin_password" => layer.gitea_admin_password = Some(Secret::new(value.clone())),
            "sync.image" => layer.sync_image = Some(value.clone()),
            "upstream.mirror" => layer.upstream_mirror = Some(value.clone()),
            _ => unreachable!("every key in KEYS is handled"),
        }
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_an_env_name_and_is_handled() {
        for k in KEYS {
            let mut env = BTreeMap::new();
            let value = match k.key {
                "provider" => "existing",
                "vm.cpus" | "vm.nodes" => "3",
                "vm.memory" | "vm.disk" => "9G",
                _ => "x",
            };
            env.insert(env_name(k.key), value.to_string());
            let layer = env_layer(&env).unwrap();
            assert_ne!(layer, Layer::default(), "{} not read from env", k.key);
        }
    }

    #[test]
    fn byte_sizes_parse_and_print() {
        assert_eq!("8G".parse::<ByteSize>().unwrap(), ByteSize::gib(8));
        assert_eq!("512M".parse::<ByteSize>().unwrap().to_string(), "512M");
        assert_eq!("1.5G".parse::<ByteSize>().unwrap().to_string(), "1536M");
        assert_eq!("4GiB".parse::<ByteSize>().unwrap(), ByteSize::gib(4));
        assert!("lots".parse::<ByteSize>().is_err());
    }

    /// Issue 12: Multipass reads K, M and G only (`src/utils/memory_size.cpp`), so whole TiB
    /// values print as G and every printed size is an integer with one of those units.
    #[test]
    fn byte_sizes_print_only_units_multipass_reads() {
        assert_eq!("1T".parse::<ByteSize>().unwrap().to_string(), "1024G");
        assert_eq!("2TiB".parse::<ByteSize>().unwrap().to_string(), "2048G");
        assert_eq!("1.5T".parse::<ByteSize>().unwrap().to_string(), "1536G");
        for text in ["1T", "1.25T", "40G", "1.5G", "0.3G", "512M", "1000", "7K"] {
            let printed = text.parse::<ByteSize>().unwrap().to_string();
            let (digits, unit) = printed.split_at(printed.trim_end_matches(['K', 'M', 'G']).len());
            assert!(
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && unit.len() <= 1,
                "`{text}` printed as `{printed}`, which Multipass does not read"
            );
        }
    }
}
