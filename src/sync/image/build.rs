//! Building the engine image from the host: the running binary, `git` with its HTTP helpers,
//! the libraries `ldd` lists for them and the host's CA bundle, and writing the archive to a file.
//!
//! Architecture invariant: this is the effectful part of [`super`] (it reads files and runs `ldd`
//! and `git`); what it reads goes through the pure [`elf_info`] and [`parse_ldd`], and the bytes
//! it writes come from [`super::oci`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ImageError;
use super::oci::{ArchiveInfo, ImageFile, ImageSpec, write_archive};
use crate::edges::process::Cmd;

/// Architecture of a 64-bit little-endian ELF executable: `amd64` or `arm64`; and whether it
/// asks for a dynamic loader (`PT_INTERP`).
pub fn elf_info(bytes: &[u8]) -> Option<(&'static str, bool)> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let arch = match u16_at(18) {
        62 => "amd64",
        183 => "arm64",
        _ => return None,
    };
    let phoff = u64_at(32) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    let mut dynamic = false;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bytes.len() {
            return None;
        }
        if u32_at(o) == 3 {
            dynamic = true;
        }
    }
    Some((arch, dynamic))
}

/// The programs and libraries a dynamically linked executable needs, as `ldd` lists them (the
/// loader included); nothing for a static one.
pub fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Cmd::new("ldd", "list the libraries the engine image needs")
        .arg(exe)
        .run_unchecked()?;
    if !out.success() {
        // "not a dynamic executable" / "statically linked".
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&out.stdout))
}

/// Paths in `ldd` output (`libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; `linux-vdso.so.1` has no file).
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Add an executable (at the same path in the image, or `at`) with its libraries.
fn add_program(
    files: &mut BTreeMap<String, ImageFile>,
    host: &Path,
    at: Option<&str>,
) -> Result<(), ImageError> {
    let contents = read(host)?;
    let path = at
        .map(str::to_string)
        .unwrap_or_else(|| host.display().to_string());
    files.insert(
        path.clone(),
        ImageFile {
            path,
            contents,
            mode: 0o755,
        },
    );
    for lib in shared_libraries(host)? {
        let key = lib.display().to_string();
        if files.contains_key(&key) {
            continue;
        }
        // ldd names the path the loader opens; it may be a symlink, so its target's bytes are
        // stored under that name.
        files.insert(
            key.clone(),
            ImageFile {
                path: key,
                contents: read(&lib)?,
                mode: 0o755,
            },
        );
    }
    Ok(())
}

/// What to put beside the engine binary.
#[derive(Clone, Debug, Default)]
pub struct EngineImageConfig {
    /// Full image reference the stack names (`sync.image`).
    pub reference: String,
    /// `git` to bundle (found on PATH when `None`).
    pub git: Option<PathBuf>,
}

/// The engine image from the binary at `binary` (normally `std::env::current_exe()`): the binary
/// as `/usr/local/bin/homelab`, git with its HTTP helpers, their libraries, the CA bundle.
pub fn engine_image(binary: &Path, cfg: &EngineImageConfig) -> Result<ImageSpec, ImageError> {
    let bytes = read(binary)?;
    let (arch, _) = elf_info(&bytes).ok_or_else(|| ImageError::NotLinux {
        path: binary.to_path_buf(),
    })?;
    let mut files = BTreeMap::new();
    add_program(&mut files, binary, Some("/usr/local/bin/homelab"))?;
    let git = match &cfg.git {
        Some(g) => g.clone(),
        None => which::which("git").map_err(|e| ImageError::Read {
            path: PathBuf::from("git"),
            message: e.to_string(),
        })?,
    };
    let git = std::fs::canonicalize(&git).unwrap_or(git);
    add_program(&mut files, &git, Some("/usr/bin/git"))?;
    // git runs `git-remote-http(s)` from its exec path for HTTP(S) remotes.
    let exec_path = Cmd::new(&git, "find git's helper programs")
        .arg("--exec-path")
        .run()
        .map(|o| PathBuf::from(o.stdout.trim()))?;
    for helper in ["git-remote-http", "git-remote-https"] {
        let p = exec_path.join(helper);
        if p.exists() {
            let at = format!("{}/{helper}", exec_path.display());
            add_program(&mut files, &p, Some(&at))?;
        }
    }
    for ca in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(contents) = std::fs::read(ca) {
            files.insert(
                "/etc/ssl/certs/ca-certificates.crt".into(),
                ImageFile {
                    path: "/etc/ssl/certs/ca-certificates.crt".into(),
                    contents,
                    mode: 0o644,
                },
            );
            break;
        }
    }
    // Checkouts go to /tmp (an emptyDir in the Deployment); git wants a HOME.
    files.insert(
        "/tmp/.keep".into(),
        ImageFile {
            path: "/tmp/.keep".into(),
            contents: Vec::new(),
            mode: 0o644,
        },
    );
    Ok(ImageSpec {
        reference: cfg.reference.clone(),
        architecture: arch.to_string(),
        entrypoint: vec!["/usr/local/bin/homelab".into()],
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "HOME=/tmp".into(),
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into(),
        ],
        user: "65532".into(),
        files: files.into_values().collect(),
    })
}

/// What provisioning calls: the engine image built from the running binary, written to `path`
/// as an OCI archive. Returns the image's architecture (`amd64`/`arm64`: compare it with the
/// VM's before importing) and the digests.
pub fn write_engine_archive(
    path: &Path,
    reference: &str,
) -> Result<(String, ArchiveInfo), ImageError> {
    let exe = std::env::current_exe().map_err(|e| ImageError::Read {
        path: PathBuf::from("/proc/self/exe"),
        message: e.to_string(),
    })?;
    let spec = engine_image(
        &exe,
        &EngineImageConfig {
            reference: reference.to_string(),
            git: None,
        },
    )?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path)
            .map_err(|e| ImageError::Write(format!("`{}`: {e}", path.display())))?,
    );
    let info = write_archive(&spec, &mut file)?;
    file.flush().map_err(|e| ImageError::Write(e.to_string()))?;
    Ok((spec.architecture, info))
}
