//! A flood of sign-ins against a running system, as an attacker sends it: many clients on one
//! machine, each try a made-up account with a wrong password and a new `X-Forwarded-For`
//! (to dodge per-address limits), as fast as the gateway answers. Beside it, from other
//! addresses, a customer signs in with the right password and a client fetches the JWKS at a
//! steady pace: what they see is the figure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procs::http_request_from;
use crate::system::System;

/// What the bystanders saw while the flood ran.
#[derive(Debug, Default, Clone)]
pub struct FloodReport {
    /// Correct sign-ins tried, and how many got a token.
    pub logins: usize,
    /// Of those, answered 200 with a token.
    pub logins_ok: usize,
    /// Each correct sign-in's time to answer.
    pub login_latencies: Vec<Duration>,
    /// JWKS fetches, and how many were 200.
    pub jwks: usize,
    /// Of those, 200.
    pub jwks_ok: usize,
    /// The flood's tries by the status they got (0: no answer).
    pub flood: BTreeMap<u16, usize>,
    /// Statuses the bystanders got other than 200, for the record.
    pub bystander_failures: BTreeMap<String, usize>,
}

impl FloodReport {
    /// The share of correct sign-ins that got a token.
    pub fn login_success(&self) -> f64 {
        self.logins_ok as f64 / self.logins.max(1) as f64
    }

    /// A percentile of the correct sign-ins' latency.
    pub fn login_percentile(&self, p: f64) -> Duration {
        let mut sorted = self.login_latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    }
}

const PASSWORD: &str = "correct horse battery";

fn form(email: &str, password: &str) -> String {
    format!(
        "grant_type=password&client_id=shop-web&username={}&password={}",
        email.replace('@', "%40"),
        password.replace(' ', "+")
    )
}

/// Floods `system` with `flooders` clients for `duration` from 127.0.0.1 while a customer
/// signs in from 127.0.0.2 and a client fetches the JWKS from 127.0.0.3, each every `every`.
///
/// # Panics
/// When the customer cannot sign up or sign in before the flood.
pub fn run(system: &System, flooders: usize, duration: Duration, every: Duration) -> FloodReport {
    let customer: IpAddr = [127, 0, 0, 2].into();
    let keys: IpAddr = [127, 0, 0, 3].into();
    let gateway = system.gateway;
    let json = [("Content-Type", "application/json")];
    let body = format!(r#"{{"email":"bystander@example.com","password":"{PASSWORD}","name":"Bo"}}"#);
    let (status, answer) =
        http_request_from(Some(customer), gateway, "POST", "/api/v1/accounts", &json, &body).expect("sign-up");
    assert!(status < 300, "sign-up: {status} {answer}");
    let form_type = [("Content-Type", "application/x-www-form-urlencoded")];
    let sign_in = form("bystander@example.com", PASSWORD);
    let (status, answer) =
        http_request_from(Some(customer), gateway, "POST", "/oauth2/token", &form_type, &sign_in).expect("sign-in");
    assert_eq!(status, 200, "sign-in before the flood: {answer}");

    let report = Arc::new(Mutex::new(FloodReport::default()));
    let deadline = Instant::now() + duration;
    let mut threads = Vec::new();
    for n in 0..flooders {
        let report = report.clone();
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            let mut seen = BTreeMap::new();
            while Instant::now() < deadline {
                i += 1;
                let forged = format!("10.{}.{}.{}", n, (i >> 8) & 255, i & 255);
                let headers = [
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("X-Forwarded-For", forged.as_str()),
                ];
                let body = form(&format!("nobody-{n}-{i}@example.com"), "a wrong password");
                let status = http_request_from(None, gateway, "POST", "/oauth2/token", &headers, &body)
                    .map_or(0, |(status, _)| status);
                *seen.entry(status).or_insert(0) += 1;
            }
            let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
            for (status, n) in seen {
                *report.flood.entry(status).or_insert(0) += n;
            }
        }));
    }
    for (who, path) in [(customer, "/oauth2/token"), (keys, "/oauth2/jwks")] {
        let report = report.clone();
        let sign_in = sign_in.clone();
        threads.push(std::thread::spawn(move || {
            while Instant::now() < deadline {
                let started = Instant::now();
                let answer = if path == "/oauth2/jwks" {
                    http_request_from(Some(who), gateway, "GET", path, &[], "")
                } else {
                    http_request_from(Some(who), gateway, "POST", path, &form_type, &sign_in)
                };
                let took = started.elapsed();
                let ok = matches!(&answer, Ok((200, body)) if body.contains(if path == "/oauth2/jwks" { "\"keys\"" } else { "access_token" }));
                {
                    let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
                    if path == "/oauth2/jwks" {
                        report.jwks += 1;
                        report.jwks_ok += usize::from(ok);
                    } else {
                        report.logins += 1;
                        report.logins_ok += usize::from(ok);
                        report.login_latencies.push(took);
                    }
                    if !ok {
                        let what = match &answer {
                            Ok((status, body)) => format!("{path} {status} {}", body.chars().take(120).collect::<String>()),
                            Err(e) => format!("{path} {e}"),
                        };
                        *report.bystander_failures.entry(what).or_insert(0) += 1;
                    }
                }
                std::thread::sleep(every.saturating_sub(took));
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
    let report = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report
}
