//! Embeds `stacks/` and `templates/` into the binary so `homelab` works from any directory.
//! Generates `$OUT_DIR/assets.rs`: a sorted list of (relative path, contents) pairs.
//!
//! Also records what this build is, for the engine image it runs in the cluster
//! (`sync::image::BuildInfo`): the image repository its release publishes to (from
//! `HOMELAB_IMAGE_REPOSITORY`, or GitHub Actions' `GITHUB_REPOSITORY_OWNER`/`GITHUB_REPOSITORY`)
//! and whether it is that release: `HOMELAB_RELEASE_BUILD=1|0` when set; else built on GitHub
//! Actions for the tag `v<version>`; else a git checkout at the tag `v<version>` without local
//! changes to tracked files; else, without git (a source archive of a release), released.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut files = Vec::new();
    for top in ["stacks", "templates"] {
        println!("cargo:rerun-if-changed={top}");
        collect(&root, &root.join(top), &mut files);
    }
    files.sort();
    let mut code = String::from(
        "/// Embedded (path, contents) pairs, sorted by path.\npub static FILES: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        let rel = f.to_string_lossy().replace('\\', "/");
        let abs = root.join(f);
        writeln!(
            code,
            "    ({rel:?}, include_str!({:?})),",
            abs.to_string_lossy()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("assets.rs");
    std::fs::write(out, code).unwrap();
    build_info(&root);
}

/// `git -C root ARGS`, trimmed stdout when it succeeds.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn build_info(root: &Path) {
    let env = |k: &str| {
        println!("cargo:rerun-if-env-changed={k}");
        std::env::var(k).unwrap_or_default()
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap();
    let tag = format!("v{version}");
    for (key, from) in [
        ("HOMELAB_BUILD_IMAGE_REPOSITORY", "HOMELAB_IMAGE_REPOSITORY"),
        (
            "HOMELAB_BUILD_GITHUB_REPOSITORY_OWNER",
            "GITHUB_REPOSITORY_OWNER",
        ),
        ("HOMELAB_BUILD_GITHUB_REPOSITORY", "GITHUB_REPOSITORY"),
    ] {
        println!("cargo:rustc-env={key}={}", env(from));
    }
    let forced = env("HOMELAB_RELEASE_BUILD");
    let on_tag = env("GITHUB_REF_TYPE") == "tag" && env("GITHUB_REF_NAME") == tag;
    let (released, describe) = if matches!(forced.as_str(), "1" | "true") {
        (true, format!("{tag} (HOMELAB_RELEASE_BUILD)"))
    } else if matches!(forced.as_str(), "0" | "false") {
        (
            false,
            "a development build (HOMELAB_RELEASE_BUILD=0)".to_string(),
        )
    } else if on_tag {
        (true, tag.clone())
    } else if git(root, &["rev-parse", "--git-dir"]).is_some() {
        // Rebuild when the commit, the tags or the tracked files change.
        for p in ["HEAD", "index", "packed-refs", "refs/tags"] {
            if let Some(path) = git(root, &["rev-parse", "--git-path", p]) {
                let path = root.join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        for p in ["src", "Cargo.toml", "Cargo.lock"] {
            println!("cargo:rerun-if-changed={p}");
        }
        let describe = git(
            root,
            &["describe", "--tags", "--always", "--dirty", "--match", "v*"],
        )
        .unwrap_or_else(|| "an unknown commit".into());
        (describe == tag, describe)
    } else {
        (true, format!("{tag} (source archive)"))
    };
    println!("cargo:rustc-env=HOMELAB_BUILD_RELEASED={released}");
    println!("cargo:rustc-env=HOMELAB_BUILD_DESCRIBE={describe}");
}
