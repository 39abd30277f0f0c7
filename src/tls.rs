//! The lab CA: generated once with rcgen (ECDSA P-256, name-constrained to the lab's domains),
//! kept in the lab state so browser trust survives `down`/`up`.
//!
//! Architecture invariant: generating and parsing certificates is pure (no I/O besides the OS
//! random source); [`load_or_create`] is the one function that touches the state directory.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose,
    NameConstraints, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use crate::error::Diagnostic;
use crate::redact::Secret;
use crate::state::{LabState, StateError};

/// CA certificate file in the lab state.
pub const CA_CERT_FILE: &str = "ca/ca.crt";
/// CA private key file in the lab state.
pub const CA_KEY_FILE: &str = "ca/ca.key";
/// How long the CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// The parent domain of the default lab hostnames (`<node-ip>.sslip.io`).
pub const SSLIP_DOMAIN: &str = "sslip.io";

/// The lab CA: certificate and key, PEM.
#[derive(Clone, Debug)]
pub struct LabCa {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: Secret,
}

/// Certificate generation or parsing failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the parameters.
    #[error("could not generate the lab CA: {0}")]
    Generate(String),
    /// A stored CA file cannot be parsed.
    #[error("the lab CA in `{path}` cannot be read: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// State I/O failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl Diagnostic for TlsError {
    fn hints(&self) -> Vec<String> {
        match self {
            TlsError::Parse { .. } => vec![
                "run `homelab down --purge` to start over with a new CA (browsers will need to trust it again)".into(),
            ],
            TlsError::State(e) => e.hints(),
            TlsError::Generate(_) => Vec::new(),
        }
    }
}

/// The DNS subtrees the CA may issue for: always `sslip.io` (default hostnames follow the node
/// IP, so a changed IP keeps the same CA), plus a custom domain when one is set.
pub fn permitted_domains(custom_domain: Option<&str>) -> Vec<String> {
    let mut out = vec![SSLIP_DOMAIN.to_string()];
    if let Some(d) = custom_domain
        && !d.ends_with(&format!(".{SSLIP_DOMAIN}"))
        && d != SSLIP_DOMAIN
    {
        out.push(d.to_string());
    }
    out
}

/// Generate a new CA for `lab`, valid from `now` for [`CA_VALIDITY_DAYS`].
pub fn generate(lab: &str, permitted: &[String], now: OffsetDateTime) -> Result<LabCa, TlsError> {
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("homelab CA ({lab})"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "homelab");
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
        excluded_subtrees: Vec::new(),
    });
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(LabCa {
        cert_pem: cert.pem(),
        key_pem: Secret::new(key.serialize_pem()),
    })
}

/// Load the lab CA from the state, or generate and store it (key 0600) on first use.
pub fn load_or_create(state: &LabState, custom_domain: Option<&str>) -> Result<LabCa, TlsError> {
    let cert = state.read(CA_CERT_FILE)?;
    let key = state.read(CA_KEY_FILE)?;
    if let (Some(cert), Some(key)) = (cert, key) {
        let cert_pem = String::from_utf8(cert).map_err(|_| TlsError::Parse {
            path: state.path(CA_CERT_FILE).display().to_string(),
            message: "not UTF-8 PEM".into(),
        })?;
        let key_pem = String::from_utf8(key).map_err(|_| TlsError::Parse {
            path: state.path(CA_KEY_FILE).display().to_string(),
            message: "not UTF-8 PEM".into(),
        })?;
        KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Parse {
            path: state.path(CA_KEY_FILE).display().to_string(),
            message: e.to_string(),
        })?;
        return Ok(LabCa {
            cert_pem,
            key_pem: Secret::new(key_pem),
        });
    }
    let ca = generate(
        state.lab(),
        &permitted_domains(custom_domain),
        OffsetDateTime::now_utc(),
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = LabState::at("t", tmp.path().join("t"));
        let a = load_or_create(&state, None).unwrap();
        let b = load_or_create(&state, None).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem);
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn permitted_domains_cover_sslip_and_custom() {
        assert_eq!(permitted_domains(None), vec!["sslip.io"]);
        assert_eq!(
            permitted_domains(Some("10.1.2.3.sslip.io")),
            vec!["sslip.io"]
        );
        assert_eq!(
            permitted_domains(Some("lab.example.test")),
            vec!["sslip.io", "lab.example.test"]
        );
    }
}
