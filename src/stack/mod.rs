//! Stacks as data: which components a lab runs, their pinned versions, sources, dependencies,
//! resources and hostnames (`stacks/*.yaml`).
//!
//! Architecture invariant: pure. Loading takes the text of the stack file (and of any stack it
//! `extends`); validation rejects unknown keys, unknown `needs`, cycles, unpinned images and
//! templates that don't exist, before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::assets;
use crate::error::Diagnostic;
use crate::settings::ProviderKind;
use crate::yaml;

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
/// [`crate::sync::image::BuildInfo`]); as a version, this build's version.
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

fn load_depth(name_or_path: &str, cwd: &Path, depth: usize) -> Result<Stack, StackError> {
    let looks_like_path = name_or_path.contains('/')
        || name_or_path.contains('\\')
        || name_or_path.ends_with(".yaml")
        || name_or_path.ends_with(".yml");
    if looks_like_path {
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

fn comp_err(stack: &str, c: &Component, message: String, hint: &str) -> StackError {
    StackError::Component {
        stack: stack.into(),
        component: c.name.clone(),
        message,
        hint: hint.into(),
    }
}

fn validate(stack: &str, components: &[Component]) -> Result<(), StackError> {
    let mut seen = BTreeSet::new();
    for c in components {
        if !seen.insert(c.name.as_str()) {
            return Err(StackError::Duplicate {
                stack: stack.into(),
                name: c.name.clone(),
            });
        }
    }
    let names: Vec<String> = components.iter().map(|c| c.name.clone()).collect();
    for c in components {
        for n in &c.needs {
            if !seen.contains(n.as_str()) {
                return Err(StackError::UnknownNeed {
                    stack: stack.into(),
                    component: c.name.clone(),
                    needed: n.clone(),
                    known: names.clone(),
                });
            }
            // A need that some provider leaves out would leave this component waiting forever.
            let needed = components.iter().find(|d| &d.name == n).expect("seen");
            if let Some(p) = [ProviderKind::Multipass, ProviderKind::Existing]
                .into_iter()
                .find(|p| c.runs_with(*p) && !needed.runs_with(*p))
            {
                return Err(comp_err(
                    stack,
                    c,
                    format!("it needs `{n}`, which does not run with provider `{p}`"),
                    "limit it to the same `providers`, or drop that need",
                ));
            }
        }
        if c.adopts && (c.source.templates.is_none() || c.source.upstream.is_some()) {
            return Err(comp_err(
                stack,
                c,
                "`adopts` takes over objects that exist already; it needs our own templates".into(),
                "render the adopted objects from `source.templates` only",
            ));
        }
        let s = &c.source;
        let count =
            s.templates.is_some() as u8 + s.upstream.is_some() as u8 + s.addon.is_some() as u8;
        if count == 0 {
            return Err(comp_err(
                stack,
                c,
                "`source` names nothing".into(),
                "set `source.templates`, `source.upstream.url` or `source.addon`",
            ));
        }
        if s.addon.is_some() && count > 1 {
            return Err(comp_err(
                stack,
                c,
                "a microk8s addon cannot also have templates or an upstream manifest".into(),
                "split it into two components, one needing the other",
            ));
        }
        if let Some(dir) = &s.templates
            && assets::under(&format!("templates/{dir}/")).next().is_none()
        {
            return Err(comp_err(
                stack,
                c,
                format!("templates `{dir}` do not exist"),
                "templates live in `templates/<dir>/` and are compiled into the binary",
            ));
        }
        for (repo, dir) in &c.repos {
            if assets::under(&format!("templates/{dir}/")).next().is_none() {
                return Err(comp_err(
                    stack,
                    c,
                    format!("the templates `{dir}` for repository `{repo}` do not exist"),
                    "repository templates live in `templates/<dir>/`",
                ));
            }
        }
        if let Some(up) = &s.upstream {
            if !up.url.starts_with("https://") {
                return Err(comp_err(
                    stack,
                    c,
                    format!("upstream URL `{}` is not https", up.url),
                    "use the project's https release URL",
                ));
            }
            if up.url.contains("/latest/")
                || up.url.contains("/master/")
                || up.url.contains("/main/")
            {
                return Err(comp_err(
                    stack,
                    c,
                    format!("upstream URL `{}` is not pinned to a release", up.url),
                    "use a URL that names an exact version, e.g. `…/releases/download/v1.21.1/…`",
                ));
            }
        }
        for (role, image) in &c.images {
            if let Err(why) = check_image_pinned(image) {
                return Err(comp_err(
                    stack,
                    c,
                    format!("image `{image}` ({role}) {why}"),
                    "pin every image to a version tag or a digest, never `latest`",
                ));
            }
        }
        if let Some(h) = &c.hostname
            && (h.is_empty()
                || !h
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'))
        {
            return Err(comp_err(
                stack,
                c,
                format!("hostname `{h}` is not a DNS label"),
                "use lowercase letters, digits and hyphens; the domain is added for you",
            ));
        }
    }
    Ok(())
}

/// Replace [`THIS_BUILD`] in a component's images and version by what this build publishes.
fn resolve_this_build(c: &mut Component) {
    let build = crate::sync::image::BuildInfo::current();
    for image in c.images.values_mut() {
        if image == THIS_BUILD {
            *image = build.published_image();
        }
    }
    if c.version.as_deref() == Some(THIS_BUILD) {
        c.version = Some(build.version.clone());
    }
}

/// `Ok` when `image` names a tag other than `latest`, or a digest.
pub fn check_image_pinned(image: &str) -> Result<(), &'static str> {
    if image.contains("@sha256:") {
        return Ok(());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => Err("has no tag"),
        Some((_, "latest")) => Err("uses the `latest` tag"),
        Some((_, "")) => Err("has an empty tag"),
        Some(_) => Ok(()),
    }
}

/// Components by wave (see [`Stack::waves`]); within a wave, the file's order.
fn order(stack: &str, components: Vec<Component>) -> Result<Vec<Component>, StackError> {
    let mut out = topological(stack, components)?;
    let waves = waves_of(&out);
    out.sort_by_key(|c| waves[&c.name]);
    Ok(out)
}

fn waves_of(ordered: &[Component]) -> BTreeMap<String, usize> {
    let mut waves: BTreeMap<String, usize> = BTreeMap::new();
    for c in ordered {
        let w = c
            .needs
            .iter()
            .map(|n| waves.get(n).copied().unwrap_or(0) + 1)
            .max()
            .unwrap_or(0);
        waves.insert(c.name.clone(), w);
    }
    waves
}

/// Topological order; among components ready at the same time, the file's order wins.
fn topological(stack: &str, components: Vec<Component>) -> Result<Vec<Component>, StackError> {
    let mut remaining: Vec<Component> = components;
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let pos = remaining
            .iter()
            .position(|c| c.needs.iter().all(|n| done.contains(n)));
        match pos {
            Some(i) => {
                let c = remaining.remove(i);
                done.insert(c.name.clone());
                out.push(c);
            }
            None => {
                return Err(StackError::Cycle {
                    stack: stack.into(),
                    cycle: find_cycle(&remaining),
                });
            }
        }
    }
    Ok(out)
}

/// A cycle among components none of which could be ordered.
fn find_cycle(stuck: &[Component]) -> Vec<String> {
    let by_name: BTreeMap<&str, &Component> = stuck.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut path: Vec<String> = Vec::new();
    let mut cur = stuck[0].name.as_str();
    loop {
        if let Some(pos) = path.iter().position(|p| p == cur) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(cur.to_string());
            return cycle;
        }
        path.push(cur.to_string());
        let c = by_name[cur];
        // Follow a dependency that is itself stuck; one always exists.
        cur = c
            .needs
            .iter()
            .find(|n| by_name.contains_key(n.as_str()))
            .map(String::as_str)
            .expect("a stuck component needs another stuck component");
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
