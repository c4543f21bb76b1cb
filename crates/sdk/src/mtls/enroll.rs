//! Getting a certificate from the control plane's CA and keeping it renewed: a fresh key
//! each time (it never leaves the process), a CSR, and the instance's own credential to say
//! which service it speaks for.

use std::time::{Duration, SystemTime};

use flotilla_api::identity::{CertificateRequest, IssuedCertificate, CONTROL_SERVICE};
use http::Method;

use super::{MtlsError, Workload};
use crate::http::{HttpClient, HttpError};

/// How long a starting process keeps asking a control plane it cannot reach for its first
/// certificate: pods start together, and a control plane a few seconds late should cost a
/// wait, not a crash and the kubelet's back-off.
const FIRST_CERTIFICATE_WITHIN: Duration = Duration::from_secs(60);

/// How an instance asks for its certificate.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The control plane's base URL (`https://…` in a fleet).
    pub control: String,
    /// The instance's credential.
    pub token: Option<String>,
    /// The CA's certificate (PEM), to check the control plane before there is a certificate.
    pub ca_pem: String,
    /// A life shorter than the CA's day (rotation drills); `None` for the CA's.
    pub lifetime: Option<Duration>,
    /// The service to name, when the credential is the operator's (tests, tools).
    pub service: Option<String>,
}

impl Enrollment {
    async fn issue(&self, client: &HttpClient) -> Result<(IssuedCertificate, Vec<u8>), MtlsError> {
        let issue = |e: &dyn std::fmt::Display| MtlsError::Issue(e.to_string());
        let (key, csr) = key_and_csr()?;
        let request = CertificateRequest {
            csr,
            service: self.service.clone(),
            lifetime_seconds: self.lifetime.map(|l| l.as_secs().max(1)),
        };
        let url = format!("{}/v1/identity/certificates", crate::http::base_url(&self.control));
        let issued: IssuedCertificate = client
            .send(Method::POST, &url, self.token.as_deref(), Some(&request), None)
            .await
            .map_err(|e| match &e {
                HttpError::Transport { .. } | HttpError::Timeout { .. } => MtlsError::Unreachable(e.to_string()),
                HttpError::Status { problem, .. } if problem.status == 503 => MtlsError::Unreachable(e.to_string()),
                _ => issue(&e),
            })?
            .body;
        Ok((issued, key))
    }
}

/// A fresh key (PKCS#8 DER, ECDSA P-256; it never leaves the process) and a certificate
/// signing request for it (PEM) that names nothing: the CA names the holder by its credential.
pub fn key_and_csr() -> Result<(Vec<u8>, String), MtlsError> {
    let failed = |e: rcgen::Error| MtlsError::Issue(format!("making a key and its CSR: {e}"));
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .and_then(|request| request.pem())
        .map_err(failed)?;
    Ok((key.serialize_der(), csr))
}

/// The instance's first certificate: the control plane is checked against the CA file
/// (it must present `spiffe://flotilla/control`), the instance presents nothing yet.
pub async fn enroll(enrollment: &Enrollment) -> Result<Workload, MtlsError> {
    let config = super::bootstrap_client_config(&enrollment.ca_pem, CONTROL_SERVICE)?;
    let client = HttpClient::with_tls(config, Duration::from_secs(5)).failing_over(&enrollment.control);
    let (issued, key) = enrollment.issue(&client).await?;
    let workload = Workload::new(&issued.certificate, key, &issued.ca, issued.not_after())?;
    tracing::info!(service = %workload.service(), spiffe_id = %issued.spiffe_id, "workload certificate issued");
    Ok(workload)
}

/// Renews `workload`'s certificate at two thirds of its life, for as long as the process
/// runs: a failed renewal is tried again (1 s doubling to 30 s) while the certificate in
/// force is still valid. Handshakes from then on take the new certificate; connections
/// already open keep theirs.
pub async fn keep_renewed(workload: Workload, enrollment: Enrollment) {
    let client = HttpClient::with_tls(workload.client_config(Some(CONTROL_SERVICE)), Duration::from_secs(5))
        .failing_over(&enrollment.control);
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = workload
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let renewed = match enrollment.issue(&client).await {
            Ok((issued, key)) => workload.renew(&issued.certificate, key, &issued.ca, issued.not_after()),
            Err(err) => Err(err),
        };
        match renewed {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                tracing::debug!(service = %workload.service(), "workload certificate renewed");
            }
            Err(err) => {
                let left = workload
                    .not_after()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tracing::warn!(error = %err, ?left, "renewing the workload certificate failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The identity the supervisor (or a cluster's bootstrap secret) set up for this process:
/// with `FLOTILLA_CA_FILE` set, a certificate from the control plane at `control` for the
/// service `token` speaks for, installed as the process's identity and kept renewed.
/// `None` when the variable is unset (a process on its own, plain HTTP).
pub async fn enroll_from_env(control: Option<&str>, token: Option<&str>) -> Result<Option<Workload>, MtlsError> {
    use flotilla_api::env;
    let Some(ca_file) = std::env::var_os(env::CA_FILE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ca_pem = std::fs::read_to_string(&ca_file).map_err(|e| MtlsError::Pem {
        what: "the CA file (FLOTILLA_CA_FILE)",
        reason: format!("{}: {e}", std::path::Path::new(&ca_file).display()),
    })?;
    let lifetime = match std::env::var(env::CERT_LIFETIME) {
        Ok(text) if !text.is_empty() => Some(humantime::parse_duration(&text).map_err(|e| MtlsError::Pem {
            what: "FLOTILLA_CERT_LIFETIME",
            reason: e.to_string(),
        })?),
        _ => None,
    };
    let control =
        control.ok_or_else(|| MtlsError::Issue("FLOTILLA_CA_FILE is set but no control plane is named".into()))?;
    let enrollment = Enrollment {
        control: control.to_owned(),
        token: token.map(str::to_owned),
        ca_pem,
        lifetime,
        service: None,
    };
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(250);
    let workload = loop {
        match enroll(&enrollment).await {
            Err(MtlsError::Unreachable(why)) if started.elapsed() < FIRST_CERTIFICATE_WITHIN => {
                tracing::warn!(control = %enrollment.control, error = %why, retry_in = ?backoff, "the control plane is not answering yet; asking again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => break other?,
        }
    };
    super::install(workload.clone());
    tokio::spawn(keep_renewed(workload.clone(), enrollment));
    Ok(Some(workload))
}
