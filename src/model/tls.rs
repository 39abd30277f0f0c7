//! The lab CA: generated once with rcgen (ECDSA P-256, name-constrained to the lab's domains),
//! kept in the lab state so browser trust survives `down`/`up`; plus leaf issuance the way
//! cert-manager's CA issuer does it, and parsing a CA back for `homelab ca show`.
//!
//! Place in the data flow: `Settings.domain` → [`load_or_create`] → [`LabCa`] → render (the CA
//! Secret for cert-manager, the CA bundle ConfigMaps, cloud-init for containerd) and
//! `trust` (the host trust stores).
//!
//! Architecture invariant: generating, issuing and parsing certificates is pure (no I/O besides
//! the OS random source); [`load`], [`load_or_create`] and [`regenerate`] are the only functions
//! that touch the state directory. The CA key lives in a [`Secret`] and is never printed.
//!
//! Constraints policy: the CA may only issue for `sslip.io` (so a changed node IP keeps the same
//! CA) and the custom `--domain` it was created with; every IP address is excluded, so a leaked
//! key cannot vouch for an IP-addressed server either. A later run whose domain the CA does not
//! cover fails with [`TlsError::DomainNotCovered`] and never regenerates silently: replacing the
//! CA is the deliberate `homelab ca regenerate`, because every trust store holding the old CA
//! must then be updated.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::edges::error::Diagnostic;
use crate::edges::redact::Secret;
use crate::edges::state::{LabState, StateError};

/// CA certificate file in the lab state.
pub const CA_CERT_FILE: &str = "ca/ca.crt";
/// CA private key file in the lab state.
pub const CA_KEY_FILE: &str = "ca/ca.key";
/// How long the CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// The parent domain of the default lab hostnames (`<node-ip>.sslip.io`).
pub const SSLIP_DOMAIN: &str = "sslip.io";
/// cert-manager's default certificate duration (`spec.duration` unset): 90 days.
pub const LEAF_DEFAULT_DAYS: i64 = 90;

/// The lab CA: certificate and key, PEM.
#[derive(Clone, Debug)]
pub struct LabCa {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: Secret,
}

/// Certificate generation or parsing failed, or the stored CA cannot serve this run.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the parameters.
    #[error("could not generate the lab CA: {0}")]
    Generate(String),
    /// rcgen refused to issue a leaf.
    #[error("could not issue a certificate for {names}: {message}")]
    Issue {
        /// The requested names, backticked.
        names: String,
        /// rcgen's message.
        message: String,
    },
    /// A stored CA file cannot be parsed.
    #[error("the lab CA in `{path}` cannot be read: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The lab has no CA yet (read-only commands do not create one).
    #[error("lab `{lab}` has no CA yet (no `{path}`)")]
    NoCa {
        /// The lab.
        lab: String,
        /// Where the certificate would be.
        path: String,
    },
    /// The key file does not belong to the certificate file.
    #[error("the lab CA key `{key_path}` does not belong to the certificate `{cert_path}`")]
    KeyMismatch {
        /// Certificate file.
        cert_path: String,
        /// Key file.
        key_path: String,
    },
    /// The stored CA's name constraints do not cover the requested domain.
    #[error(
        "domain `{domain}` is outside the name constraints of the lab CA `{path}`, which may only issue for {permitted}"
    )]
    DomainNotCovered {
        /// The requested domain.
        domain: String,
        /// The CA's permitted DNS subtrees, backticked and comma-separated.
        permitted: String,
        /// The certificate file.
        path: String,
    },
    /// The stored CA has expired.
    #[error("the lab CA `{path}` expired on {not_after}")]
    Expired {
        /// The certificate file.
        path: String,
        /// When it expired (RFC 3339).
        not_after: String,
    },
    /// State I/O failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl Diagnostic for TlsError {
    fn hints(&self) -> Vec<String> {
        match self {
            TlsError::Parse { .. } | TlsError::KeyMismatch { .. } => vec![
                "run `homelab ca regenerate` to replace the lab CA (browsers and other trust stores will need to trust the new one)".into(),
            ],
            TlsError::NoCa { .. } => vec![
                "`homelab up` creates it (so do `homelab render` and `homelab trust`, without a VM)".into(),
            ],
            TlsError::DomainNotCovered {
                domain, permitted, ..
            } => vec![
                format!("use a domain under {permitted} with `--domain`"),
                format!(
                    "or replace the lab CA with one that covers `{domain}`: `homelab ca regenerate --domain {domain}` (run `homelab untrust` first if you trusted the old one)"
                ),
            ],
            TlsError::Expired { .. } => vec![
                "run `homelab ca regenerate` to replace it (run `homelab untrust` first if you trusted it)".into(),
            ],
            TlsError::State(e) => e.hints(),
            TlsError::Generate(_) | TlsError::Issue { .. } => Vec::new(),
        }
    }
}

/// The DNS subtrees the CA may issue for: always `sslip.io` (default hostnames follow the node
/// IP, so a changed IP keeps the same CA), plus a custom domain when one is set. Lower-cased,
/// because DNS names compare case-insensitively and the constraint is stored once.
pub fn permitted_domains(custom_domain: Option<&str>) -> Vec<String> {
    let mut out = vec![SSLIP_DOMAIN.to_string()];
    if let Some(d) = custom_domain {
        let d = d.trim_end_matches('.').to_ascii_lowercase();
        if !covered_by(&d, SSLIP_DOMAIN) {
            out.push(d);
        }
    }
    out
}

/// Whether `name` equals `subtree` or lies under it (RFC 5280 DNS name constraint semantics:
/// labels may be added on the left only).
pub fn covered_by(name: &str, subtree: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let subtree = subtree.trim_end_matches('.').to_ascii_lowercase();
    name == subtree || name.ends_with(&format!(".{subtree}"))
}

/// Generate a new CA for `lab`, valid from `now` for [`CA_VALIDITY_DAYS`].
pub fn generate(lab: &str, permitted: &[String], now: OffsetDateTime) -> Result<LabCa, TlsError> {
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, ca_common_name(lab));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "homelab");
    // Path length 0: the CA signs leaves only, never an intermediate that could escape review.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted
            .iter()
            .map(|d| GeneralSubtree::DnsName(d.clone()))
            .collect(),
        // An iPAddress SAN is not a DNS name, so DNS constraints alone would not limit it.
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    });
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial()?);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(LabCa {
        cert_pem: cert.pem(),
        key_pem: Secret::new(key.serialize_pem()),
    })
}

/// The CA's common name: names the lab, so two labs' CAs are told apart in every trust store.
pub fn ca_common_name(lab: &str) -> String {
    format!("homelab CA ({lab})")
}

/// Load the lab CA from the state without creating it; `None` when it has none yet.
///
/// Checks that the key belongs to the certificate, so a half-replaced pair is caught here
/// rather than as cert-manager issuing certificates nobody can verify.
pub fn load(state: &LabState) -> Result<Option<LabCa>, TlsError> {
    let cert = state.read(CA_CERT_FILE)?;
    let key = state.read(CA_KEY_FILE)?;
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(TlsError::Parse {
                path: state.path(CA_KEY_FILE).display().to_string(),
                message: "the key file is missing".into(),
            });
        }
        (None, Some(_)) => {
            return Err(TlsError::Parse {
                path: state.path(CA_CERT_FILE).display().to_string(),
                message: "the certificate file is missing".into(),
            });
        }
    };
    let cert_path = state.path(CA_CERT_FILE).display().to_string();
    let key_path = state.path(CA_KEY_FILE).display().to_string();
    let cert_pem = String::from_utf8(cert).map_err(|_| TlsError::Parse {
        path: cert_path.clone(),
        message: "not UTF-8 PEM".into(),
    })?;
    let key_pem = String::from_utf8(key).map_err(|_| TlsError::Parse {
        path: key_path.clone(),
        message: "not UTF-8 PEM".into(),
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Parse {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    let der = pem_to_der(&cert_pem).map_err(|message| TlsError::Parse {
        path: cert_path.clone(),
        message,
    })?;
    let (_, x509) = X509Certificate::from_der(&der).map_err(|e| TlsError::Parse {
        path: cert_path.clone(),
        message: e.to_string(),
    })?;
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(TlsError::KeyMismatch {
            cert_path,
            key_path,
        });
    }
    Ok(Some(LabCa {
        cert_pem,
        key_pem: Secret::new(key_pem),
    }))
}

/// Load the lab CA, or generate and store it (key 0600 in a 0700 directory) on first use.
///
/// A stored CA is reused as long as it is unexpired and its name constraints cover
/// `custom_domain`; otherwise this fails with a hint, and never replaces the CA by itself.
pub fn load_or_create(state: &LabState, custom_domain: Option<&str>) -> Result<LabCa, TlsError> {
    let now = OffsetDateTime::now_utc();
    if let Some(ca) = load(state)? {
        let path = state.path(CA_CERT_FILE).display().to_string();
        let info = inspect(&ca.cert_pem).map_err(|message| TlsError::Parse {
            path: path.clone(),
            message,
        })?;
        if info.not_after_unix < now.unix_timestamp() {
            return Err(TlsError::Expired {
                path,
                not_after: info.not_after,
            });
        }
        if let Some(domain) = custom_domain
            && !info.covers(domain)
        {
            return Err(TlsError::DomainNotCovered {
                domain: domain.to_string(),
                permitted: backticked(&info.permitted_dns),
                path,
            });
        }
        return Ok(ca);
    }
    create(state, custom_domain, now)
}

/// Replace the lab CA with a new one covering `sslip.io` and `custom_domain` (the deliberate
/// counterpart of [`TlsError::DomainNotCovered`]). The caller makes sure no host trust store
/// still records the old CA (`trust-ledger.json` empty) before calling this.
pub fn regenerate(state: &LabState, custom_domain: Option<&str>) -> Result<LabCa, TlsError> {
    create(state, custom_domain, OffsetDateTime::now_utc())
}

fn create(
    state: &LabState,
    custom_domain: Option<&str>,
    now: OffsetDateTime,
) -> Result<LabCa, TlsError> {
    let ca = generate(state.lab(), &permitted_domains(custom_domain), now)?;
    // Key first: a crash in between leaves no certificate without its key.
    state.write(CA_KEY_FILE, ca.key_pem.expose().as_bytes())?;
    state.write(CA_CERT_FILE, ca.cert_pem.as_bytes())?;
    Ok(ca)
}

/// Fixed markers in place of the CA, for `render --placeholder-secrets`.
pub fn placeholder() -> LabCa {
    LabCa {
        cert_pem: "PLACEHOLDER-lab-ca-certificate".into(),
        key_pem: Secret::new("PLACEHOLDER-lab-ca-key"),
    }
}

/// What `homelab ca show` prints about a CA certificate; parsed back from the PEM, so it shows
/// what clients will see rather than what homelab meant to write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaInfo {
    /// Subject DN, e.g. `CN=homelab CA (homelab), O=homelab`.
    pub subject: String,
    /// Subject common name, e.g. `homelab CA (homelab)` (the nickname in NSS databases).
    pub common_name: String,
    /// SHA-256 of the DER certificate, upper-case hex pairs joined by `:`.
    pub sha256: String,
    /// SHA-1 of the DER certificate, upper-case hex: how macOS `security` and Windows
    /// `certutil` name a certificate when removing it.
    pub sha1: String,
    /// Start of validity (RFC 3339, UTC).
    pub not_before: String,
    /// End of validity (RFC 3339, UTC).
    pub not_after: String,
    /// End of validity as a Unix timestamp.
    #[serde(skip)]
    pub not_after_unix: i64,
    /// Permitted DNS subtrees of the name constraints.
    pub permitted_dns: Vec<String>,
    /// Excluded subtrees of the name constraints, e.g. `IP 0.0.0.0/0`.
    pub excluded: Vec<String>,
    /// Key usages, RFC 5280 names.
    pub key_usages: Vec<String>,
    /// Whether basic constraints say CA.
    pub is_ca: bool,
    /// Basic constraints path length.
    pub path_len: Option<u32>,
    /// Public key algorithm, e.g. `ECDSA P-256`.
    pub key_algorithm: String,
}

impl CaInfo {
    /// Whether the CA's DNS name constraints allow names under `domain`.
    pub fn covers(&self, domain: &str) -> bool {
        self.permitted_dns.iter().any(|p| covered_by(domain, p))
    }
}

/// Parse a CA certificate (PEM) into what `ca show` prints.
pub fn inspect(cert_pem: &str) -> Result<CaInfo, String> {
    let der = pem_to_der(cert_pem)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| e.to_string())?;
    let mut permitted_dns = Vec::new();
    let mut excluded = Vec::new();
    if let Some(nc) = cert.name_constraints().map_err(|e| e.to_string())? {
        for s in nc.value.permitted_subtrees.iter().flatten() {
            match &s.base {
                GeneralName::DNSName(d) => permitted_dns.push(d.to_string()),
                other => permitted_dns.push(general_name(other)),
            }
        }
        for s in nc.value.excluded_subtrees.iter().flatten() {
            excluded.push(general_name(&s.base));
        }
    }
    let mut key_usages = Vec::new();
    if let Some(ku) = cert.key_usage().map_err(|e| e.to_string())? {
        let ku = ku.value;
        for (on, name) in [
            (ku.digital_signature(), "digitalSignature"),
            (ku.key_encipherment(), "keyEncipherment"),
            (ku.key_cert_sign(), "keyCertSign"),
            (ku.crl_sign(), "cRLSign"),
        ] {
            if on {
                key_usages.push(name.to_string());
            }
        }
    }
    let (is_ca, path_len) = match cert.basic_constraints().map_err(|e| e.to_string())? {
        Some(bc) => (bc.value.ca, bc.value.path_len_constraint),
        None => (false, None),
    };
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let rfc3339 = |t: &x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp())
            .ok()
            .and_then(|d| d.format(&Rfc3339).ok())
            .unwrap_or_else(|| t.to_string())
    };
    let validity = cert.validity();
    Ok(CaInfo {
        subject: cert.subject().to_string(),
        common_name,
        sha256: hex_pairs(&Sha256::digest(&der)),
        sha1: sha1_hex(&der),
        not_before: rfc3339(&validity.not_before),
        not_after: rfc3339(&validity.not_after),
        not_after_unix: validity.not_after.timestamp(),
        permitted_dns,
        excluded,
        key_usages,
        is_ca,
        path_len,
        key_algorithm: key_algorithm(&cert),
    })
}

/// What to put into a leaf certificate. [`LeafSpec::for_names`] gives what cert-manager's CA
/// issuer produces for an Ingress through ingress-shim: the TLS hosts as DNS SANs, no subject
/// common name, 90 days, key usages `digitalSignature` + `keyEncipherment` (cert-manager's
/// default usages) and extended key usage `serverAuth` (ingress-shim's default), a fresh
/// ECDSA P-256 key.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names (cert-manager's `ipAddresses`).
    pub ip_addresses: Vec<IpAddr>,
    /// Subject common name (cert-manager's `commonName`); none by default.
    pub common_name: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// Requested lifetime (cert-manager's `duration`).
    pub validity: time::Duration,
}

impl LeafSpec {
    /// A server certificate for `names`, valid from `now` for [`LEAF_DEFAULT_DAYS`].
    pub fn for_names<S: AsRef<str>>(names: &[S], now: OffsetDateTime) -> LeafSpec {
        LeafSpec {
            dns_names: names.iter().map(|n| n.as_ref().to_string()).collect(),
            ip_addresses: Vec::new(),
            common_name: None,
            not_before: now,
            validity: time::Duration::days(LEAF_DEFAULT_DAYS),
        }
    }
}

/// A leaf certificate and its key, shaped like the Secret cert-manager writes
/// (`tls.crt`, `tls.key`, `ca.crt`).
#[derive(Clone, Debug)]
pub struct Leaf {
    /// `tls.crt`: the leaf certificate, PEM (the CA is a root, so no chain follows it).
    pub cert_pem: String,
    /// The leaf certificate, DER (what rustls and webpki take).
    pub cert_der: Vec<u8>,
    /// `tls.key`: the leaf's private key, PKCS#8 PEM.
    pub key_pem: Secret,
    /// `ca.crt`: the issuing CA, PEM.
    pub ca_pem: String,
}

/// Issue a leaf certificate signed by the lab CA, the way cert-manager's CA issuer does: the
/// SANs and lifetime of `spec`, a random 128-bit serial, the CA as issuer with its key
/// identifier, and `notAfter` capped at the CA's own `notAfter`.
///
/// Like cert-manager, this does not refuse names outside the CA's name constraints; clients do,
/// which the tests show with rustls-webpki. Used by the TLS tests and by test HTTPS servers:
///
/// ```
/// # use homelab::model::tls::{generate, issue_leaf, permitted_domains, LeafSpec};
/// let now = time::OffsetDateTime::now_utc();
/// let ca = generate("demo", &permitted_domains(None), now).unwrap();
/// let leaf = issue_leaf(&ca, &LeafSpec::for_names(&["gitea.10.0.0.5.sslip.io"], now)).unwrap();
/// assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// ```
pub fn issue_leaf(ca: &LabCa, spec: &LeafSpec) -> Result<Leaf, TlsError> {
    let names = backticked(&spec.dns_names);
    let issue_err = |message: String| TlsError::Issue {
        names: names.clone(),
        message,
    };
    let ca_key = KeyPair::from_pem(ca.key_pem.expose()).map_err(|e| issue_err(e.to_string()))?;
    let ca_info = inspect(&ca.cert_pem).map_err(&issue_err)?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|e| issue_err(e.to_string()))?;

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = &spec.common_name {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    for name in &spec.dns_names {
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| issue_err(e.to_string()))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    for ip in &spec.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial().map_err(|e| issue_err(e.to_string()))?);
    params.not_before = spec.not_before;
    let ca_not_after = OffsetDateTime::from_unix_timestamp(ca_info.not_after_unix)
        .map_err(|e| issue_err(e.to_string()))?;
    params.not_after = (spec.not_before + spec.validity).min(ca_not_after);

    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| issue_err(e.to_string()))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| issue_err(e.to_string()))?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: Secret::new(key.serialize_pem()),
        ca_pem: ca.cert_pem.clone(),
    })
}

/// The DER bytes of the first `CERTIFICATE` block of a PEM text.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if parsed.label != "CERTIFICATE" {
        return Err(format!(
            "expected a `CERTIFICATE` PEM block, found `{}`",
            parsed.label
        ));
    }
    Ok(parsed.contents)
}

fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| TlsError::Generate(e.to_string()))?;
    // A positive INTEGER: the top bit clear keeps the DER encoding at 16 bytes.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(d) => format!("DNS {d}"),
        GeneralName::IPAddress(b) => format!("IP {}", cidr(b)),
        other => format!("{other:?}"),
    }
}

/// An iPAddress name constraint (address followed by mask, RFC 5280 4.2.1.10) as CIDR text.
fn cidr(bytes: &[u8]) -> String {
    let prefix = |mask: &[u8]| mask.iter().map(|b| b.count_ones()).sum::<u32>();
    match bytes.len() {
        8 => {
            let addr = std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
            format!("{addr}/{}", prefix(&bytes[4..]))
        }
        32 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes[..16]);
            format!("{}/{}", std::net::Ipv6Addr::from(a), prefix(&bytes[16..]))
        }
        _ => hex::encode(bytes),
    }
}

fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    let alg = &cert.public_key().algorithm;
    if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
        if curve.as_ref() == Some(&OID_EC_P256) {
            return "ECDSA P-256".into();
        }
        return "ECDSA".into();
    }
    alg.algorithm.to_id_string()
}

fn hex_pairs(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sha1_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    hex::encode_upper(digest.as_ref())
}

fn backticked(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permitted_domains_cover_sslip_and_custom() {
        assert_eq!(permitted_domains(None), vec!["sslip.io"]);
        assert_eq!(
            permitted_domains(Some("10.1.2.3.sslip.io")),
            vec!["sslip.io"]
        );
        assert_eq!(
            permitted_domains(Some("Lab.Example.test")),
            vec!["sslip.io", "lab.example.test"]
        );
    }

    #[test]
    fn coverage_adds_labels_on_the_left_only() {
        assert!(covered_by("gitea.lab.test", "lab.test"));
        assert!(covered_by("lab.test", "lab.test"));
        assert!(covered_by("LAB.test.", "lab.test"));
        assert!(!covered_by("evil-lab.test", "lab.test"));
        assert!(!covered_by("test", "lab.test"));
    }

    #[test]
    fn cidr_text() {
        assert_eq!(cidr(&[0; 8]), "0.0.0.0/0");
        assert_eq!(cidr(&[10, 0, 0, 0, 255, 0, 0, 0]), "10.0.0.0/8");
        assert_eq!(cidr(&[0; 32]), "::/0");
    }
}
