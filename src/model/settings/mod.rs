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
use std::path::PathBuf;

use serde::Serialize;

use crate::edges::error::Diagnostic;
use crate::edges::redact::Secret;

mod keys;
mod layers;

pub use keys::{
    ByteSize, CONFIG_FILE_NAME, DEFAULT_LAB, DEFAULT_STACK, KEYS, KeyDoc, MIN_VM_CPUS, MIN_VM_DISK,
    MIN_VM_MEMORY, Origin, ProviderKind, env_name, gib,
};
use layers::load_file_layer;
pub use layers::{Inputs, Layer, env_layer, parse_file};

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
    pub fn channel(&self, stack: &crate::model::stack::Stack) -> String {
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

#[cfg(test)]
mod tests;
