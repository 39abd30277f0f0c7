//! Gathering [`HostFacts`] once: the Linux family from os-release, whether NSS's `certutil` is
//! on PATH, and which NSS databases (Firefox profiles, Chromium's shared database) exist.
//!
//! Place in the data flow: environment + filesystem ─[`detect`]▶ [`HostFacts`] ─▶ `trust::plan`.
//!
//! Architecture invariant: this module only reads (files and PATH); every input it reads is a
//! field of [`DetectConfig`], so tests point it at a fake os-release and a temp home (black-box
//! tests through the hidden `homelab trust --os-release FILE`).

use std::path::{Path, PathBuf};

use super::{HostFacts, LinuxFamily, NssDb, NssKind};
use crate::edges::tools::Os;

/// Everything [`detect`] looks at.
#[derive(Clone, Debug)]
pub struct DetectConfig {
    /// The OS to detect for.
    pub os: Os,
    /// os-release files, first existing wins (`/etc/os-release`, then `/usr/lib/os-release`).
    pub os_release: Vec<PathBuf>,
    /// The user's home directory (where browser profiles live).
    pub home: PathBuf,
    /// Whether a program named `certutil` is on PATH.
    pub certutil_on_path: bool,
}

impl DetectConfig {
    /// The configuration for this process: the real OS, `os_release` or the standard
    /// os-release paths, the user's home, PATH.
    pub fn for_this_host(os_release: Option<&Path>) -> DetectConfig {
        let os_release = match os_release {
            Some(p) => vec![p.to_path_buf()],
            None => vec![
                PathBuf::from("/etc/os-release"),
                PathBuf::from("/usr/lib/os-release"),
            ],
        };
        let home = directories::BaseDirs::new()
            .map(|b| b.home_dir().to_path_buf())
            .unwrap_or_default();
        DetectConfig {
            os: Os::current(),
            os_release,
            home,
            certutil_on_path: which::which("certutil").is_ok(),
        }
    }
}

/// Look at the host.
pub fn detect(cfg: &DetectConfig) -> HostFacts {
    let linux_family = (cfg.os == Os::Linux).then(|| {
        cfg.os_release
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|text| {
                let (id, id_like) = parse_os_release(&text);
                LinuxFamily::from_ids(&id, &id_like)
            })
            .unwrap_or(LinuxFamily::Unknown { id: String::new() })
    });
    HostFacts {
        os: cfg.os,
        linux_family,
        // On Windows, `certutil` is Microsoft's tool, not NSS's.
        nss_certutil: cfg.certutil_on_path && cfg.os != Os::Windows,
        nss_databases: nss_databases(cfg.os, &cfg.home),
    }
}

/// `ID` and `ID_LIKE` from os-release text (values may be quoted).
pub fn parse_os_release(text: &str) -> (String, String) {
    let mut id = String::new();
    let mut id_like = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
        match key.trim() {
            "ID" => id = value,
            "ID_LIKE" => id_like = value,
            _ => {}
        }
    }
    (id, id_like)
}

/// NSS databases in the `sql:` format (`cert9.db`) under the places each browser keeps them.
fn nss_databases(os: Os, home: &Path) -> Vec<NssDb> {
    let firefox_roots: Vec<PathBuf> = match os {
        Os::Linux => vec![
            home.join(".mozilla/firefox"),
            home.join("snap/firefox/common/.mozilla/firefox"),
            home.join(".var/app/org.mozilla.firefox/.mozilla/firefox"),
            home.join(".config/mozilla/firefox"),
        ],
        Os::Macos => vec![home.join("Library/Application Support/Firefox/Profiles")],
        // Only to mention Firefox's own setting: no NSS step is offered on Windows.
        Os::Windows => vec![home.join("AppData/Roaming/Mozilla/Firefox/Profiles")],
        Os::Other => Vec::new(),
    };
    let mut out = Vec::new();
    for root in firefox_roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("cert9.db").is_file())
            .collect();
        dirs.sort();
        out.extend(dirs.into_iter().map(|dir| NssDb {
            kind: NssKind::Firefox,
            dir,
        }));
    }
    if os == Os::Linux {
        for dir in [
            home.join(".pki/nssdb"),
            home.join("snap/chromium/current/.pki/nssdb"),
        ] {
            if dir.join("cert9.db").is_file() {
                out.push(NssDb {
                    kind: NssKind::Chromium,
                    dir,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_may_be_quoted() {
        let text = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n";
        assert_eq!(
            parse_os_release(text),
            ("rocky".into(), "rhel centos fedora".into())
        );
    }

    #[test]
    fn detect_reads_os_release_and_profiles() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let profile = home.join(".mozilla/firefox/abcd.default-release");
        std::fs::create_dir_all(&profile).unwrap();
        std::fs::write(profile.join("cert9.db"), b"").unwrap();
        // A profile without cert9.db (never started) is not offered.
        std::fs::create_dir_all(home.join(".mozilla/firefox/empty.profile")).unwrap();
        let os_release = tmp.path().join("os-release");
        std::fs::write(&os_release, "ID=fedora\n").unwrap();
        let facts = detect(&DetectConfig {
            os: Os::Linux,
            os_release: vec![tmp.path().join("missing"), os_release],
            home: home.clone(),
            certutil_on_path: true,
        });
        assert_eq!(facts.linux_family, Some(LinuxFamily::Fedora));
        assert!(facts.nss_certutil);
        assert_eq!(
            facts.nss_databases,
            vec![NssDb {
                kind: NssKind::Firefox,
                dir: profile
            }]
        );

        let windows = detect(&DetectConfig {
            os: Os::Windows,
            os_release: vec![],
            home,
            certutil_on_path: true,
        });
        assert!(!windows.nss_certutil, "Windows' certutil is not NSS's");
        assert_eq!(windows.linux_family, None);
    }
}
