//! Image references as kaniko reads them, for the lab's own registry to stand in for the one a
//! Dockerfile's `FROM` names.
//!
//! kaniko (osscontainertools/kaniko v1.28.3) parses references with go-containerregistry
//! v0.21.9 (`vendor/github.com/google/go-containerregistry/pkg/name/repository.go`,
//! `registry.go`): the part before the first `/` is the registry when it is `localhost` or holds
//! a `.` or `:`, otherwise the registry is Docker Hub, spelled `index.docker.io` (`docker.io` is
//! rewritten to it); a Docker Hub name without a `/` gets the `library/` namespace. Its
//! `--registry-map=<registry>=<host>[/<prefix>]` (`pkg/image/remote/remote.go`
//! `RetrieveRemoteImage`) looks a base image of `<registry>` up as
//! `<host>/<prefix>/<repository>` first and falls back to `<registry>` when that fails.
//!
//! Architecture invariant: pure string functions; the wiring pushes a cached base image to
//! exactly the name [`mapped`] gives, and the pipeline's `--registry-map` is rendered with
//! [`registry_str`], so the two cannot disagree.

/// go-containerregistry's `DefaultRegistry`.
pub const DOCKER_HUB: &str = "index.docker.io";

/// `(registry, repository, tag-or-digest suffix)` of a reference, the suffix with its `:` or
/// `@` (empty when the reference has none).
fn split(reference: &str) -> (String, String, String) {
    let (name, suffix) = match reference.find('@') {
        Some(at) => (&reference[..at], &reference[at..]),
        None => match reference.rfind(':') {
            Some(colon) if !reference[colon..].contains('/') => {
                (&reference[..colon], &reference[colon..])
            }
            _ => (reference, ""),
        },
    };
    let (registry, repo) = match name.split_once('/') {
        Some((first, rest)) if first == "localhost" || first.contains(['.', ':']) => {
            (first.to_string(), rest.to_string())
        }
        _ => (String::new(), name.to_string()),
    };
    let registry = if registry.is_empty() || registry == "docker.io" {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    let repo = if registry == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    (registry, repo, suffix.to_string())
}

/// The registry kaniko looks `reference` up in (`Registry.RegistryStr`): the key of its
/// `--registry-map`.
pub fn registry_str(reference: &str) -> String {
    split(reference).0
}

/// The repository within that registry (`Repository.RepositoryStr`, `library/` added).
pub fn repository_str(reference: &str) -> String {
    split(reference).1
}

/// Where kaniko looks `reference` up under `--registry-map=<its registry>=<mapping>`
/// (`<host>[/<prefix>]`): `<host>/<prefix>/<repository><tag or digest>`.
pub fn mapped(reference: &str, mapping: &str) -> String {
    let (_, repo, suffix) = split(reference);
    let (host, prefix) = mapping.split_once('/').unwrap_or((mapping, ""));
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        format!("{host}/{repo}{suffix}")
    } else {
        format!("{host}/{prefix}/{repo}{suffix}")
    }
}

/// The images a Dockerfile's stages start `FROM`: not `scratch`, not an earlier stage, not a
/// name built from an `ARG` (it is only known at build time).
pub fn dockerfile_bases(text: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let Some(image) = rest.first() else { continue };
        if let [_, as_kw, name] = rest.as_slice()
            && as_kw.eq_ignore_ascii_case("AS")
        {
            stages.push(name.to_ascii_lowercase());
        }
        let known_stage = stages[..stages.len().saturating_sub(1)]
            .iter()
            .any(|s| s == &image.to_ascii_lowercase());
        if image.eq_ignore_ascii_case("scratch") || image.contains('$') || known_stage {
            continue;
        }
        if !bases.iter().any(|b| b == image) {
            bases.push(image.to_string());
        }
    }
    bases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_as_go_containerregistry_does() {
        let r = "nginxinc/nginx-unprivileged:1.29.3-alpine";
        assert_eq!(registry_str(r), "index.docker.io");
        assert_eq!(repository_str(r), "nginxinc/nginx-unprivileged");
        assert_eq!(registry_str("docker.io/library/nginx:1"), "index.docker.io");
        assert_eq!(repository_str("nginx:1"), "library/nginx");
        assert_eq!(registry_str("ghcr.io/a/b:1"), "ghcr.io");
        assert_eq!(repository_str("ghcr.io/a/b:1"), "a/b");
        assert_eq!(registry_str("localhost/a:1"), "localhost");
        assert_eq!(registry_str("registry:5000/a"), "registry:5000");
        assert_eq!(repository_str("registry:5000/a"), "a");
    }

    #[test]
    fn a_mapped_base_keeps_its_repository_under_the_prefix() {
        assert_eq!(
            mapped("nginxinc/nginx-unprivileged:1.29.3-alpine", "gitea.x/lab"),
            "gitea.x/lab/nginxinc/nginx-unprivileged:1.29.3-alpine"
        );
        assert_eq!(
            mapped("nginx@sha256:ab", "gitea.x"),
            "gitea.x/library/nginx@sha256:ab"
        );
        assert_eq!(mapped("registry:5000/a", "m.x/p/"), "m.x/p/a");
    }

    #[test]
    fn dockerfile_bases_skip_scratch_stages_and_args() {
        let text = "ARG V=1\nFROM --platform=$BUILDPLATFORM golang:1.25 AS build\nRUN x\n\
                    FROM build AS again\nFROM scratch\nFROM nginx:$V\nfrom alpine:3.22\n";
        assert_eq!(dockerfile_bases(text), vec!["golang:1.25", "alpine:3.22"]);
    }
}
