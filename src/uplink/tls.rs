//! MQTT over TLS: the rustls client configuration (the `ring` provider, the broker verified against the CA
//! file, an optional client certificate) and the naming of a refused handshake, so the log says what an
//! operator must fix and the metrics count it by reason.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::{self, CertificateError, ClientConfig, RootCertStore};

use crate::telemetry::{Counter, Registry};

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn open(p: &Path, what: &str) -> anyhow::Result<BufReader<std::fs::File>> {
    Ok(BufReader::new(
        std::fs::File::open(p).map_err(|e| anyhow::anyhow!("cannot read the {what} {}: {e}", p.display()))?,
    ))
}

/// The client configuration of `files`; errors name the file at fault.
pub fn client_config(files: &TlsFiles) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut open(&files.ca_file, "CA file")?) {
        let cert = cert.map_err(|e| anyhow::anyhow!("CA file {}: {e}", files.ca_file.display()))?;
        roots.add(cert).map_err(|e| anyhow::anyhow!("CA file {}: {e}", files.ca_file.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("CA file {} holds no PEM certificate", files.ca_file.display());
    }
    // rustls deprecates ring's provider only for lacking post-quantum key exchange; aws-lc-rs, which has it,
    // does not build with the boards' plain C cross compilers. Classic ECDHE is what mosquitto offers anyway.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&files.client_cert, &files.client_key) {
        (Some(c), Some(k)) => {
            let chain = rustls_pemfile::certs(&mut open(c, "client certificate")?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("client certificate {}: {e}", c.display()))?;
            if chain.is_empty() {
                anyhow::bail!("client certificate {} holds no PEM certificate", c.display());
            }
            let key = rustls_pemfile::private_key(&mut open(k, "client key")?)
                .map_err(|e| anyhow::anyhow!("client key {}: {e}", k.display()))?
                .ok_or_else(|| anyhow::anyhow!("client key {} holds no PEM private key", k.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| anyhow::anyhow!("client certificate {} and key {}: {e}", c.display(), k.display()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Why the broker's certificate was refused, as counted.
pub const REASONS: [&str; 5] = ["unknown_ca", "expired", "name_mismatch", "not_valid_yet", "other"];

/// The reason label and an operator's explanation of a refused certificate in `e`'s chain of causes; None
/// when the failure was not about the certificate (connection refused, timeout, ...).
pub fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<(&'static str, String)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(explain(r));
        }
        // io::Error hides its payload from `source()`: look inside.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(explain(r));
        }
        cur = err.source();
    }
    None
}

fn explain(e: &rustls::Error) -> (&'static str, String) {
    let rustls::Error::InvalidCertificate(c) = e else {
        return ("other", format!("TLS handshake failed: {e}"));
    };
    match c {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            ("unknown_ca", format!("the broker's certificate is not signed by a CA in [uplink.mqtt] ca_file ({e})"))
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            ("expired", format!("the broker's certificate has expired ({e})"))
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            ("not_valid_yet", format!("the broker's certificate is not valid yet: is this board's clock set? ({e})"))
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            ("name_mismatch", format!("the broker's certificate does not name the host of [uplink] server ({e})"))
        }
        _ => ("other", format!("the broker's certificate was refused ({e})")),
    }
}

/// `ember_uplink_tls_refused_total{reason}`, one counter per reason in `REASONS` order.
pub fn refusal_counters(reg: &Registry) -> Vec<Counter> {
    REASONS
        .iter()
        .map(|r| {
            reg.counter(
                "ember_uplink_tls_refused_total",
                "MQTT connections refused because the broker's TLS certificate failed verification, by reason.",
                &[("reason", r)],
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_inside_io_errors_are_named() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let (reason, why) = refusal(&io).unwrap();
        assert_eq!(reason, "unknown_ca");
        assert!(why.contains("ca_file"), "{why}");
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        );
        assert_eq!(refusal(&io).unwrap().0, "expired");
        assert!(refusal(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).is_none());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let p = std::env::temp_dir().join(format!("ember-tls-empty-{}.pem", std::process::id()));
        std::fs::write(&p, "not a certificate\n").unwrap();
        let files = TlsFiles { ca_file: p.clone(), client_cert: None, client_key: None };
        let e = client_config(&files).unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let _ = std::fs::remove_file(p);
    }
}
