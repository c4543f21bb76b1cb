//! The control plane's certificate authority, the root of workload identity (mTLS): it signs
//! each instance's key into a short-lived certificate whose only name is the SPIFFE ID of the
//! service its credential speaks for (`spiffe://flotilla/<service>`), whatever the request
//! asked for. The CA's key stays in the data dir (0600) and never leaves the control plane.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// How long an instance's certificate lives: renewed at two thirds of it.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How long the CA's own certificate lives.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Clock skew allowed for a certificate that has just been issued.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA's files could not be read or written.
    #[error("the certificate authority's {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA's files do not hold a usable key or certificate.
    #[error("the certificate authority in {0} is unusable: {1}")]
    Unusable(String, String),
    /// The certificate signing request is malformed or its signature is wrong.
    #[error("the certificate signing request: {0}")]
    BadRequest(String),
    /// The name is not one a certificate can carry.
    #[error("`{0}` is not a service name a certificate can carry")]
    BadName(String),
    /// Signing failed.
    #[error("signing: {0}")]
    Signing(String),
}

pub use flotilla_api::identity::{spiffe_id, IssuedCertificate as Issued};

/// The certificate authority.
pub struct Authority {
    certificate: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority(..)")
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Flotilla workload CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_LIFETIME).into();
    params
}

impl Authority {
    /// A new CA whose key lives only in memory (tests, a control plane without a data dir).
    pub fn ephemeral() -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Signing(e.to_string()))?;
        let certificate = ca_params()
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let pem = certificate.pem();
        Ok(Self { certificate, key, pem })
    }

    /// The CA kept in `dir` (`ca.key`, `ca.pem`, both 0600), made on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.pem"));
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CaError::File { path, source }
        };
        if !key_path.exists() {
            let made = Self::ephemeral()?;
            flotilla::data_dir::create_private(&key_path, made.key.serialize_pem().as_bytes())
                .map_err(io(&key_path))?;
            flotilla::data_dir::create_private(&cert_path, made.pem.as_bytes()).map_err(io(&cert_path))?;
            return Ok(made);
        }
        let unusable = |e: String| CaError::Unusable(dir.display().to_string(), e);
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| unusable(e.to_string()))?;
        // rcgen signs with the issuer's parameters: the stored certificate's, under its key.
        let params = CertificateParams::from_ca_cert_pem(&pem).map_err(|e| unusable(e.to_string()))?;
        let certificate = params.self_signed(&key).map_err(|e| unusable(e.to_string()))?;
        Ok(Self { certificate, key, pem })
    }

    /// The CA's certificate (PEM): what every instance verifies its peers against.
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// Signs the key of `csr_pem` into a certificate for `service`, valid for `lifetime`
    /// (at most [`LEAF_LIFETIME`]). The only name it carries is the service's SPIFFE ID; the
    /// request's own names are ignored, as its holder is known by its credential.
    pub fn issue(&self, service: &str, csr_pem: &str, lifetime: Duration) -> Result<Issued, CaError> {
        if service.is_empty()
            || service.len() > 63
            || !service
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(CaError::BadName(service.to_owned()));
        }
        let request =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::BadRequest(e.to_string()))?;
        let spiffe = spiffe_id(service);
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, service);
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::URI(
            spiffe
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Signing(e.to_string()))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        let not_after = now + lifetime.min(LEAF_LIFETIME);
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        let signed = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.certificate, &self.key)
        .map_err(|e| CaError::Signing(e.to_string()))?;
        let not_after_ms = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(Issued {
            certificate: signed.pem(),
            ca: self.pem.clone(),
            spiffe_id: spiffe,
            not_after_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    fn csr(names: Vec<String>) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let request = CertificateParams::new(names).unwrap().serialize_request(&key).unwrap();
        (request.pem().unwrap(), key)
    }

    fn der(pem_text: &str) -> Vec<u8> {
        pem::parse(pem_text).unwrap().into_contents()
    }

    #[test]
    fn an_instance_gets_a_day_long_certificate_naming_only_its_service() {
        let ca = Authority::ephemeral().unwrap();
        let (request, key) = csr(vec!["payments.internal".into(), "localhost".into()]);
        let issued = ca
            .issue("orders", &request, Duration::from_secs(7 * 24 * 3600))
            .unwrap();
        assert_eq!(issued.spiffe_id, "spiffe://flotilla/orders");
        let leaf_der = der(&issued.certificate);
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        let names: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::URI(uri) => format!("uri:{uri}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            ["uri:spiffe://flotilla/orders"],
            "the request's own names are ignored"
        );
        let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert!(
            lifetime <= (LEAF_LIFETIME + BACKDATE).as_secs() as i64,
            "at most a day: {lifetime}"
        );
        assert_eq!(
            leaf.public_key().raw,
            key.public_key_der().as_slice(),
            "the requester's key"
        );
        // Signed by the CA.
        let ca_der = der(ca.ca_pem());
        let (_, root) = X509Certificate::from_der(&ca_der).unwrap();
        assert!(leaf.verify_signature(Some(root.public_key())).is_ok());
        assert!(!leaf.is_ca());
        // Names a certificate cannot carry, and a request that is not one, are refused.
        assert!(matches!(
            ca.issue("Orders/../x", &request, LEAF_LIFETIME),
            Err(CaError::BadName(_))
        ));
        assert!(matches!(
            ca.issue("orders", "not a csr", LEAF_LIFETIME),
            Err(CaError::BadRequest(_))
        ));
    }

    #[test]
    fn the_ca_survives_a_restart_and_its_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_create(dir.path()).unwrap();
        let again = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_pem(), again.ca_pem());
        let (request, _) = csr(vec![]);
        let issued = again.issue("catalog", &request, LEAF_LIFETIME).unwrap();
        let leaf_der = der(&issued.certificate);
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        let ca_der = der(first.ca_pem());
        let (_, root) = X509Certificate::from_der(&ca_der).unwrap();
        assert!(
            leaf.verify_signature(Some(root.public_key())).is_ok(),
            "the reloaded CA signs as the first did"
        );
        for file in ["ca.key", "ca.pem"] {
            let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
}
