//! Finding external programs on PATH once, with an install hint for this OS when one is missing.
//!
//! Architecture invariant: modules ask [`Tool::find`] for a program's path instead of running a
//! bare name, so a missing tool becomes one actionable error before any work starts.

use std::path::PathBuf;

use crate::edges::error::Diagnostic;

/// A program homelab drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tool {
    /// Canonical Multipass, the VM manager.
    Multipass,
    /// git, for pushing lab repositories and fetching sync sources.
    Git,
}

/// The operating systems homelab gives advice for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// macOS.
    Macos,
    /// Linux.
    Linux,
    /// Windows.
    Windows,
    /// Anything else.
    Other,
}

impl Os {
    /// The OS this binary runs on.
    pub fn current() -> Os {
        match std::env::consts::OS {
            "macos" => Os::Macos,
            "linux" => Os::Linux,
            "windows" => Os::Windows,
            _ => Os::Other,
        }
    }
}

/// A program was not found on PATH.
#[derive(Debug, thiserror::Error)]
#[error("`{name}` was not found on PATH")]
pub struct ToolNotFound {
    /// The program's name.
    pub name: &'static str,
    /// How to install it on this OS.
    pub install_hint: String,
}

impl Diagnostic for ToolNotFound {
    fn hints(&self) -> Vec<String> {
        vec![self.install_hint.clone()]
    }
}

impl Tool {
    /// The executable name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Multipass => "multipass",
            Tool::Git => "git",
        }
    }

    /// How to install the tool on `os`.
    pub fn install_hint(self, os: Os) -> String {
        match (self, os) {
            (Tool::Multipass, Os::Linux) => {
                "install Multipass with `sudo snap install multipass`, then run `homelab doctor` again".into()
            }
            (Tool::Multipass, Os::Macos) => {
                "install Multipass with `brew install --cask multipass` (or the .pkg from https://canonical.com/multipass/install)".into()
            }
            (Tool::Multipass, Os::Windows) => {
                "install Multipass from https://canonical.com/multipass/install (Hyper-V on Pro editions, VirtualBox on Home)".into()
            }
            (Tool::Multipass, Os::Other) => {
                "install Multipass from https://canonical.com/multipass/install, or use `--provider existing` with a kubeconfig".into()
            }
            (Tool::Git, Os::Linux) => {
                "install git with your package manager, e.g. `sudo apt install git` or `sudo dnf install git`".into()
            }
            (Tool::Git, Os::Macos) => "install git with `xcode-select --install` or `brew install git`".into(),
            (Tool::Git, Os::Windows) => "install Git for Windows from https://git-scm.com/download/win".into(),
            (Tool::Git, Os::Other) => "install git from https://git-scm.com/downloads".into(),
        }
    }

    /// Locate the tool on PATH.
    pub fn find(self) -> Result<PathBuf, ToolNotFound> {
        which::which(self.name()).map_err(|_| ToolNotFound {
            name: self.name(),
            install_hint: self.install_hint(Os::current()),
        })
    }
}
