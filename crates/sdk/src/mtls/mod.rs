//! Workload identity and mutual TLS between Flotilla processes.
//!
//! Each instance holds a short-lived certificate from the control plane's CA whose only name
//! is its service's SPIFFE ID (`spiffe://flotilla/<service>`). Servers ask every caller for
//! its certificate and refuse, in the handshake, one whose service is not on their allow list
//! ([`Callers`]); clients check that the peer they reached is the service they meant. The
//! certificate is renewed at two thirds of its life ([`enroll`]): new handshakes take the new
//! one, connections already open keep theirs, so a rotation drops nothing. As in Linkerd and
//! SPIRE, identity is the service, not the address.

mod enroll;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use self::enroll::{enroll, enroll_from_env, keep_renewed, key_and_csr, Enrollment};
pub use self::verify::service_of;
use self::verify::{CalleeVerifier, CallerVerifier, CurrentKey};

/// Why a workload identity could not be had or used.
#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    /// A PEM document holds nothing usable.
    #[error("{what}: {reason}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// Why it is unusable.
        reason: String,
    },
    /// rustls refused the certificate, key or roots.
    #[error("TLS: {0}")]
    Tls(String),
    /// The certificate names no service of the trust domain.
    #[error("the certificate names no `spiffe://flotilla/<service>`")]
    NoIdentity,
    /// The control plane did not issue a certificate.
    #[error("asking the control plane for a certificate: {0}")]
    Issue(String),
    /// The control plane could not be reached (or is not ready): worth asking again.
    #[error("asking the control plane for a certificate: {0}")]
    Unreachable(String),
}

/// The crypto every Flotilla TLS configuration uses (ring, as the rest of the tree).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .clone()
}

/// What a handshake needs now: the instance's certificate and key, and the CA to check peers
/// against. Swapped whole on renewal.
struct Material {
    /// The service the certificate names.
    service: String,
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    /// Chains checked against `roots`; a certificate required.
    required: Arc<dyn tokio_rustls::rustls::server::danger::ClientCertVerifier>,
    /// The same, for listeners where a certificate is welcome but not needed.
    optional: Arc<dyn tokio_rustls::rustls::server::danger::ClientCertVerifier>,
    issued: SystemTime,
    not_after: SystemTime,
}

impl Material {
    fn new(
        cert_pem: &str,
        key: PrivateKeyDer<'static>,
        ca_pem: &str,
        not_after: SystemTime,
    ) -> Result<Self, MtlsError> {
        let pem = |what: &'static str| {
            move |e: rustls_pki_types::pem::Error| MtlsError::Pem {
                what,
                reason: e.to_string(),
            }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(pem("the certificate"))?;
        let leaf = chain.first().ok_or(MtlsError::Pem {
            what: "the certificate",
            reason: "no certificate in it".into(),
        })?;
        let service = verify::service_of(leaf).ok_or(MtlsError::NoIdentity)?;
        let roots = roots(ca_pem)?;
        let provider = provider();
        let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| MtlsError::Tls(e.to_string()))?;
        let roots = Arc::new(roots);
        let builder = || WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        let required = builder().build().map_err(|e| MtlsError::Tls(e.to_string()))?;
        let optional = builder()
            .allow_unauthenticated()
            .build()
            .map_err(|e| MtlsError::Tls(e.to_string()))?;
        Ok(Self {
            service,
            key: Arc::new(key),
            roots,
            required,
            optional,
            issued: SystemTime::now(),
            not_after,
        })
    }
}

/// This instance's workload identity: its service, and the certificate in force. Cheap to
/// clone; every clone sees renewals.
#[derive(Clone)]
pub struct Workload {
    inner: Arc<WorkloadInner>,
}

struct WorkloadInner {
    service: String,
    material: ArcSwap<Material>,
    renewals: AtomicU64,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl Workload {
    /// An identity from a certificate (PEM, leaf first), its key (PKCS#8 DER) and the CA
    /// (PEM); the service is the one the certificate names.
    pub fn new(cert_pem: &str, key_pkcs8: Vec<u8>, ca_pem: &str, not_after: SystemTime) -> Result<Self, MtlsError> {
        let material = Material::new(cert_pem, PrivateKeyDer::Pkcs8(key_pkcs8.into()), ca_pem, not_after)?;
        Ok(Self {
            inner: Arc::new(WorkloadInner {
                service: material.service.clone(),
                material: ArcSwap::from_pointee(material),
                renewals: AtomicU64::new(0),
            }),
        })
    }

    /// Puts a renewed certificate in force for every handshake from now on. It must name the
    /// same service.
    pub fn renew(
        &self,
        cert_pem: &str,
        key_pkcs8: Vec<u8>,
        ca_pem: &str,
        not_after: SystemTime,
    ) -> Result<(), MtlsError> {
        let material = Material::new(cert_pem, PrivateKeyDer::Pkcs8(key_pkcs8.into()), ca_pem, not_after)?;
        if material.service != self.service() {
            return Err(MtlsError::NoIdentity);
        }
        self.inner.material.store(Arc::new(material));
        self.inner.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The service this instance speaks for.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// How many times the certificate was renewed.
    pub fn renewals(&self) -> u64 {
        self.inner.renewals.load(Ordering::Relaxed)
    }

    /// When the certificate in force stops being valid.
    pub fn not_after(&self) -> SystemTime {
        self.inner.material.load().not_after
    }

    /// When the certificate in force should be replaced: two thirds into its life.
    pub fn renew_at(&self) -> SystemTime {
        let material = self.inner.material.load();
        let life = material
            .not_after
            .duration_since(material.issued)
            .unwrap_or(Duration::ZERO);
        material.issued + life * 2 / 3
    }

    fn material(&self) -> Arc<Material> {
        self.inner.material.load_full()
    }

    /// A server configuration that asks every caller for its certificate and refuses, in the
    /// handshake, a caller `callers` does not allow. ALPN offers HTTP/2 and HTTP/1.1.
    pub fn server_config(&self, callers: Callers) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .with_client_cert_verifier(Arc::new(CallerVerifier::new(self.clone(), callers)))
            .with_cert_resolver(Arc::new(CurrentKey(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client configuration that presents this instance's certificate and accepts only a
    /// peer whose certificate names `callee` (any service of the trust domain when `None`:
    /// addresses that came from the registry, which only that service may register in).
    pub fn client_config(&self, callee: Option<&str>) -> ClientConfig {
        client_builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CalleeVerifier::new(
                Trust::Workload(self.clone()),
                callee.map(str::to_owned),
            )))
            .with_client_cert_resolver(Arc::new(CurrentKey(self.clone())))
    }
}

/// Where a client's trust in a server comes from: the workload's CA, or (before it has a
/// certificate) the CA file it was given.
#[derive(Clone)]
enum Trust {
    Workload(Workload),
    Roots(Arc<RootCertStore>),
}

impl Trust {
    fn roots(&self) -> Arc<RootCertStore> {
        match self {
            Trust::Workload(workload) => workload.material().roots.clone(),
            Trust::Roots(roots) => roots.clone(),
        }
    }
}

/// A client configuration for an instance that has no certificate yet: it checks that the
/// server is `callee` under the CA in `ca_pem`, and presents nothing.
pub fn bootstrap_client_config(ca_pem: &str, callee: &str) -> Result<ClientConfig, MtlsError> {
    Ok(client_builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CalleeVerifier::new(
            Trust::Roots(Arc::new(roots(ca_pem)?)),
            Some(callee.to_owned()),
        )))
        .with_no_client_auth())
}

/// The CA certificates of `ca_pem`, at least one.
fn roots(ca_pem: &str) -> Result<RootCertStore, MtlsError> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| MtlsError::Pem {
            what: "the CA certificate",
            reason: e.to_string(),
        })?;
        roots.add(ca).map_err(|e| MtlsError::Tls(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(MtlsError::Pem {
            what: "the CA certificate",
            reason: "no certificate in it".into(),
        });
    }
    Ok(roots)
}

/// Every Flotilla client configuration starts here: ring, TLS 1.3 only.
fn client_builder() -> tokio_rustls::rustls::ConfigBuilder<ClientConfig, tokio_rustls::rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
}

/// A client configuration that trusts nothing: `https://` fails its handshake. For a
/// process without a workload identity, whose clients speak plain HTTP.
pub fn untrusting_client_config() -> ClientConfig {
    client_builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// Which services may call a server: checked in every handshake, changed live.
#[derive(Clone)]
pub struct Callers {
    allowed: Arc<ArcSwap<Allowed>>,
    /// Services let through the handshake beside `allowed` for the platform's own routes
    /// only (`/flotilla/…`: the control plane reading the sagas); the runtime keeps them off
    /// the service's routes. Not changed by [`Callers::set`].
    platform: Arc<BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// Only these services, a certificate required.
    Services(BTreeSet<String>),
    /// A certificate welcome but not needed (the control plane: credentials decide there).
    Anyone,
}

impl std::fmt::Debug for Callers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Callers({:?})", self.allowed.load())
    }
}

/// On a list of callers: every workload of this system's CA (a certificate is still required),
/// for a service every other one needs, such as the issuer of the tokens they all check.
pub const ANY_SERVICE: &str = "*";

impl Callers {
    /// Only these services may call.
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(services: I) -> Self {
        Self {
            allowed: Arc::new(ArcSwap::from_pointee(Allowed::Services(
                services.into_iter().map(Into::into).collect(),
            ))),
            platform: Arc::default(),
        }
    }

    /// These callers, and beside them `services` for the platform's routes only: admitted in
    /// the handshake, fenced in at HTTP by the runtime.
    pub fn admitting_platform<I: IntoIterator<Item = S>, S: Into<String>>(mut self, services: I) -> Self {
        self.platform = Arc::new(services.into_iter().map(Into::into).collect());
        self
    }

    /// Whether the handshake lets `service` in: a caller of the service, or of its platform
    /// routes.
    pub fn admits(&self, service: &str) -> bool {
        self.allows(service) || self.platform.contains(service)
    }

    /// Anyone may connect; a certificate presented is checked and its service told to the
    /// handler ([`Peer`]). For a listener whose requests carry their own credentials.
    pub fn anyone() -> Self {
        Self {
            allowed: Arc::new(ArcSwap::from_pointee(Allowed::Anyone)),
            platform: Arc::default(),
        }
    }

    /// Replaces the list for handshakes from now on (a config change).
    pub fn set<I: IntoIterator<Item = S>, S: Into<String>>(&self, services: I) {
        self.allowed.store(Arc::new(Allowed::Services(
            services.into_iter().map(Into::into).collect(),
        )));
    }

    /// Whether `service` may call.
    pub fn allows(&self, service: &str) -> bool {
        match &**self.allowed.load() {
            Allowed::Services(services) => services.contains(service) || services.contains(ANY_SERVICE),
            Allowed::Anyone => true,
        }
    }

    /// The services on the list (empty for [`Callers::anyone`]).
    pub fn services(&self) -> Vec<String> {
        match &**self.allowed.load() {
            Allowed::Services(services) => services.iter().cloned().collect(),
            Allowed::Anyone => Vec::new(),
        }
    }

    fn requires_certificate(&self) -> bool {
        matches!(&**self.allowed.load(), Allowed::Services(_))
    }
}

/// Who is on the other end of a connection, put in every request's extensions by
/// [`crate::http::serve`]: whether it came over TLS, and the service its certificate names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The connection is TLS.
    pub tls: bool,
    /// The service the caller's certificate names, when it presented one.
    pub service: Option<Arc<str>>,
}

static INSTALLED: OnceLock<Workload> = OnceLock::new();

/// Makes `workload` this process's identity: every client made after this
/// ([`crate::http::HttpClient`], the service clients' pools) presents it, and the runtime
/// serves mTLS with it. Done once, first thing; a second call is ignored.
pub fn install(workload: Workload) {
    let _ = INSTALLED.set(workload);
}

/// This process's identity, when it has one.
pub fn installed() -> Option<&'static Workload> {
    INSTALLED.get()
}

/// The connector every pooled client sends through: plain `http://`, and `https://` with this
/// process's identity (checking that the peer is `callee`, or any workload when `None`).
/// Without an identity, `https://` fails the handshake: there is nothing to trust.
pub fn connector(
    workload: Option<&Workload>,
    callee: Option<&str>,
    connect_timeout: Duration,
    http2: bool,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let config = match workload {
        Some(workload) => workload.client_config(callee),
        None => untrusting_client_config(),
    };
    connector_with(config, connect_timeout, http2)
}

/// [`connector`] over a given client configuration (the bootstrap call, tests).
pub fn connector_with(
    config: ClientConfig,
    connect_timeout: Duration,
    http2: bool,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    }
}
