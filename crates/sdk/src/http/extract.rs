//! Extractors whose rejections are problem+json naming the bad field.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flotilla_api::Problem;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A JSON body in, a JSON body out. A body that is not JSON, or does not fit `T`, is refused
/// with 4xx problem+json naming the field (`lines[0].quantity: invalid type ...`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(
                Problem::new(415, "unsupported-media-type", "Unsupported media type").with_detail(format!(
                    "expected `Content-Type: application/json`, got `{content_type}`"
                )),
            );
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status().as_u16();
            Problem::new(status, "unreadable-body", "Request body could not be read").with_detail(rejection.body_text())
        })?;
        from_json_slice(&bytes).map(Json)
    }
}

/// Parses JSON, turning the error into a problem that names the field and position.
pub(crate) fn from_json_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::new(400, "malformed-json", "Malformed JSON").with_detail(inner.to_string());
        }
        let message = inner.to_string();
        let field = named_field(&message)
            .map(|name| match path.as_str() {
                "." => name.to_owned(),
                p if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
                p => format!("{p}.{name}"),
            })
            .unwrap_or(path);
        let reason = message.split(" at line ").next().unwrap_or(&message).to_owned();
        Problem::invalid_field(field, reason)
    })
}

/// Serde names a missing or unknown field only inside its message: "missing field `x`".
fn named_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next()
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query string parsed into `T`; a bad parameter is 400 problem+json naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de).map(Query).map_err(|err| {
            let path = err.path().to_string();
            let message = err.into_inner().to_string();
            let field = named_field(&message).map(str::to_owned).unwrap_or(path);
            Problem::invalid_field(field, message)
        })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        lines: Vec<Line>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Line {
        quantity: u32,
    }

    #[test]
    fn names_nested_bad_field() {
        let p = from_json_slice::<Body>(br#"{"name":"x","lines":[{"quantity":-1}]}"#).unwrap_err();
        assert_eq!(p.status, 400);
        assert_eq!(p.invalid_params[0].name, "lines[0].quantity");
    }

    #[test]
    fn names_missing_and_unknown_fields() {
        let p = from_json_slice::<Body>(br#"{"lines":[]}"#).unwrap_err();
        assert_eq!(p.invalid_params[0].name, "name");
        let p = from_json_slice::<Body>(br#"{"name":"x","lines":[],"extra":1}"#).unwrap_err();
        assert_eq!(p.invalid_params[0].name, "extra");
    }

    #[test]
    fn malformed_json_is_its_own_problem() {
        let p = from_json_slice::<Body>(b"{\"name\":").unwrap_err();
        assert_eq!(p.slug(), "malformed-json");
    }
}
