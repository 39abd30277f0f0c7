//! The settings schema: every key with its documentation and environment name, the
//! defaults and limits, and the value types keys take (provider, byte sizes, origins).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Default lab name.
pub const DEFAULT_LAB: &str = "homelab";
/// Default stack.
pub const DEFAULT_STACK: &str = "default";
/// Name of the config file looked up in the current directory.
pub const CONFIG_FILE_NAME: &str = "homelab.yaml";
/// Fewest CPUs a lab VM may have: microk8s plus the stack's components starve below this.
pub const MIN_VM_CPUS: u32 = 2;
/// Least memory a lab VM may have.
pub const MIN_VM_MEMORY: ByteSize = ByteSize::gib(4);
/// Smallest disk a lab VM may have: the snap, images and volumes need the room.
pub const MIN_VM_DISK: ByteSize = ByteSize::gib(20);

/// One documented settings key.
#[derive(Clone, Copy, Debug)]
pub struct KeyDoc {
    /// Dotted key as written in `homelab.yaml`.
    pub key: &'static str,
    /// What it means.
    pub about: &'static str,
    /// An example line for `homelab.yaml`.
    pub example: &'static str,
}

/// Every key homelab accepts, in display order.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "lab",
        about: "name of the lab; several labs can coexist",
        example: "lab: workshop",
    },
    KeyDoc {
        key: "stack",
        about: "stack name (`default`, `argocd`) or path to a stack file",
        example: "stack: argocd",
    },
    KeyDoc {
        key: "domain",
        about: "domain for lab hostnames (default `<node-ip>.sslip.io`)",
        example: "domain: lab.example.test",
    },
    KeyDoc {
        key: "provider",
        about: "`multipass` (default) or `existing` (a cluster from your kubeconfig)",
        example: "provider: existing",
    },
    KeyDoc {
        key: "context",
        about: "kubeconfig context for the `existing` provider",
        example: "context: my-cluster",
    },
    KeyDoc {
        key: "vm.cpus",
        about: "CPUs per VM (at least 2)",
        example: "cpus: 4",
    },
    KeyDoc {
        key: "vm.memory",
        about: "memory per VM, with K/M/G suffix (at least 4G)",
        example: "memory: 8G",
    },
    KeyDoc {
        key: "vm.disk",
        about: "disk per VM, with K/M/G suffix (at least 20G)",
        example: "disk: 40G",
    },
    KeyDoc {
        key: "vm.nodes",
        about: "number of VMs in the cluster",
        example: "nodes: 1",
    },
    KeyDoc {
        key: "vm.image",
        about: "Ubuntu LTS image for the VMs (pinned release)",
        example: "image: \"24.04\"",
    },
    KeyDoc {
        key: "microk8s.channel",
        about: "microk8s snap channel (default: the stack's pinned track)",
        example: "channel: 1.36/stable",
    },
    KeyDoc {
        key: "gitea.admin_user",
        about: "Gitea admin login (not `admin`, which Gitea reserves)",
        example: "admin_user: lab-admin",
    },
    KeyDoc {
        key: "gitea.admin_password",
        about: "Gitea admin password (default: generated once and kept in the lab state)",
        example: "admin_password: …",
    },
    KeyDoc {
        key: "sync.image",
        about: "image of the in-cluster sync engine (default: the stack's pin)",
        example: "image: ghcr.io/homelab-dev/homelab:0.1.0",
    },
    KeyDoc {
        key: "upstream.mirror",
        about: "base URL of a mirror serving upstream release manifests as `<mirror>/<host>/<path>` (for a workshop's slow network)",
        example: "mirror: http://10.0.0.2:8000",
    },
];

/// Environment variables that belong to homelab but are not settings keys.
pub(super) const NON_SETTING_ENV: &[&str] = &[
    "HOMELAB_CONFIG",
    // The upstream contract documents' folder for the tests' drift check (tests/it/contracts.rs).
    "HOMELAB_UPSTREAM_CONTRACTS",
    "HOMELAB_TEST_KUBECONFIG",
    "HOMELAB_TEST_GITEA_URL",
    "HOMELAB_TEST_GITEA_ADMIN",
    "HOMELAB_E2E",
    // scripts/e2e's own knobs: the lab, extra `up` arguments, where a failure's logs go.
    "HOMELAB_E2E_LAB",
    "HOMELAB_E2E_ARGS",
    "HOMELAB_E2E_LOGS",
    "HOMELAB_VALIDATOR",
    "HOMELAB_LOG",
    "HOMELAB_TEST_WAITS",
    "HOMELAB_TEST_INGRESS_PORT",
    "HOMELAB_TEST_HOST",
    "HOMELAB_TEST_PLATFORM",
    // Another Snap Store API base URL for `prepare` (tests' fake store, a store proxy).
    "HOMELAB_SNAP_STORE_URL",
    // Runtime parameters of the in-cluster sync engine, set by its Deployment.
    "HOMELAB_SYNC_APPLICATION_NAMESPACE",
    "HOMELAB_SYNC_LEASE_NAMESPACE",
    "HOMELAB_SYNC_LISTEN",
    "HOMELAB_SYNC_POLL",
    "HOMELAB_SYNC_NAMESPACES",
    "HOMELAB_SYNC_WORK_DIR",
    "HOMELAB_CA_FILE",
    "HOMELAB_SYNC_WEBHOOK_SECRET",
    "HOMELAB_SYNC_WEBHOOK_SECRET_FILE",
];

/// The environment variable for a key: `vm.cpus` → `HOMELAB_VM_CPUS`.
pub fn env_name(key: &str) -> String {
    format!("HOMELAB_{}", key.to_uppercase().replace('.', "_"))
}

/// Which cluster provider builds the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Multipass VMs running microk8s.
    Multipass,
    /// Any cluster reachable through a kubeconfig.
    Existing,
}

impl std::str::FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "multipass" => Ok(ProviderKind::Multipass),
            "existing" => Ok(ProviderKind::Existing),
            other => Err(format!(
                "unknown provider `{other}`, expected `multipass` or `existing`"
            )),
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Multipass => "multipass",
            ProviderKind::Existing => "existing",
        })
    }
}

/// A size in bytes, read with an optional K/M/G/T suffix (powers of 1024, as Multipass counts).
///
/// It prints with K, M or G only, never T: the same text is handed to `multipass launch
/// --memory/--disk`, and Multipass's parser knows no other unit. canonical/multipass v1.16.3
/// `src/utils/memory_size.cpp` (`mp::in_bytes`, used by `validate_create_arguments` in
/// `src/daemon/daemon.cpp`) accepts `\s*(\d+)(?:\.(\d+)(?=[KMG]))?(?:([KMG])(?:i?B)?|B)?\s*`,
/// case-insensitive: an integer, a decimal part only before a unit, units K, M, G (optionally
/// followed by `B` or `iB`) or a bare `B`; anything else (`1T`, `1.5`) is "Invalid disk size
/// value supplied" (issue 12). So `1T` is read here and printed as `1024G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
}

/// Bytes as gibibytes with one decimal, for people: `7.8G`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / (1u64 << 30) as f64)
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t
            .strip_suffix("iB")
            .or_else(|| t.strip_suffix('B'))
            .unwrap_or(t);
        let (num, mult) = match t.chars().last() {
            Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
            Some('M' | 'm') => (&t[..t.len() - 1], 1u64 << 20),
            Some('G' | 'g') => (&t[..t.len() - 1], 1u64 << 30),
            Some('T' | 't') => (&t[..t.len() - 1], 1u64 << 40),
            _ => (t, 1u64),
        };
        let value: f64 = num.trim().parse().map_err(|_| {
            format!("`{s}` is not a size; write a number with K, M or G, e.g. `8G`")
        })?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "`{s}` is not a size; write a number with K, M or G, e.g. `8G`"
            ));
        }
        Ok(ByteSize((value * mult as f64).round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        // No `T`: see the type's doc (Multipass refuses it).
        for (suffix, unit) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
            if b >= unit && b.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", b / unit);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The layer a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Built-in default.
    Default,
    /// What the lab's last `up` ran with (the stack: `stack.json` in the lab state).
    Lab,
    /// The config file.
    File,
    /// A `HOMELAB_*` variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Default => "default",
            Origin::Lab => "lab",
            Origin::File => "file",
            Origin::Env => "env",
            Origin::Flag => "flag",
        })
    }
}
