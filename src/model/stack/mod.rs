//! Stacks as data: which components a lab runs, their pinned versions, sources, dependencies,
//! resources and hostnames (`stacks/*.yaml`).
//!
//! Architecture invariant: pure. Loading takes the text of the stack file (and of any stack it
//! `extends`); validation rejects unknown keys, unknown `needs`, cycles, unpinned images and
//! templates that don't exist, before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::edges::error::Diagnostic;
use crate::edges::yaml;
use crate::model::assets;
use crate::model::settings::ProviderKind;

mod check;

pub use check::check_image_pinned;
use check::{order, resolve_this_build, validate, waves_of};

/// Where a component's manifests come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Our templates under `templates/<dir>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<String>,
    /// A pinned upstream release manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// A microk8s addon, enabled through the launch configuration at provision time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addon: Option<String>,
}

/// A pinned upstream manifest. Its sha256 is recorded in the lab's lock on first download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Release URL naming an exact version.
    pub url: String,
    /// Objects of the manifest (`Kind/name`, e.g. `ConfigMap/argocd-cm`) that the component's
    /// own templates configure: the template's object is laid over the upstream one (its
    /// `data`, `stringData`, labels and annotations win key by key) and the result is applied
    /// once, so each object has one owner and keeps upstream's defaults. Only ConfigMaps and
    /// Secrets, the upstream's documented configuration points, may be configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configures: Vec<String>,
}

/// Resource requests for a component's main container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU request, e.g. `100m`.
    pub cpu: String,
    /// Memory request, e.g. `128Mi`.
    pub memory: String,
}

/// One component of a stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Unique name.
    pub name: String,
    /// One line for people.
    #[serde(default)]
    pub description: String,
    /// Namespace its namespaced objects live in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pinned version of the software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where its manifests come from.
    pub source: Source,
    /// Container images by role, each pinned to a tag or digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Components that must be Ready before this one starts.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Requests for its main container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Public host label: the component answers at `https://<hostname>.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Git repositories this component seeds, by repo name → template directory.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub repos: BTreeMap<String, String>,
    /// Seconds to wait for readiness before reporting what is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// The providers it runs with (empty: all). A component that configures the cluster
    /// homelab builds (the Multipass VMs' microk8s) names `multipass`: on `--provider existing`
    /// the cluster is its owner's, and homelab leaves it as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderKind>,
    /// Its objects exist before the lab (a microk8s addon created them): homelab takes over only
    /// the fields it renders (server-side apply, forced, with its own field manager) and marks
    /// none of them as the lab's, so neither prune nor `down` ever deletes them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopts: bool,
    /// The in-cluster URL that receives the Git server's push webhook for the GitOps
    /// repository (the GitOps engine's endpoint), so a push syncs at once instead of at the
    /// next poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

impl Component {
    /// What kind of source this is, for display.
    pub fn source_kind(&self) -> &'static str {
        match (
            &self.source.addon,
            &self.source.upstream,
            &self.source.templates,
        ) {
            (Some(_), _, _) => "addon",
            (None, Some(_), Some(_)) => "upstream+templates",
            (None, Some(_), None) => "upstream",
            (None, None, _) => "templates",
        }
    }

    /// True for microk8s addons, which the provider enables rather than the deploy step.
    pub fn is_addon(&self) -> bool {
        self.source.addon.is_some()
    }

    /// True when it runs with `provider` (see [`Component::providers`]).
    pub fn runs_with(&self, provider: ProviderKind) -> bool {
        self.providers.is_empty() || self.providers.contains(&provider)
    }
}

/// The value that stands, in a stack file, for what this build of homelab publishes: as an
/// image, the engine image of this build's release (`ghcr.io/<owner>/homelab:<version>`, see
/// [`crate::model::engine_image::BuildInfo`]); as a version, this build's version.
pub const THIS_BUILD: &str = "@self";

/// The cluster a stack asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Kubernetes minor version the manifests target, e.g. `"1.36"`.
    pub kubernetes: String,
    /// microk8s snap channel, e.g. `1.36/stable`.
    pub channel: String,
    /// Ubuntu image for the VMs, e.g. `"24.04"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The images microk8s starts by itself (its sandbox, CNI and addons' images): `cache`
    /// (the default: `prepare` caches them, `up` side-loads them) or `pull` (left to the
    /// cluster, for VMs that reach their registries anyway).
    #[serde(default, skip_serializing_if = "SystemImages::is_default")]
    pub system_images: SystemImages,
}

/// Where the images microk8s starts by itself come from; see [`ClusterSpec::system_images`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemImages {
    /// `prepare` caches them and `up` side-loads them.
    #[default]
    Cache,
    /// The cluster pulls them from their registries.
    Pull,
}

impl SystemImages {
    fn is_default(&self) -> bool {
        *self == SystemImages::Cache
    }
}

/// A stack file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StackFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    extends: Option<String>,
    #[serde(default)]
    cluster: Option<ClusterSpec>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    components: Vec<Component>,
}

/// A loaded, validated stack with components in dependency order (by wave, then file order).
#[derive(Clone, Debug, Serialize)]
pub struct Stack {
    /// Stack name.
    pub name: String,
    /// One line for people.
    pub description: String,
    /// Where it was loaded from (`embedded:stacks/default.yaml` or a path).
    pub origin: String,
    /// The cluster it asks for.
    pub cluster: ClusterSpec,
    /// Components in dependency order (ties keep the file's order).
    pub components: Vec<Component>,
}

/// A stack that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// `--stack NAME` names no embedded stack and no file.
    #[error("unknown stack `{name}`")]
    UnknownStack {
        /// The name given.
        name: String,
        /// Embedded stack names.
        known: Vec<String>,
    },
    /// The stack file could not be read.
    #[error("could not read stack file `{path}`")]
    Read {
        /// The path.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML.
    #[error("stack `{file}` is not valid YAML at {position}: {message}")]
    Syntax {
        /// Stack file.
        file: String,
        /// Position.
        position: String,
        /// Parser message.
        message: String,
    },
    /// A key the stack format doesn't have.
    #[error("unknown key `{key}` in stack `{file}` at {position}")]
    UnknownKey {
        /// Stack file.
        file: String,
        /// Dotted key.
        key: String,
        /// Position.
        position: String,
        /// Keys accepted there.
        expected: Vec<String>,
    },
    /// A value of the wrong type or a missing field.
    #[error("invalid value for `{key}` in stack `{file}` at {position}: {message}")]
    BadValue {
        /// Stack file.
        file: String,
        /// Dotted key.
        key: String,
        /// Position.
        position: String,
        /// What is wrong.
        message: String,
    },
    /// A component needs one the stack doesn't have.
    #[error("component `{component}` needs `{needed}`, which is not in stack `{stack}`")]
    UnknownNeed {
        /// Stack name.
        stack: String,
        /// The component.
        component: String,
        /// The missing name.
        needed: String,
        /// Names the stack has.
        known: Vec<String>,
    },
    /// The `needs` graph has a cycle.
    #[error("stack `{stack}` has a dependency cycle: {}", .cycle.join(" → "))]
    Cycle {
        /// Stack name.
        stack: String,
        /// The cycle, first name repeated at the end.
        cycle: Vec<String>,
    },
    /// Two components share a name.
    #[error("stack `{stack}` has two components named `{name}`")]
    Duplicate {
        /// Stack name.
        stack: String,
        /// The name.
        name: String,
    },
    /// Something else about one component is wrong.
    #[error("component `{component}` in stack `{stack}`: {message}")]
    Component {
        /// Stack name.
        stack: String,
        /// The component.
        component: String,
        /// What is wrong.
        message: String,
        /// What to do.
        hint: String,
    },
    /// `extends` chains too deep or in a loop.
    #[error("stack `{stack}` extends `{base}`: {message}")]
    Extends {
        /// Stack name.
        stack: String,
        /// Base named.
        base: String,
        /// What is wrong.
        message: String,
    },
}

impl Diagnostic for StackError {
    fn hints(&self) -> Vec<String> {
        match self {
            StackError::UnknownStack { known, .. } => vec![format!(
                "built-in stacks are {}; or pass the path of a stack file",
                list(known)
            )],
            StackError::Read { .. } => Vec::new(),
            StackError::Syntax { .. } => {
                vec!["check the indentation and quoting around that position".into()]
            }
            StackError::UnknownKey { expected, .. } => {
                vec![format!("the keys accepted there are {}", list(expected))]
            }
            StackError::BadValue { .. } => {
                vec!["see `stacks/default.yaml` for a complete example of every key".into()]
            }
            StackError::UnknownNeed { known, .. } => {
                vec![format!("components in this stack: {}", list(known))]
            }
            StackError::Cycle { .. } => {
                vec!["remove one of these `needs` entries so components can start in order".into()]
            }
            StackError::Duplicate { .. } => vec!["give each component a unique `name`".into()],
            StackError::Component { hint, .. } => vec![hint.clone()],
            StackError::Extends { .. } => {
                vec!["`extends` must name a built-in stack or a stack file, without loops".into()]
            }
        }
    }
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names of the stacks compiled into the binary.
pub fn embedded_names() -> Vec<String> {
    assets::under("stacks/")
        .filter_map(|(p, _)| {
            p.strip_prefix("stacks/")
                .and_then(|n| n.strip_suffix(".yaml"))
                .map(str::to_string)
        })
        .collect()
}

/// Load a stack by embedded name or by file path.
pub fn load(name_or_path: &str, cwd: &Path) -> Result<Stack, StackError> {
    load_depth(name_or_path, cwd, 0)
}

/// Whether `stack` names a file (a path or a `.yaml` name) rather than an embedded stack.
pub fn looks_like_path(name_or_path: &str) -> bool {
    name_or_path.contains('/')
        || name_or_path.contains('\\')
        || name_or_path.ends_with(".yaml")
        || name_or_path.ends_with(".yml")
}

fn load_depth(name_or_path: &str, cwd: &Path, depth: usize) -> Result<Stack, StackError> {
    if looks_like_path(name_or_path) {
        let path = cwd.join(name_or_path);
        let text = std::fs::read_to_string(&path).map_err(|source| StackError::Read {
            path: name_or_path.to_string(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(cwd).to_path_buf();
        return parse(
            name_or_path,
            &text,
            &|base| load_depth(base, &base_dir, depth + 1),
            depth,
        );
    }
    let key = format!("stacks/{name_or_path}.yaml");
    let Some(text) = assets::get(&key) else {
        return Err(StackError::UnknownStack {
            name: name_or_path.to_string(),
            known: embedded_names(),
        });
    };
    parse(
        &format!("{name_or_path}.yaml"),
        text,
        &|base| load_depth(base, cwd, depth + 1),
        depth,
    )
}

/// Parse and validate stack text. `file` names it in messages; `resolve_base` loads an
/// `extends` target.
pub fn parse(
    file: &str,
    text: &str,
    resolve_base: &dyn Fn(&str) -> Result<Stack, StackError>,
    depth: usize,
) -> Result<Stack, StackError> {
    let raw: StackFile = yaml::from_str(text).map_err(|e| classify(file, e))?;
    let (cluster, mut components) = match &raw.extends {
        Some(base_name) => {
            if depth > 4 {
                return Err(StackError::Extends {
                    stack: raw.name.clone(),
                    base: base_name.clone(),
                    message: "too many levels of `extends` (a loop?)".into(),
                });
            }
            let base = resolve_base(base_name)?;
            for r in &raw.remove {
                if !base.components.iter().any(|c| &c.name == r) {
                    return Err(StackError::Extends {
                        stack: raw.name.clone(),
                        base: base_name.clone(),
                        message: format!("`remove` names `{r}`, which `{base_name}` does not have"),
                    });
                }
            }
            let mut comps: Vec<Component> = base
                .components
                .into_iter()
                .filter(|c| !raw.remove.contains(&c.name))
                .collect();
            for c in &raw.components {
                match comps.iter_mut().find(|b| b.name == c.name) {
                    Some(slot) => *slot = c.clone(),
                    None => comps.push(c.clone()),
                }
            }
            (raw.cluster.clone().unwrap_or(base.cluster), comps)
        }
        None => {
            let Some(cluster) = raw.cluster.clone() else {
                return Err(StackError::BadValue {
                    file: file.into(),
                    key: "cluster".into(),
                    position: "the top level".into(),
                    message: "missing field `cluster` (a stack without `extends` must say which cluster it targets)".into(),
                });
            };
            (cluster, raw.components.clone())
        }
    };
    if !raw.remove.is_empty() && raw.extends.is_none() {
        return Err(StackError::BadValue {
            file: file.into(),
            key: "remove".into(),
            position: "the top level".into(),
            message: "`remove` only makes sense together with `extends`".into(),
        });
    }
    for c in &mut components {
        resolve_this_build(c);
    }
    validate(&raw.name, &components)?;
    components = order(&raw.name, components)?;
    Ok(Stack {
        name: raw.name,
        description: raw.description,
        origin: file.to_string(),
        cluster,
        components,
    })
}

fn classify(file: &str, e: yaml::YamlError) -> StackError {
    let position = e.position().unwrap_or_else(|| "an unknown position".into());
    match e.problem() {
        yaml::Problem::UnknownKey { key, expected } => StackError::UnknownKey {
            file: file.into(),
            key,
            position,
            expected,
        },
        yaml::Problem::BadValue { key, message } => StackError::BadValue {
            file: file.into(),
            key: key.unwrap_or_else(|| "(top level)".into()),
            position,
            message,
        },
        yaml::Problem::Syntax { message } => StackError::Syntax {
            file: file.into(),
            position,
            message,
        },
    }
}

impl Stack {
    /// The stack as it runs with `provider`: without the components limited to other
    /// providers (see [`Component::providers`]).
    pub fn for_provider(mut self, provider: ProviderKind) -> Stack {
        self.components.retain(|c| c.runs_with(provider));
        self
    }

    /// A component by name.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The template sets its components are rendered from (`templates`, e.g. `argocd`): what
    /// decides which of the lab's stack-specific secrets it needs.
    pub fn template_sets(&self) -> Vec<&str> {
        self.components
            .iter()
            .filter_map(|c| c.source.templates.as_deref())
            .collect()
    }

    /// Wave of each component: 0 without needs, else one more than the deepest need.
    pub fn waves(&self) -> BTreeMap<String, usize> {
        waves_of(&self.components)
    }

    /// The Kubernetes version string the manifests are validated against, e.g. `1.36.0`.
    pub fn kubernetes_version(&self) -> String {
        format!("{}.0", self.cluster.kubernetes)
    }

    /// Every image the stack names, sorted and deduplicated.
    pub fn images(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .components
            .iter()
            .flat_map(|c| c.images.values().cloned())
            .collect();
        set.into_iter().collect()
    }
}

#[cfg(test)]
mod tests;
