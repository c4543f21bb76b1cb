//! Workload identity's wire types: what an instance sends for its certificate, and what the
//! control plane's CA answers.

use serde::{Deserialize, Serialize};

/// The trust domain every Flotilla SPIFFE ID is in.
pub const TRUST_DOMAIN: &str = "flotilla";

/// The service name the control plane's own certificate carries.
pub const CONTROL_SERVICE: &str = "control";

/// The SPIFFE ID of a service: `spiffe://flotilla/<service>`.
pub fn spiffe_id(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/{service}")
}

/// The service a SPIFFE ID of this trust domain names; `None` for any other ID.
pub fn service_of(spiffe_id: &str) -> Option<&str> {
    let service = spiffe_id
        .strip_prefix("spiffe://")?
        .strip_prefix(TRUST_DOMAIN)?
        .strip_prefix('/')?;
    (!service.is_empty() && !service.contains('/')).then_some(service)
}

/// `POST /v1/identity/certificates`: an instance's request for a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// A PKCS#10 request (PEM) for the instance's own key.
    pub csr: String,
    /// The service to name, when the operator asks; a service's credential names its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A life shorter than the CA's 24 hours, in seconds (as SPIRE's TTL): rotation drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_seconds: Option<u64>,
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedCertificate {
    /// The certificate (PEM).
    pub certificate: String,
    /// The CA's certificate (PEM), to verify peers with.
    pub ca: String,
    /// The name it carries.
    pub spiffe_id: String,
    /// When it stops being valid, ms since the epoch.
    pub not_after_ms: i64,
}

impl IssuedCertificate {
    /// When it stops being valid.
    pub fn not_after(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(self.not_after_ms).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_of_this_trust_domain_name_a_service() {
        assert_eq!(service_of(&spiffe_id("orders")), Some("orders"));
        assert_eq!(service_of("spiffe://other/orders"), None);
        assert_eq!(service_of("spiffe://flotillax/orders"), None);
        assert_eq!(service_of("spiffe://flotilla/"), None);
        assert_eq!(service_of("spiffe://flotilla/a/b"), None);
        assert_eq!(service_of("https://flotilla/orders"), None);
    }
}
