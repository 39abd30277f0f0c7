//! A stack's components checked before anything runs (known `needs`, pinned images, templates
//! that exist, sane resources and hostnames), then ordered by their `needs` into waves.

use std::collections::{BTreeMap, BTreeSet};

use super::{Component, StackError, THIS_BUILD};
use crate::model::assets;
use crate::model::settings::ProviderKind;

fn comp_err(stack: &str, c: &Component, message: String, hint: &str) -> StackError {
    StackError::Component {
        stack: stack.into(),
        component: c.name.clone(),
        message,
        hint: hint.into(),
    }
}

pub(super) fn validate(stack: &str, components: &[Component]) -> Result<(), StackError> {
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
        for what in c.source.upstream.iter().flat_map(|u| &u.configures) {
            if !(what.starts_with("ConfigMap/") || what.starts_with("Secret/")) {
                return Err(comp_err(
                    stack,
                    c,
                    format!("`configures` names `{what}`, which is not a ConfigMap or Secret"),
                    "an upstream manifest is configured through its ConfigMaps and Secrets only (`ConfigMap/<name>`, `Secret/<name>`); its workloads stay as upstream ships them",
                ));
            }
            if c.source.templates.is_none() {
                return Err(comp_err(
                    stack,
                    c,
                    format!("`configures` names `{what}` but the component has no templates"),
                    "add `templates: <dir>` with the objects that configure the upstream manifest",
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
pub(super) fn resolve_this_build(c: &mut Component) {
    let build = crate::model::engine_image::BuildInfo::current();
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
pub(super) fn order(stack: &str, components: Vec<Component>) -> Result<Vec<Component>, StackError> {
    let mut out = topological(stack, components)?;
    let waves = waves_of(&out);
    out.sort_by_key(|c| waves[&c.name]);
    Ok(out)
}

pub(super) fn waves_of(ordered: &[Component]) -> BTreeMap<String, usize> {
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
