//! Where settings come from: the inputs (flags, environment, working directory), the config
//! file's shape and its loading, and the environment layer — each read into a [`Layer`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use super::keys::{ByteSize, CONFIG_FILE_NAME, KEYS, NON_SETTING_ENV, ProviderKind, env_name};
use crate::edges::redact::Secret;
use crate::edges::yaml;

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

pub(super) fn load_file_layer(inputs: &Inputs) -> Result<(Option<PathBuf>, Layer), ConfigError> {
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
