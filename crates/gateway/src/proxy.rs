//! Forwarding one request: pick the endpoint, rewrite the request for it, send it through
//! the pooled client, and hand the response back with its body streaming.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::rescue::GatewayError;
use crate::routes::Route;
use crate::{Gateway, ProxyBody};

/// The request id header: kept when the client sent a sane one, made up otherwise.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and never travel on.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Sends `request` to the route's backend.
pub async fn forward(
    gateway: &Gateway,
    route: &Route,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    request_id: &HeaderValue,
) -> Result<(Response<ProxyBody>, String), GatewayError> {
    let endpoint = route.backend.pick(gateway.discovery.as_ref())?;
    let path = route.upstream_path(request.uri().path());
    let path_and_query = match request.uri().query() {
        Some(q) => format!("{}{path}?{q}", endpoint.base_path),
        None => format!("{}{path}", endpoint.base_path),
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(endpoint.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let authority = endpoint.authority.to_string();

    // A client speaking HTTP/2 has no Host header, only :authority; upstreams get HTTP/1.1
    // with the Host the client asked for.
    let host = request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    headers.insert(REQUEST_ID.clone(), request_id.clone());

    let timeout = gateway.config.upstream_timeout;
    let response = match tokio::time::timeout(timeout, gateway.client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(source)) => return Err(GatewayError::Upstream { authority, source }),
        Err(_) => return Err(GatewayError::UpstreamTimeout { authority, timeout }),
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok((Response::from_parts(parts, body.boxed_unsync()), authority))
}

/// The default time an upstream has to send its response headers.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);
