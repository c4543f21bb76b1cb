//! The checks of a handshake: a caller's certificate against the CA and the allow list (on
//! the server), a server's against the CA and the service meant (on the client), and the
//! certificate each side presents, read from the workload at every handshake.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{Callers, Trust, Workload};

/// The service a certificate's only SPIFFE ID names (`spiffe://flotilla/<service>`).
pub fn service_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let names = parsed.subject_alternative_name().ok()??;
    let mut uris = names.value.general_names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let (first, more) = (uris.next()?, uris.next());
    if more.is_some() {
        return None;
    }
    flotilla_api::identity::service_of(first).map(str::to_owned)
}

/// The workload's certificate in force, for both sides of a handshake.
#[derive(Debug)]
pub(super) struct CurrentKey(pub Workload);

impl ResolvesServerCert for CurrentKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key.clone())
    }
}

impl ResolvesClientCert for CurrentKey {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server's check of its caller: a chain to the CA (by webpki, with the client-auth usage),
/// then the service it names against the allow list. A refused caller gets the
/// `access_denied` alert and never reaches HTTP.
#[derive(Debug)]
pub(super) struct CallerVerifier {
    workload: Workload,
    callers: Callers,
}

impl CallerVerifier {
    pub(super) fn new(workload: Workload, callers: Callers) -> Self {
        Self { workload, callers }
    }

    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        let material = self.workload.material();
        if self.callers.requires_certificate() {
            material.required.clone()
        } else {
            material.optional.clone()
        }
    }
}

impl ClientCertVerifier for CallerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.callers.requires_certificate()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: there is one CA, and the hints would have to outlive a renewal.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner().verify_client_cert(end_entity, intermediates, now)?;
        let Some(service) = service_of(end_entity) else {
            tracing::warn!("refused a caller whose certificate names no Flotilla service");
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        };
        if !self.callers.admits(&service) {
            tracing::warn!(caller = %service, allowed = ?self.callers.services(), "refused a caller not on this service's allow list");
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// A client's check of the server it reached: a chain to the CA (server-auth usage) and a
/// SPIFFE ID naming the service it meant to call. The address (an IP from the registry) is
/// not what is checked: the identity is, as with spiffe-rustls.
pub(super) struct CalleeVerifier {
    trust: Trust,
    callee: Option<String>,
}

impl std::fmt::Debug for CalleeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalleeVerifier").field("callee", &self.callee).finish()
    }
}

impl CalleeVerifier {
    pub(super) fn new(trust: Trust, callee: Option<String>) -> Self {
        Self { trust, callee }
    }
}

impl ServerCertVerifier for CalleeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        tokio_rustls::rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.trust.roots(),
            intermediates,
            now,
            super::provider().signature_verification_algorithms.all,
        )?;
        match (service_of(end_entity), &self.callee) {
            (Some(service), Some(callee)) if &service == callee => Ok(ServerCertVerified::assertion()),
            (Some(_), None) => Ok(ServerCertVerified::assertion()),
            (service, callee) => {
                tracing::warn!(reached = ?service, meant = ?callee, "the server is not the service meant");
                Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &super::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &super::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        super::provider().signature_verification_algorithms.supported_schemes()
    }
}
