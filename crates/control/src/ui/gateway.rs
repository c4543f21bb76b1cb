//! A service's routes as each gateway instance holds them: path, breaker state, and each
//! endpoint with its in-flight requests, round-trip time and whether outlier detection ejected
//! it — read from the gateway's admin listener (`/-/routes`, beside its metrics), so what is
//! shown is what the gateway does now, not what was configured.

use std::time::Duration;

use flotilla::http::HttpClient;
use flotilla_api::Instance;
use maud::{html, Markup};
use serde::Deserialize;

use crate::ControlState;

/// How long a gateway may take to answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// `/-/routes` as the gateway answers it (what the dashboard reads of it).
#[derive(Debug, Deserialize)]
pub(super) struct Table {
    pub(super) routes: Vec<Route>,
}

/// One route as the gateway holds it.
#[derive(Debug, Deserialize)]
pub(super) struct Route {
    pub(super) name: String,
    path: String,
    /// `service:<name>` for a route to a service.
    pub(super) backend: String,
    /// `closed`, `open` or `half_open`.
    pub(super) breaker: String,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    address: String,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    ejected: bool,
    #[serde(default)]
    in_flight: u64,
    #[serde(default)]
    rtt_ms: Option<f64>,
}

/// Where a gateway instance serves its admin routes: beside its metrics.
fn admin_url(gateway: &Instance) -> Option<String> {
    let address = gateway
        .metadata
        .get(flotilla_api::registry::meta::METRICS_ADDRESS)
        .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())?;
    Some(format!("http://{address}/-/routes"))
}

/// The badge class of a breaker state.
fn breaker_class(state: &str) -> &'static str {
    match state {
        "closed" => "passing",
        "half-open" | "half_open" => "degraded",
        _ => "failing",
    }
}

/// Every gateway instance's route table, or why it could not be read, by instance id.
pub(super) async fn tables(state: &ControlState) -> Vec<(String, Result<Table, String>)> {
    let gateways = state.registry.list(Some("gateway")).instances;
    let client = HttpClient::new(TIMEOUT);
    let reads = gateways.iter().map(|gateway| {
        let client = &client;
        async move {
            let Some(url) = admin_url(gateway) else {
                return (
                    gateway.instance_id.clone(),
                    Err("it registered no admin address".to_owned()),
                );
            };
            let answer = tokio::time::timeout(TIMEOUT, client.get_json::<Table>(&url, None)).await;
            let result = match answer {
                Ok(Ok(table)) => Ok(table),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
            };
            (gateway.instance_id.clone(), result)
        }
    });
    futures_util::future::join_all(reads).await
}

/// The routes to `service` on every gateway instance, as a section of its page.
pub(super) async fn routes_to(state: &ControlState, service: &str) -> Markup {
    let tables = tables(state).await;
    let backend = format!("service:{service}");
    html! {
        section aria-labelledby="routes-h" {
            h2 id="routes-h" { "Routes at the gateway" }
            @if tables.is_empty() {
                p class="empty" { "No gateway instance is registered." }
            }
            @for (gateway, table) in &tables {
                @match table {
                    Err(why) => p class="error" { "Gateway " code { (gateway) } " could not be read: " (why) },
                    Ok(table) => {
                        @let routes: Vec<&Route> = table.routes.iter().filter(|r| r.backend == backend).collect();
                        @if routes.is_empty() {
                            p class="empty" { "Gateway " code { (gateway) } " routes nothing to this service." }
                        } @else {
                            div class="table-wrap" {
                                table class="routes" data-gateway=(gateway) {
                                    caption { "Gateway " code { (gateway) } }
                                    thead { tr {
                                        th scope="col" { "Route" }
                                        th scope="col" { "Path" }
                                        th scope="col" { "Breaker" }
                                        th scope="col" { "Endpoints" }
                                    } }
                                    tbody {
                                        @for route in &routes {
                                            tr data-route=(route.name) {
                                                th scope="row" { (route.name) }
                                                td { code { (route.path) } }
                                                td { span class={"badge " (breaker_class(&route.breaker))} data-breaker=(route.breaker) { (route.breaker) } }
                                                td class="endpoints" {
                                                    @if route.endpoints.is_empty() { span class="bad" { "none" } }
                                                    @for endpoint in &route.endpoints {
                                                        span class={"endpoint" @if endpoint.ejected { " ejected" }} {
                                                            code { (endpoint.instance_id.as_deref().unwrap_or(&endpoint.address)) }
                                                            @if endpoint.ejected { " " span class="badge failing" { "ejected" } }
                                                            " · " (endpoint.in_flight) " in flight"
                                                            @if let Some(rtt) = endpoint.rtt_ms { " · " (format!("{rtt:.1}")) " ms" }
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_route_table_is_read() {
        let text = r#"{"routes":[{"backend":"service:catalog","breaker":"open","endpoints":[{"address":"127.0.0.1:1","ejected":true,"in_flight":2,"instance_id":"catalog-1","rtt_ms":1.5,"weight":1}],"name":"catalog","path":"/api/v1/products","rewrite":null,"versions":[]}]}"#;
        let table: Table = serde_json::from_str(text).unwrap();
        assert_eq!(table.routes[0].breaker, "open");
        assert!(table.routes[0].endpoints[0].ejected);
        assert_eq!(breaker_class("open"), "failing");
        assert_eq!(breaker_class("closed"), "passing");
    }
}
