//! Forwarding one request: rewrite it for the upstream, make its body replayable when it is
//! small, send it through the route's resilient stack, and hand the response back with its
//! body streaming.

use flotilla::telemetry::edge::EdgeSpan;
use std::net::IpAddr;

use flotilla::balance::HashKey;
use flotilla::client::RequestBody;
use flotilla::resilience::Attempts;

use crate::policy::{Admission, BodyLimit, PolicyError};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Limited};

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
    let named: Vec<HeaderName> = crate::edge::tokens(headers, &header::CONNECTION)
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The protocol a client asks to switch to (`Upgrade: websocket` with `Connection: upgrade`),
/// if any. `h2c` is not passed on: it is a hop-by-hop negotiation of this connection.
fn upgrade_wanted(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = crate::edge::tokens(headers, &header::CONNECTION).any(|token| token.eq_ignore_ascii_case(b"upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    (asks && !protocol.as_bytes().eq_ignore_ascii_case(b"h2c")).then(|| protocol.clone())
}

/// The upstream's side of a protocol switch, carried by a `101` answer to the connection
/// that serves the client, which joins it to its own ([`crate::h1`]).
#[derive(Debug, Clone)]
pub struct Switching(pub hyper::upgrade::OnUpgrade);

/// The body to send: empty, read whole (small enough to replay, or under a route's limit),
/// or streamed. A body of unknown length is read up to the route's [`BodyLimit`] to enforce
/// it (one declaring its length was checked by the policies).
async fn body_for(length: Option<u64>, body: RequestBody, max: Option<BodyLimit>) -> Result<RequestBody, GatewayError> {
    let max = max.map(|limit| limit.0);
    // HTTP/2 bodies have neither framing header; hyper knows when there is no body at all.
    if length == Some(0) || http_body::Body::is_end_stream(&body) {
        return Ok(RequestBody::empty());
    }
    // Read whole already (small enough to replay).
    if matches!(body, RequestBody::Full(_)) {
        return Ok(body);
    }
    let limit = match (length, max) {
        (Some(n), _) if n <= REPLAY_LIMIT as u64 => REPLAY_LIMIT,
        // A body of unknown length under a limit is read (up to the limit) to enforce it.
        (None, Some(max)) => usize::try_from(max).unwrap_or(usize::MAX),
        _ => return Ok(body),
    };
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| RequestBody::from(c.to_bytes()))
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                GatewayError::Policy(PolicyError::BodyTooLarge(crate::policy::body_limit::TooLarge(
                    limit as u64,
                )))
            } else {
                GatewayError::BadRequest(format!("reading the request body: {e}"))
            }
        })
}

/// Sends `request` (its forwarding headers already settled, `client` the address they name)
/// through the route's stack; on return, `attempts` holds every endpoint tried.
pub async fn forward(
    route: &Route,
    request: Request<RequestBody>,
    path: &str,
    client: IpAddr,
    request_id: &HeaderValue,
    attempts: &Attempts,
    edge: &EdgeSpan,
) -> Result<Response<ProxyBody>, GatewayError> {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let policies = &route.policies;
    let admitted = match policies
        .admit(request.method(), request.headers(), client, length)
        .await
    {
        Ok(Admission::Go(admitted)) => admitted,
        Ok(Admission::Preflight(headers)) => {
            let mut response = Response::new(crate::rescue::empty_body());
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            *response.headers_mut() = headers;
            return Ok(response);
        }
        Err(err) => {
            if let PolicyError::RateLimited(_) = err {
                route.metrics.rate_limited();
            }
            return Err(GatewayError::Policy(err));
        }
    };
    let origin = request.headers().get(header::ORIGIN).cloned();
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

    let upgrade = upgrade_wanted(request.headers());
    let (mut parts, incoming) = request.into_parts();
    let body = body_for(length, incoming, policies.max_body).await?;
    parts.uri = uri;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    let proto = if parts.extensions.get::<crate::Secure>().is_some() {
        "https"
    } else {
        "http"
    };
    let headers = &mut parts.headers;
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    headers.insert(REQUEST_ID.clone(), request_id.clone());
    // Upstream, this request's parent is the gateway's span (not the client's).
    edge.inject(headers);
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    policies.on_request(&admitted, headers);
    parts.extensions.insert(attempts.clone());
    if let Some(key) = key {
        parts.extensions.insert(key);
    }

    let stack = route.stack_for(&parts.headers, rand::random::<f64>());
    let mut response = stack.call(Request::from_parts(parts, body)).await?;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS && upgrade.is_some() {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let protocol = response.headers().get(header::UPGRADE).cloned();
        let mut switching = Response::new(crate::rescue::empty_body());
        *switching.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        let mut headers = response.headers().clone();
        strip_hop_by_hop(&mut headers);
        *switching.headers_mut() = headers;
        switching
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            switching.headers_mut().insert(header::UPGRADE, protocol);
        }
        switching.extensions_mut().insert(Switching(upstream_upgrade));
        return Ok(switching);
    }
    let (mut parts, body) = response.into_parts();
    crate::edge::check_response(&parts.headers).map_err(GatewayError::UpstreamFraming)?;
    strip_hop_by_hop(&mut parts.headers);
    policies.on_response(&admitted, origin.as_ref(), &mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}
