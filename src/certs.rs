//! Certificates for the webhook: a CA and a serving certificate signed by it.
//!
//! `fluxgate certs` writes them for a real install without cert-manager; `serve` without
//! `--tls-cert`/`--tls-key` makes a development pair under `certs/`. The private keys are
//! written with mode 0600 and never logged.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot make certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a valid DNS name for a certificate")]
    BadName(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A CA and a serving certificate, PEM-encoded.
pub struct Bundle {
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Bundle {
    /// The `caBundle` value of a webhook configuration: the CA certificate, base64.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_cert_pem)
    }
}

/// Paths of a written bundle.
pub struct Written {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA and a serving certificate for `dns` names and `ips` (valid ten years; rotate with
/// cert-manager in production).
pub fn generate(dns: &[String], ips: &[IpAddr]) -> Result<Bundle> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = name("fluxgate webhook CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(dns.first().map_or("fluxgate", String::as_str));
    for d in dns {
        let ia5 = d.clone().try_into().map_err(|_| Error::BadName(d.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.signed_by(&key, &ca)?;
    Ok(Bundle { ca_cert_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "fluxgate");
    dn
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (the names of a Kubernetes TLS Secret) into `dir`.
pub fn write(bundle: &Bundle, dir: &Path) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_path_buf(), source })?;
    let written = Written { ca_cert: dir.join("ca.crt"), cert: dir.join("tls.crt"), key: dir.join("tls.key") };
    write_file(&written.ca_cert, &bundle.ca_cert_pem, 0o644)?;
    write_file(&written.cert, &bundle.cert_pem, 0o644)?;
    write_file(&written.key, &bundle.key_pem, 0o600)?;
    Ok(written)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| Error::Write { path: path.to_path_buf(), source };
    // Write beside and rename, so a reader polling the file never sees half a key.
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_has_a_ca_and_a_leaf() {
        let b = generate(&["fluxgate.fluxgate-system.svc".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        assert!(b.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(b.key_pem.contains("PRIVATE KEY"));
        let decoded = base64::engine::general_purpose::STANDARD.decode(b.ca_bundle()).unwrap();
        assert_eq!(decoded, b.ca_cert_pem.as_bytes());
    }

    #[test]
    fn key_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let b = generate(&["localhost".into()], &[]).unwrap();
        let w = write(&b, dir.path()).unwrap();
        let mode = std::fs::metadata(&w.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
