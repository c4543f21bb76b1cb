//! Who may do what at the control plane, deny by default, as Consul's ACLs: every request
//! but the health checks carries a credential, and each credential names a principal.
//!
//! - **The operator** holds the token in the data dir (`<data-dir>/token`): every right.
//! - **A service instance** holds a credential `up` derives for it (`svc:<service>:<instance>:<mac>`):
//!   it registers, heartbeats and deregisters only instances of its own service; reads the
//!   registry; reads config only for `application` and its own scope, secrets only its own;
//!   publishes only the topic named after its service (or `<service>.*`) and consumes only as
//!   its own group; exports spans.
//! - **A reader** (`read:<name>:<mac>`, Prometheus' service discovery, dashboards): reads the
//!   registry, masked config, traces, dependencies and service discovery; writes nothing.
//!
//! Credentials are HMAC-SHA256 of the principal under a key derived from the operator token,
//! so the control plane checks them without storing any, they outlive its restarts, and a
//! new operator token revokes them all.

use ring::hmac;

/// Who presented the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: every right.
    Operator,
    /// An instance of a service.
    Service {
        /// The service it is an instance of.
        service: String,
        /// Its name (`orders-1`).
        instance: String,
    },
    /// A read-only client.
    Reader {
        /// What it is for (`prometheus`).
        name: String,
    },
}

/// The key credentials are signed with, derived from the operator token.
#[derive(Clone)]
pub struct Keyring {
    operator: String,
    key: hmac::Key,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a name may go inside a credential.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Keyring {
    /// The keyring of an operator token.
    pub fn new(operator: &str) -> Self {
        let derived = ring::digest::digest(
            &ring::digest::SHA256,
            format!("flotilla control-plane credentials v1\0{operator}").as_bytes(),
        );
        Self {
            operator: operator.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// The claim of a signed `<claim>:<hex mac>`, if the mac is this keyring's.
    fn verified<'a>(&self, signed: &'a str) -> Option<&'a str> {
        let (claim, mac) = signed.rsplit_once(':')?;
        let mac = (0..mac.len())
            .step_by(2)
            .map(|i| mac.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()?;
        hmac::verify(&self.key, claim.as_bytes(), &mac).ok()?;
        Some(claim)
    }

    fn sign(&self, claim: &str) -> String {
        format!("{claim}:{}", hex(hmac::sign(&self.key, claim.as_bytes()).as_ref()))
    }

    /// The credential of one instance of `service`; `None` for names that cannot be in one.
    pub fn service(&self, service: &str, instance: &str) -> Option<String> {
        (plain(service) && plain(instance)).then(|| self.sign(&format!("svc:{service}:{instance}")))
    }

    /// A read-only credential named `name`.
    pub fn reader(&self, name: &str) -> Option<String> {
        plain(name).then(|| self.sign(&format!("read:{name}")))
    }

    /// A dashboard session for `principal` until `expires` (Unix seconds): signed like a
    /// credential but under a claim [`Keyring::identify`] never accepts, so a session cookie
    /// is no bearer credential. Services have no sessions.
    pub fn session(&self, principal: &Principal, expires: u64) -> Option<String> {
        let who = match principal {
            Principal::Operator => "operator".to_owned(),
            Principal::Reader { name } => format!("read.{name}"),
            Principal::Service { .. } => return None,
        };
        Some(self.sign(&format!("ui:{who}:{expires}")))
    }

    /// The principal of a session still valid at `now` (Unix seconds), if it is genuine.
    pub fn session_of(&self, session: &str, now: u64) -> Option<Principal> {
        let claim = self.verified(session)?;
        let mut parts = claim.split(':');
        let (Some("ui"), Some(who), Some(expires), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if expires.parse::<u64>().ok()? <= now {
            return None;
        }
        match who.split_once('.') {
            None if who == "operator" => Some(Principal::Operator),
            Some(("read", name)) => Some(Principal::Reader { name: name.to_owned() }),
            _ => None,
        }
    }

    /// The token a session's forms carry (and its scripts send as `x-csrf-token`): a write
    /// without it is refused, whatever cookie the browser sent along.
    pub fn csrf(&self, session: &str) -> String {
        hex(hmac::sign(&self.key, format!("csrf\0{session}").as_bytes()).as_ref())
    }

    /// The principal a presented credential names, if it is genuine.
    pub fn identify(&self, presented: &str) -> Option<Principal> {
        if same_secret(&self.operator, presented) {
            return Some(Principal::Operator);
        }
        let claim = self.verified(presented)?;
        let mut parts = claim.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("svc"), Some(service), Some(instance), None) => Some(Principal::Service {
                service: service.to_owned(),
                instance: instance.to_owned(),
            }),
            (Some("read"), Some(name), None, None) => Some(Principal::Reader { name: name.to_owned() }),
            _ => None,
        }
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a topic or group name is a service's own: its name, or `<service>.<anything>`.
fn owned_by(name: &str, service: &str) -> bool {
    name.strip_prefix(service)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl Principal {
    /// The service this is an instance of, if it is one.
    pub fn service(&self) -> Option<&str> {
        match self {
            Principal::Service { service, .. } => Some(service),
            _ => None,
        }
    }

    /// Whether it may register, heartbeat and deregister instances of `service`.
    pub fn may_register(&self, service: &str) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Service { service: own, .. } => own == service,
            Principal::Reader { .. } => false,
        }
    }

    /// Whether it may read the config of `scope` (`application`: everyone's shared keys).
    pub fn may_read_scope(&self, scope: &str) -> bool {
        match self {
            Principal::Operator | Principal::Reader { .. } => true,
            Principal::Service { service, .. } => scope == service || scope == flotilla_api::config::APPLICATION,
        }
    }

    /// Whether it may see the secret values of `scope` (others see them masked).
    pub fn may_see_secrets(&self, scope: &str) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Service { service, .. } => scope == service,
            Principal::Reader { .. } => false,
        }
    }

    /// Whether it may publish to `topic`: a service owns the topic named after it.
    pub fn may_publish(&self, topic: &str) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Service { service, .. } => owned_by(topic, service),
            Principal::Reader { .. } => false,
        }
    }

    /// Whether it may consume (fetch, ack, nack) as `group`: a service consumes as itself.
    pub fn may_consume(&self, group: &str) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Service { service, .. } => owned_by(group, service),
            Principal::Reader { .. } => false,
        }
    }

    /// Whether it may send spans.
    pub fn may_export(&self) -> bool {
        !matches!(self, Principal::Reader { .. })
    }

    /// Whether it may read what the system observed (traces, dependencies, event logs, the
    /// whole config listing, service discovery).
    pub fn may_observe(&self) -> bool {
        !matches!(self, Principal::Service { .. })
    }

    /// Whether it is the operator.
    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_name_their_principal_until_they_expire_and_are_no_credentials() {
        let ring = Keyring::new("operator-token");
        let reader = Principal::Reader { name: "ana".into() };
        let session = ring.session(&reader, 1_000).unwrap();
        assert_eq!(ring.session_of(&session, 999), Some(reader));
        assert_eq!(ring.session_of(&session, 1_000), None, "expired");
        assert_eq!(ring.identify(&session), None, "a session is not a bearer credential");
        let operator = ring.session(&Principal::Operator, 1_000).unwrap();
        assert_eq!(ring.session_of(&operator, 5), Some(Principal::Operator));
        // Another control plane's, or one edited by hand, is nothing.
        assert_eq!(Keyring::new("other").session_of(&operator, 5), None);
        assert_eq!(ring.session_of(&operator.replace("1000", "9999"), 5), None);
        let service = Principal::Service {
            service: "orders".into(),
            instance: "orders-1".into(),
        };
        assert_eq!(ring.session(&service, 1_000), None, "services have no sessions");
        // The CSRF token is the session's own.
        assert_ne!(ring.csrf(&session), ring.csrf(&operator));
        assert_eq!(ring.csrf(&session), ring.csrf(&session));
    }

    #[test]
    fn credentials_name_their_principal_and_nothing_else_passes() {
        let ring = Keyring::new("operator-token");
        assert_eq!(ring.identify("operator-token"), Some(Principal::Operator));
        let orders = ring.service("orders", "orders-1").unwrap();
        assert_eq!(
            ring.identify(&orders),
            Some(Principal::Service {
                service: "orders".into(),
                instance: "orders-1".into()
            })
        );
        let reader = ring.reader("prometheus").unwrap();
        assert_eq!(
            ring.identify(&reader),
            Some(Principal::Reader {
                name: "prometheus".into()
            })
        );
        // Forged: another service's name on orders' MAC; another operator's keyring.
        let forged = orders.replacen("svc:orders", "svc:payments", 1);
        assert_eq!(ring.identify(&forged), None);
        assert_eq!(Keyring::new("another").identify(&orders), None);
        assert_eq!(ring.identify("operator-tokeN"), None);
        assert_eq!(ring.identify("svc:orders:orders-1:zz"), None);
        assert_eq!(ring.service("or:ders", "x"), None);
    }

    #[test]
    fn a_service_may_do_its_own_things_only() {
        let orders = Principal::Service {
            service: "orders".into(),
            instance: "orders-1".into(),
        };
        assert!(orders.may_register("orders") && !orders.may_register("payments"));
        assert!(orders.may_read_scope("orders") && orders.may_read_scope("application"));
        assert!(!orders.may_read_scope("identity"));
        assert!(orders.may_see_secrets("orders") && !orders.may_see_secrets("application"));
        assert!(orders.may_publish("orders") && orders.may_publish("orders.audit"));
        assert!(!orders.may_publish("ordersx") && !orders.may_publish("payments"));
        assert!(orders.may_consume("orders") && !orders.may_consume("payments"));
        assert!(orders.may_export() && !orders.may_observe());
        let reader = Principal::Reader { name: "p".into() };
        assert!(reader.may_observe() && !reader.may_register("orders") && !reader.may_publish("orders"));
        assert!(!reader.may_see_secrets("orders") && reader.may_read_scope("identity"));
    }
}
