//! Unit tests of the engine image: the archive's format and determinism, where the image comes
//! from, and building it from this test binary.

use super::*;
use crate::edges::process::Cmd;
use crate::model::settings::ProviderKind;
use serde_json::json;
use std::path::Path;

/// Read a tar back: (name, typeflag, mode, data).
fn untar(bytes: &[u8]) -> Vec<(String, u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut o = 0;
    while o + 512 <= bytes.len() {
        let h = &bytes[o..o + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let sum: u32 = h[..148]
            .iter()
            .chain([b' '; 8].iter())
            .chain(h[156..].iter())
            .map(|b| u32::from(*b))
            .sum();
        let field = |a: usize, l: usize| {
            std::str::from_utf8(&h[a..a + l])
                .unwrap()
                .trim_matches(|c: char| c == '\0' || c == ' ')
                .to_string()
        };
        assert_eq!(
            u32::from_str_radix(&field(148, 8), 8).unwrap(),
            sum,
            "checksum"
        );
        let name = field(0, 100);
        let prefix = field(345, 155);
        let name = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let size = usize::from_str_radix(&field(124, 12), 8).unwrap();
        let mode = u32::from_str_radix(&field(100, 8), 8).unwrap();
        let data = bytes[o + 512..o + 512 + size].to_vec();
        out.push((name, h[156], mode, data));
        o += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn spec() -> ImageSpec {
    ImageSpec {
        reference: "ghcr.io/homelab-dev/homelab:0.1.0".into(),
        architecture: "amd64".into(),
        entrypoint: vec!["/usr/local/bin/homelab".into()],
        env: vec!["HOME=/tmp".into()],
        user: "65532".into(),
        files: vec![
            ImageFile {
                path: "/usr/local/bin/homelab".into(),
                contents: b"\x7fELF-not-really".to_vec(),
                mode: 0o755,
            },
            ImageFile {
                path: "/etc/ssl/certs/ca-certificates.crt".into(),
                contents: b"PEM".to_vec(),
                mode: 0o644,
            },
            ImageFile {
                path: format!("/usr/lib/{}/libvery-long-name.so", "x".repeat(120)),
                contents: vec![7; 1000],
                mode: 0o755,
            },
        ],
    }
}

#[test]
fn the_archive_is_a_valid_oci_layout() {
    let mut out = Vec::new();
    let info = write_archive(&spec(), &mut out).unwrap();
    let entries = untar(&out);
    let get = |n: &str| {
        entries
            .iter()
            .find(|e| e.0 == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .3
            .clone()
    };
    let layout: serde_json::Value = serde_json::from_slice(&get("oci-layout")).unwrap();
    assert_eq!(layout, json!({"imageLayoutVersion": "1.0.0"}));
    let index: serde_json::Value = serde_json::from_slice(&get("index.json")).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let m = &index["manifests"][0];
    assert_eq!(m["digest"], info.manifest_digest.as_str());
    assert_eq!(
        m["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );
    assert_eq!(
        m["annotations"]["io.containerd.image.name"],
        "ghcr.io/homelab-dev/homelab:0.1.0"
    );
    assert_eq!(
        m["platform"],
        json!({"architecture": "amd64", "os": "linux"})
    );
    // Every descriptor points at a blob with that digest and size.
    let blob = |d: &str| get(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:")));
    let manifest_bytes = blob(&info.manifest_digest);
    assert_eq!(digest(&manifest_bytes), info.manifest_digest);
    assert_eq!(m["size"], manifest_bytes.len());
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config_bytes = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(
        digest(&config_bytes),
        manifest["config"]["digest"].as_str().unwrap()
    );
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let layer_desc = &manifest["layers"][0];
    assert_eq!(
        layer_desc["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let layer = blob(layer_desc["digest"].as_str().unwrap());
    assert_eq!(layer_desc["size"], layer.len());
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], digest(&layer).as_str());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/homelab");
    assert_eq!(config["config"]["User"], "65532");
    // The layer: parent directories first, files with their modes, long names intact.
    let files = untar(&layer);
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert!(
        names.iter().position(|n| *n == "usr/").unwrap()
            < names
                .iter()
                .position(|n| *n == "usr/local/bin/homelab")
                .unwrap()
    );
    let bin = files
        .iter()
        .find(|f| f.0 == "usr/local/bin/homelab")
        .unwrap();
    assert_eq!(
        (bin.1, bin.2, bin.3.as_slice()),
        (b'0', 0o755, &b"\x7fELF-not-really"[..])
    );
    let long = files
        .iter()
        .find(|f| f.0.ends_with("libvery-long-name.so"))
        .unwrap();
    assert_eq!(
        long.0,
        format!("usr/lib/{}/libvery-long-name.so", "x".repeat(120))
    );
    assert_eq!(long.3.len(), 1000);
}

#[test]
fn the_archive_is_deterministic() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let ia = write_archive(&spec(), &mut a).unwrap();
    let ib = write_archive(&spec(), &mut b).unwrap();
    assert_eq!(ia, ib);
    assert_eq!(a, b);
}

#[test]
fn system_tar_reads_it() {
    let mut out = Vec::new();
    write_archive(&spec(), &mut out).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("image.tar");
    std::fs::write(&p, &out).unwrap();
    let listed = Cmd::new("tar", "list the archive")
        .arg("-tf")
        .arg(&p)
        .run()
        .unwrap();
    assert!(
        listed.stdout.contains("index.json") && listed.stdout.contains("oci-layout"),
        "{}",
        listed.stdout
    );
}

fn build(released: bool) -> BuildInfo {
    BuildInfo {
        version: "1.2.3".into(),
        repository: image_repository("", "Acme-Labs", "Acme-Labs/homelab"),
        released,
        describe: if released {
            "v1.2.3".into()
        } else {
            "v1.2.3-4-gabc1234-dirty".into()
        },
    }
}

fn host(os: &str, arch: &str) -> Host {
    Host {
        os: os.into(),
        arch: arch.into(),
    }
}

/// Issue 12: a build names the image its release publishes — under the repository owner,
/// lowercased, tagged with the version — as `.github/workflows/release-image.yml` pushes it.
#[test]
fn a_release_build_names_the_image_its_release_publishes() {
    assert_eq!(
        build(true).published_image(),
        "ghcr.io/acme-labs/homelab:1.2.3"
    );
    assert_eq!(
        image_repository("", "", "Someone/fork"),
        "ghcr.io/someone/homelab"
    );
    assert_eq!(
        image_repository("Registry.Example/Team/Homelab", "acme", ""),
        "registry.example/team/homelab"
    );
    assert_eq!(image_repository("", "", ""), "ghcr.io/homelab-dev/homelab");
    // The workflow this mirrors.
    let workflow = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release-image.yml"),
    )
    .unwrap();
    assert!(workflow.contains("IMAGE: ghcr.io/${{ github.repository_owner }}/homelab"));
    assert!(
        workflow.contains(r#"echo "IMAGE=${IMAGE,,}""#),
        "lowercased"
    );
    assert!(workflow.contains("type=semver,pattern={{version}}"));
    assert!(workflow.contains(r#"tags: ["v*"]"#));
    // A released build on a host that cannot side-load pulls it.
    let image = build(true).published_image();
    assert_eq!(
        engine_image_source(
            &image,
            false,
            ProviderKind::Multipass,
            &host("macos", "aarch64"),
            &build(true)
        ),
        EngineImageSource::Pull {
            image: image.clone(),
            because: "the image of release v1.2.3".into()
        }
    );
    assert!(
        engine_image_source(
            &image,
            false,
            ProviderKind::Existing,
            &host("linux", "x86_64"),
            &build(true)
        )
        .check()
        .is_ok()
    );
}

/// Issue 12: an unreleased build where nothing can be side-loaded has no image: refused,
/// with what to do.
#[test]
fn an_unreleased_build_that_cannot_side_load_is_refused_with_hints() {
    let image = build(false).published_image();
    for (provider, h, why) in [
        (
            ProviderKind::Multipass,
            host("macos", "aarch64"),
            "built for macos",
        ),
        (
            ProviderKind::Multipass,
            host("windows", "x86_64"),
            "built for windows",
        ),
        (ProviderKind::Multipass, host("linux", "riscv64"), "riscv64"),
        (
            ProviderKind::Existing,
            host("linux", "x86_64"),
            "no VMs of homelab's",
        ),
    ] {
        let source = engine_image_source(&image, false, provider, &h, &build(false));
        let err = source.check().unwrap_err();
        let text = err.to_string();
        assert!(text.contains(why), "{text}");
        assert!(text.contains("v1.2.3-4-gabc1234-dirty"), "{text}");
        assert!(text.contains(&format!("`{image}`")), "{text}");
        let hints = err.hints().join("\n");
        assert!(
            hints.contains("Linux host")
                && hints.contains("`sync.image`")
                && hints.contains("released build"),
            "{hints}"
        );
    }
    // Side-loading, `sync.image` or a stack's own pin: nothing to refuse.
    let linux = host("linux", "aarch64");
    assert_eq!(
        engine_image_source(
            &image,
            false,
            ProviderKind::Multipass,
            &linux,
            &build(false)
        ),
        EngineImageSource::SideLoad
    );
    let mac = host("macos", "aarch64");
    assert!(matches!(
        engine_image_source("r.example/h:dev", true, ProviderKind::Multipass, &mac, &build(false)),
        EngineImageSource::Pull { because, .. } if because == "`sync.image`"
    ));
    assert!(matches!(
        engine_image_source("r.example/h:9", false, ProviderKind::Multipass, &mac, &build(false)),
        EngineImageSource::Pull { because, .. } if because == "the stack's pin"
    ));
}

#[test]
fn ldd_output_is_parsed() {
    let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
    assert_eq!(
        parse_ldd(text),
        vec![
            PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2")
        ]
    );
}

#[test]
fn the_engine_image_bundles_the_binary_git_and_their_loader() {
    let exe = std::env::current_exe().unwrap();
    let spec = engine_image(
        &exe,
        &EngineImageConfig {
            reference: "homelab:dev".into(),
            git: None,
        },
    )
    .unwrap();
    let paths: Vec<&str> = spec.files.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"/usr/local/bin/homelab"));
    assert!(paths.contains(&"/usr/bin/git"));
    assert!(
        paths.iter().any(|p| p.ends_with("/git-remote-https")),
        "{paths:?}"
    );
    let (arch, dynamic) = elf_info(&std::fs::read(&exe).unwrap()).unwrap();
    assert_eq!(spec.architecture, arch);
    if dynamic {
        assert!(
            paths
                .iter()
                .any(|p| p.contains("ld-linux") || p.contains("ld-musl")),
            "{paths:?}"
        );
    }
    assert_eq!(
        ctr_import_argv("/tmp/engine.tar"),
        vec![
            "microk8s",
            "ctr",
            "image",
            "import",
            "--digests",
            "/tmp/engine.tar"
        ]
    );
}
