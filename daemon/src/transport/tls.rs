//! The TLS identity: the certificate and key compiled in from `certs/`,
//! or a pair given with `--cert`/`--key` for deployments that rotate keys.

use std::path::Path;

use super::TransportError;

const COMPILED_IN_CERT: &str = include_str!("../../../certs/cert.pem");
const COMPILED_IN_KEY: &str = include_str!("../../../certs/key.pem");

/// A PEM certificate (also the trust anchor peers verify against) and its
/// PEM private key.
#[derive(Clone)]
pub struct TlsIdentity {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// The pair from `certs/`, compiled into the binary.
    pub fn compiled_in() -> Self {
        Self {
            cert_pem: COMPILED_IN_CERT.to_owned(),
            key_pem: COMPILED_IN_KEY.to_owned(),
        }
    }

    /// Loads a PEM certificate and key from files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TransportError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TransportError::ReadIdentity {
                what: path.display().to_string(),
                source,
            })
        };
        let identity = Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        if !identity.cert_pem.contains("BEGIN CERTIFICATE") {
            return Err(TransportError::Tls(format!(
                "{} is not a PEM certificate",
                cert.display()
            )));
        }
        if !identity.key_pem.contains("PRIVATE KEY") {
            return Err(TransportError::Tls(format!(
                "{} is not a PEM private key",
                key.display()
            )));
        }
        Ok(identity)
    }
}
