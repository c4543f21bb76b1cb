//! Talking to a service instance directly, past the gateway, as the fleet's own processes do:
//! over mTLS with a workload certificate the operator asks the control plane for, or with no
//! certificate at all (to see the handshake refuse it).

use std::net::SocketAddr;
use std::time::Duration;

use flotilla::http::{HttpClient, HttpError};
use flotilla::mtls::{bootstrap_client_config, enroll, Enrollment, Workload};
use serde_json::Value;

use crate::system::System;

/// A blocking client speaking mTLS to one service's instances.
pub struct Direct {
    runtime: tokio::runtime::Runtime,
    client: HttpClient,
    /// The identity presented, when there is one.
    pub workload: Option<Workload>,
}

/// Why a direct call got no HTTP answer: the handshake or the connection failed.
#[derive(Debug)]
pub struct Refused(pub String);

impl Direct {
    /// A client holding a certificate for `service`, issued on the operator's token, that
    /// expects the peer to be `callee`.
    ///
    /// # Panics
    /// When the system's CA or token cannot be read, or the control plane refuses.
    pub fn as_service(system: &System, service: &str, callee: &str) -> Self {
        let runtime = runtime();
        let data = system.data_dir();
        let enrollment = Enrollment {
            control: format!("http://{}", system.control),
            token: std::fs::read_to_string(data.join("token"))
                .ok()
                .map(|t| t.trim().to_owned()),
            ca_pem: std::fs::read_to_string(data.join("ca.pem")).expect("the system's CA (ca.pem)"),
            lifetime: None,
            service: Some(service.to_owned()),
        };
        let workload = runtime
            .block_on(enroll(&enrollment))
            .expect("a certificate from the control plane");
        let client = HttpClient::with_tls(workload.client_config(Some(callee)), Duration::from_secs(10));
        Self {
            runtime,
            client,
            workload: Some(workload),
        }
    }

    /// A client that trusts the system's CA, expects `callee`, and presents no certificate.
    ///
    /// # Panics
    /// When the system's CA cannot be read.
    pub fn anonymous(system: &System, callee: &str) -> Self {
        let ca = std::fs::read_to_string(system.data_dir().join("ca.pem")).expect("the system's CA (ca.pem)");
        let config = bootstrap_client_config(&ca, callee).expect("a usable CA");
        Self {
            runtime: runtime(),
            client: HttpClient::with_tls(config, Duration::from_secs(10)),
            workload: None,
        }
    }

    /// `GET https://addr/path` with an optional bearer token: the status and JSON body, or
    /// why no HTTP answer came.
    pub fn get(&self, addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, Value), Refused> {
        let url = format!("https://{addr}{path}");
        let answer = self
            .runtime
            .block_on(self.client.send_raw::<()>(http::Method::GET, &url, token, None, None));
        match answer {
            Ok((status, _, _, body)) => Ok((status.as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))),
            Err(HttpError::Status { problem, .. }) => {
                Ok((problem.status, serde_json::to_value(&problem).unwrap_or(Value::Null)))
            }
            Err(err) => Err(Refused(flotilla::http::chain(&err))),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
