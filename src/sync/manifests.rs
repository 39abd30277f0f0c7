//! Reading the desired state: plain YAML/JSON manifests from a checked-out directory, the way an
//! Argo CD directory-type Application reads them (`.yaml`, `.yml`, `.json`; `directory.recurse`;
//! `directory.include`/`exclude` globs; `kind: List` expanded).
//!
//! Place in the data flow: checkout (from [`super::source`]) → [`read`] → desired objects, each
//! remembering the file and line it came from, so every later message can name the file.
//!
//! Architecture invariant: reading is all-or-nothing. One bad file fails the whole read with a
//! message naming it, because acting on a partial render would prune what the bad file holds.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::app::Source;
use super::glob::Glob;
use crate::edges::error::Diagnostic;
use crate::model::kinds::ObjectRef;

/// One desired object and where it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Path relative to the Application's `path`, `/`-separated.
    pub file: String,
    /// 1-based line the document starts on.
    pub line: usize,
    /// The object.
    pub object: Value,
}

impl Manifest {
    /// `file:line`, for messages.
    pub fn origin(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Why the manifests could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// spec.source.path is not in the checkout.
    #[error("path `{path}` does not exist in the repository")]
    PathMissing {
        /// The path.
        path: String,
    },
    /// spec.source.path leaves the checkout.
    #[error("path `{path}` points outside the repository")]
    PathEscapes {
        /// The path.
        path: String,
    },
    /// A file is not valid YAML/JSON.
    #[error("`{file}` line {line}: invalid YAML: {message}")]
    Yaml {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// A document is not a Kubernetes object.
    #[error("`{file}` line {line}: {problem}")]
    NotAnObject {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// What is missing.
        problem: String,
    },
    /// A kind the cluster does not serve.
    #[error(
        "`{file}` line {line}: unknown kind `{kind}` (apiVersion `{api_version}`) for the cluster"
    )]
    UnknownKind {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// Kind.
        kind: String,
        /// apiVersion.
        api_version: String,
    },
    /// A sync-wave annotation that is not an integer.
    #[error("`{file}` line {line}: sync wave `{value}` of {object} is not an integer")]
    BadWave {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// The object.
        object: String,
        /// The value.
        value: String,
    },
    /// A file or directory could not be read.
    #[error("read `{file}`: {message}")]
    Io {
        /// File.
        file: String,
        /// OS error.
        message: String,
    },
}

impl Diagnostic for ManifestError {
    fn hints(&self) -> Vec<String> {
        match self {
            ManifestError::Yaml { .. } | ManifestError::NotAnObject { .. } => vec![
                "fix the file in the GitOps repository and push; nothing is pruned until it reads cleanly".into(),
            ],
            ManifestError::UnknownKind { .. } => vec![
                "install the CRD first (in an earlier sync wave or another Application), or fix the apiVersion/kind".into(),
            ],
            ManifestError::PathMissing { .. } => {
                vec!["check `spec.source.path` and `spec.source.targetRevision`".into()]
            }
            _ => Vec::new(),
        }
    }
}

/// Read every manifest under `checkout`/`source.path`, sorted by file then position.
pub fn read(checkout: &Path, source: &Source) -> Result<Vec<Manifest>, ManifestError> {
    let rel = source.path.trim_matches('/');
    if Path::new(rel)
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
    {
        return Err(ManifestError::PathEscapes {
            path: source.path.clone(),
        });
    }
    let root = if rel.is_empty() || rel == "." {
        checkout.to_path_buf()
    } else {
        checkout.join(rel)
    };
    if !root.is_dir() {
        return Err(ManifestError::PathMissing {
            path: source.path.clone(),
        });
    }
    let include = source.include.as_deref().map(Glob::new).transpose();
    let exclude = source.exclude.as_deref().map(Glob::new).transpose();
    // Patterns were validated when the Application was parsed; a bad one here matches nothing.
    let include = include.ok().flatten();
    let exclude = exclude.ok().flatten();

    let mut files = Vec::new();
    collect(&root, &root, source.recurse, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    for rel in files {
        if let Some(g) = &exclude
            && g.matches(&rel)
        {
            continue;
        }
        if let Some(g) = &include
            && !g.matches(&rel)
        {
            continue;
        }
        let path = root.join(&rel);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError::Io {
            file: rel.clone(),
            message: e.to_string(),
        })?;
        parse_file(&rel, &text, &mut out)?;
    }
    Ok(out)
}

/// Parse one file's documents into `out`.
pub fn parse_file(file: &str, text: &str, out: &mut Vec<Manifest>) -> Result<(), ManifestError> {
    let docs = crate::edges::yaml::documents(text).map_err(|e| ManifestError::Yaml {
        file: file.to_string(),
        line: e.line.unwrap_or(1),
        message: e.message,
    })?;
    for (line, doc) in docs {
        push_object(file, line, doc, out)?;
    }
    Ok(())
}

fn push_object(
    file: &str,
    line: usize,
    doc: Value,
    out: &mut Vec<Manifest>,
) -> Result<(), ManifestError> {
    let bad = |problem: &str| ManifestError::NotAnObject {
        file: file.to_string(),
        line,
        problem: problem.to_string(),
    };
    if !doc.is_object() {
        return Err(bad("not a Kubernetes object (expected a mapping)"));
    }
    let kind = doc["kind"]
        .as_str()
        .ok_or_else(|| bad("`kind` is missing"))?;
    if doc["apiVersion"].as_str().is_none_or(str::is_empty) {
        return Err(bad("`apiVersion` is missing"));
    }
    if kind == "List" || (kind.ends_with("List") && doc["items"].is_array()) {
        for item in doc["items"].as_array().cloned().unwrap_or_default() {
            push_object(file, line, item, out)?;
        }
        return Ok(());
    }
    if doc["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        return Err(bad(&format!(
            "`metadata.name` is missing in a `{kind}` (generateName is not supported)"
        )));
    }
    if let Err(value) = super::tracking::sync_wave(&doc) {
        return Err(ManifestError::BadWave {
            file: file.to_string(),
            line,
            object: ObjectRef::of(&doc)
                .map(|r| r.to_string())
                .unwrap_or_default(),
            value,
        });
    }
    out.push(Manifest {
        file: file.to_string(),
        line,
        object: doc,
    });
    Ok(())
}

fn collect(
    root: &Path,
    dir: &Path,
    recurse: bool,
    out: &mut Vec<String>,
) -> Result<(), ManifestError> {
    let io = |p: &Path, e: std::io::Error| ManifestError::Io {
        file: rel_of(root, p),
        message: e.to_string(),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // `.git`, editor droppings and other hidden entries are never manifests.
        if name.starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|e| io(&path, e))?;
        if entry.file_type().map_err(|e| io(&path, e))?.is_symlink() {
            // A symlink may not lead out of the repository (a manifest could otherwise read
            // any file on the engine's disk).
            let target = std::fs::canonicalize(&path).map_err(|e| io(&path, e))?;
            let croot = std::fs::canonicalize(root).map_err(|e| io(root, e))?;
            if !target.starts_with(&croot) {
                return Err(ManifestError::Io {
                    file: rel_of(root, &path),
                    message: "symlink points outside the repository".into(),
                });
            }
        }
        if meta.is_dir() {
            if recurse {
                collect(root, &path, recurse, out)?;
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(rel_of(root, &path));
        }
    }
    Ok(())
}

fn rel_of(root: &Path, p: &Path) -> String {
    let rel: PathBuf = p.strip_prefix(root).unwrap_or(p).to_path_buf();
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Fail on the first object whose kind `known(apiVersion, kind)` rejects; kinds defined by a
/// CustomResourceDefinition in the same set count as known.
pub fn check_kinds(
    manifests: &[Manifest],
    known: impl Fn(&str, &str) -> bool,
) -> Result<(), ManifestError> {
    let defined: Vec<(String, String)> = manifests
        .iter()
        .filter(|m| m.object["kind"] == "CustomResourceDefinition")
        .flat_map(|m| {
            let spec = &m.object["spec"];
            let group = spec["group"].as_str().unwrap_or_default().to_string();
            let kind = spec["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            spec["versions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |v| {
                    Some((format!("{group}/{}", v["name"].as_str()?), kind.clone()))
                })
        })
        .collect();
    for m in manifests {
        let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
        let kind = m.object["kind"].as_str().unwrap_or_default();
        if known(api_version, kind) || defined.iter().any(|(a, k)| a == api_version && k == kind) {
            continue;
        }
        return Err(ManifestError::UnknownKind {
            file: m.file.clone(),
            line: m.line,
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &str, recurse: bool) -> Source {
        Source {
            repo_url: "file:///r".into(),
            path: path.into(),
            target_revision: "HEAD".into(),
            recurse,
            include: None,
            exclude: None,
        }
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: NAME\n";

    #[test]
    fn reads_yaml_yml_json_and_lists_and_skips_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "app/a.yaml",
            &format!(
                "{}---\n{}",
                CM.replace("NAME", "a1"),
                CM.replace("NAME", "a2")
            ),
        );
        write(r, "app/b.yml", &CM.replace("NAME", "b"));
        write(
            r,
            "app/c.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#,
        );
        write(r, "app/README.md", "# not a manifest");
        write(r, "app/.hidden.yaml", "{{ not yaml");
        write(
            r,
            "app/list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: l1}\n",
        );
        write(r, "app/sub/d.yaml", &CM.replace("NAME", "d"));
        let names = |ms: Vec<Manifest>| {
            ms.iter()
                .map(|m| {
                    format!(
                        "{}:{}",
                        m.file,
                        m.object["metadata"]["name"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(read(r, &src("app", false)).unwrap()),
            vec![
                "a.yaml:a1",
                "a.yaml:a2",
                "b.yml:b",
                "c.json:c",
                "list.yaml:l1"
            ]
        );
        let all = read(r, &src("/app/", true)).unwrap();
        assert_eq!(all.last().unwrap().file, "sub/d.yaml");
        assert_eq!(
            all[1].line, 6,
            "the second document starts after `---` on line 5"
        );
    }

    #[test]
    fn include_and_exclude_globs() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "a.yaml", &CM.replace("NAME", "a"));
        write(r, "config.yaml", &CM.replace("NAME", "config"));
        write(r, "sub/b.yaml", &CM.replace("NAME", "b"));
        write(
            r,
            "sub/c.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#,
        );
        let mut s = src("", true);
        s.include = Some("*.yaml".into());
        s.exclude = Some("{config.yaml,nothing/*}".into());
        let files: Vec<_> = read(r, &s).unwrap().into_iter().map(|m| m.file).collect();
        assert_eq!(files, vec!["a.yaml", "sub/b.yaml"]);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "good.yaml", &CM.replace("NAME", "ok"));
        write(
            r,
            "bad.yaml",
            &format!("{}---\nkind: [unclosed\n", CM.replace("NAME", "x")),
        );
        let err = read(r, &src("", false)).unwrap_err();
        match &err {
            ManifestError::Yaml { file, line, .. } => {
                assert_eq!(file, "bad.yaml");
                // The parser notices the unclosed `[` where the document ends.
                assert_eq!(*line, 7);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("`bad.yaml` line 7: invalid YAML"),
            "{err}"
        );

        write(r, "bad.yaml", "apiVersion: v1\nmetadata: {name: x}\n");
        assert_eq!(
            read(r, &src("", false)).unwrap_err().to_string(),
            "`bad.yaml` line 1: `kind` is missing"
        );
        write(
            r,
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  annotations: {argocd.argoproj.io/sync-wave: later}\n",
        );
        assert_eq!(
            read(r, &src("", false)).unwrap_err().to_string(),
            "`bad.yaml` line 1: sync wave `later` of `ConfigMap/x` is not an integer"
        );
        assert_eq!(
            read(r, &src("missing", false)).unwrap_err(),
            ManifestError::PathMissing {
                path: "missing".into()
            }
        );
        assert_eq!(
            read(r, &src("../etc", false)).unwrap_err(),
            ManifestError::PathEscapes {
                path: "../etc".into()
            }
        );
    }

    #[test]
    fn symlinks_out_of_the_repository_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.yaml", &CM.replace("NAME", "s"));
        std::os::unix::fs::symlink(
            outside.path().join("secret.yaml"),
            t.path().join("link.yaml"),
        )
        .unwrap();
        let err = read(t.path(), &src("", false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "read `link.yaml`: symlink points outside the repository"
        );
    }

    #[test]
    fn unknown_kinds_name_the_file_and_crds_define_kinds() {
        let mut ms = Vec::new();
        parse_file("crd.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  names: {kind: Widget}\n  versions: [{name: v1}]\n", &mut ms).unwrap();
        parse_file(
            "w.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
            &mut ms,
        )
        .unwrap();
        let builtin = |a: &str, k: &str| {
            matches!(
                (a, k),
                ("v1", "ConfigMap") | ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
            )
        };
        check_kinds(&ms, builtin).unwrap();
        parse_file(
            "typo.yaml",
            "apiVersion: apps/v1\nkind: Deploymnt\nmetadata: {name: w}\n",
            &mut ms,
        )
        .unwrap();
        assert_eq!(
            check_kinds(&ms, builtin).unwrap_err().to_string(),
            "`typo.yaml` line 1: unknown kind `Deploymnt` (apiVersion `apps/v1`) for the cluster"
        );
    }
}
