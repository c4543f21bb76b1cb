//! Forwarding one request: rewrite it for the upstream, make its body replayable when it is
//! small, send it through the route's resilient stack, and hand the response back with its
//! body streaming.

use std::net::SocketAddr;

use flotilla::balance::HashKey;
use flotilla::client::RequestBody;
use flotilla::resilience::Attempts;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::rescue::GatewayError;
use crate::routes::Route;
use crate::ProxyBody;

/// The request id header: kept when the client sent a sane one, made up otherwise.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Bodies up to this size are read into memory, so their requests can be retried on another
/// instance (Linkerd buffers 64 KiB for the same reason); larger ones stream, sent once.
pub const REPLAY_LIMIT: usize = 64 * 1024;

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

/// The body to send: empty, read whole (small enough to replay), or streamed.
async fn body_for(headers: &HeaderMap, body: Incoming) -> Result<RequestBody, GatewayError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    match (length, chunked) {
        (None | Some(0), false) => Ok(RequestBody::empty()),
        (Some(n), false) if n <= REPLAY_LIMIT as u64 => {
            let collected = Limited::new(body, REPLAY_LIMIT)
                .collect()
                .await
                .map_err(|e| GatewayError::BadRequest(format!("reading the request body: {e}")))?;
            Ok(RequestBody::from(collected.to_bytes()))
        }
        _ => Ok(RequestBody::Stream(body)),
    }
}

/// Sends `request` through the route's stack; on return, `attempts` holds every endpoint tried.
pub async fn forward(
    route: &Route,
    request: Request<Incoming>,
    path: &str,
    peer: SocketAddr,
    request_id: &HeaderValue,
    attempts: &Attempts,
) -> Result<Response<ProxyBody>, GatewayError> {
    let path = route.upstream_path(path);
    let path_and_query = match request.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    };
    let uri: Uri = path_and_query
        .parse()
        .map_err(|e| GatewayError::BadRequest(format!("cannot forward this path: {e}")))?;
    // A client speaking HTTP/2 has no Host header, only :authority; upstreams get HTTP/1.1
    // with the Host the client asked for.
    let host = request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let key = route
        .hash_header
        .as_ref()
        .and_then(|h| request.headers().get(h))
        .map(|v| HashKey::of(v.as_bytes()));

    let (mut parts, incoming) = request.into_parts();
    let body = body_for(&parts.headers, incoming).await?;
    parts.uri = uri;
    let headers = &mut parts.headers;
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
    parts.extensions.insert(attempts.clone());
    if let Some(key) = key {
        parts.extensions.insert(key);
    }

    let response = route.stack.call(Request::from_parts(parts, body)).await?;
    let (mut parts, body) = response.into_parts();
    crate::edge::check_response(&parts.headers).map_err(GatewayError::UpstreamFraming)?;
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}
