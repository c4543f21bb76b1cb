//! The JWT checks of RFC 8725, one by one, against a real JWKS server on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::*;

use super::test_util::{b64, TestIssuer as Keys};

fn keypair(kid: &str) -> Keys {
    Keys::new(kid)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn good_claims() -> Value {
    json!({"sub": "user-1", "iss": "https://id.test", "aud": "shop", "exp": now() + 300,
           "scope": "orders:read orders:write", "roles": ["customer"]})
}

/// A JWKS server whose key set can change, counting its fetches.
async fn jwks_server(keys: Arc<Mutex<Vec<Value>>>) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = Router::new().route(
        "/jwks",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let set = json!({"keys": keys.lock().unwrap().clone()});
            async move { axum::Json(set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/jwks"), fetches)
}

fn requirements() -> Requirements {
    Requirements {
        issuer: "https://id.test".into(),
        audiences: vec!["shop".into()],
        algorithms: vec![jsonwebtoken::Algorithm::EdDSA],
        leeway: Duration::from_secs(30),
        scopes: vec![],
        roles: vec![],
    }
}

async fn setup() -> (Keys, Verifier, Arc<Mutex<Vec<Value>>>, Arc<AtomicUsize>) {
    let keys = keypair("k1");
    let set = Arc::new(Mutex::new(vec![keys.jwk()]));
    let (url, fetches) = jwks_server(set.clone()).await;
    let jwks = JwksCache::new(url).with_intervals(Duration::from_secs(300), Duration::ZERO);
    (keys, Verifier::new(jwks, requirements()), set, fetches)
}

fn invalid(result: Result<Identity, AuthError>) -> String {
    match result {
        Err(AuthError::Invalid(reason)) => reason,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

#[tokio::test]
async fn a_good_token_yields_its_identity() {
    let (keys, verifier, _, _) = setup().await;
    let identity = verifier.verify(&keys.token(good_claims())).await.unwrap();
    assert_eq!(identity.subject, "user-1");
    assert_eq!(identity.scopes, ["orders:read", "orders:write"]);
    assert_eq!(identity.roles, ["customer"]);
}

#[tokio::test]
async fn every_rfc8725_trick_is_refused() {
    let (keys, verifier, _, _) = setup().await;
    let claims = good_claims();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = good_claims();
        change(&mut c);
        keys.token(c)
    };
    // alg none, with or without a signature.
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "k1"}).to_string()),
        b64(claims.to_string())
    );
    invalid(verifier.verify(&unsigned).await);
    // An HMAC token "signed" with the public key.
    invalid(
        verifier
            .verify(&keys.sign(json!({"alg": "HS256", "kid": "k1"}), claims.clone()))
            .await,
    );
    // An algorithm not on the allow-list.
    invalid(
        verifier
            .verify(&keys.sign(json!({"alg": "ES256", "kid": "k1"}), claims.clone()))
            .await,
    );
    // A critical extension nobody here understands (RFC 7515 §4.1.11).
    let reason = invalid(
        verifier
            .verify(&keys.sign(
                json!({"alg": "EdDSA", "kid": "k1", "crit": ["exp-ext"], "exp-ext": 1}),
                claims.clone(),
            ))
            .await,
    );
    assert!(reason.contains("critical"), "{reason}");
    // Unknown kid, no kid.
    invalid(
        verifier
            .verify(&keys.sign(json!({"alg": "EdDSA", "kid": "k9"}), claims.clone()))
            .await,
    );
    invalid(
        verifier
            .verify(&keys.sign(json!({"alg": "EdDSA"}), claims.clone()))
            .await,
    );
    // exp missing, passed, as a string; nbf in the future, as a string.
    invalid(
        verifier
            .verify(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }))
            .await,
    );
    invalid(verifier.verify(&with(&|c| c["exp"] = json!(now() - 120))).await);
    invalid(
        verifier
            .verify(&with(&|c| c["exp"] = json!((now() + 300).to_string())))
            .await,
    );
    invalid(verifier.verify(&with(&|c| c["nbf"] = json!(now() + 600))).await);
    invalid(verifier.verify(&with(&|c| c["nbf"] = json!(now().to_string()))).await);
    // aud missing or wrong, iss wrong.
    invalid(
        verifier
            .verify(&with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }))
            .await,
    );
    invalid(verifier.verify(&with(&|c| c["aud"] = json!("billing"))).await);
    invalid(verifier.verify(&with(&|c| c["iss"] = json!("https://evil.test"))).await);
    // A tampered payload under a good signature.
    let token = keys.token(claims.clone());
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims.clone();
    forged["roles"] = json!(["admin"]);
    let tampered = format!("{}.{}.{}", parts[0], b64(forged.to_string()), parts[2]);
    invalid(verifier.verify(&tampered).await);
    // Two or four segments.
    invalid(verifier.verify(&format!("{}.{}", parts[0], parts[1])).await);
    invalid(verifier.verify(&format!("{token}.extra")).await);
    // Within the clock skew, an expired token still passes.
    verifier.verify(&with(&|c| c["exp"] = json!(now() - 10))).await.unwrap();
}

#[tokio::test]
async fn keys_named_by_the_token_are_never_fetched() {
    let (keys, verifier, _, _) = setup().await;
    let (evil_url, evil_fetches) = jwks_server(Arc::new(Mutex::new(vec![keypair("k1").jwk()]))).await;
    let header = json!({"alg": "EdDSA", "kid": "k1", "jku": evil_url, "x5u": evil_url,
                        "jwk": keypair("k1").jwk()});
    let signed_by_us = keys.sign(header.clone(), good_claims());
    verifier.verify(&signed_by_us).await.unwrap();
    let signed_by_them = keypair("k1").sign(header, good_claims());
    invalid(verifier.verify(&signed_by_them).await);
    assert_eq!(
        evil_fetches.load(Ordering::SeqCst),
        0,
        "no outbound fetch to a URL from the token"
    );
}

#[tokio::test]
async fn rotation_unknown_kids_refresh_and_outages_fail_closed() {
    let (keys, verifier, set, fetches) = setup().await;
    verifier.verify(&keys.token(good_claims())).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    verifier.verify(&keys.token(good_claims())).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "cached");

    // The issuer rotates: a new key appears beside the old one.
    let next = keypair("k2");
    set.lock().unwrap().push(next.jwk());
    verifier.verify(&next.token(good_claims())).await.unwrap();
    verifier.verify(&keys.token(good_claims())).await.unwrap();

    // An issuer that cannot be reached on first use denies.
    let cold = Verifier::new(JwksCache::new("http://127.0.0.1:1/jwks"), requirements());
    assert!(matches!(
        cold.verify(&keys.token(good_claims())).await,
        Err(AuthError::Unavailable(_))
    ));
}

#[tokio::test]
async fn scopes_and_roles() {
    let (keys, _, _, _) = setup().await;
    let set = Arc::new(Mutex::new(vec![keys.jwk()]));
    let (url, _) = jwks_server(set).await;
    let strict = Verifier::new(
        JwksCache::new(url),
        Requirements {
            scopes: vec!["orders:write".into()],
            roles: vec!["admin".into()],
            ..requirements()
        },
    );
    assert!(matches!(
        strict.verify(&keys.token(good_claims())).await,
        Err(AuthError::Forbidden(_))
    ));
    let mut admin = good_claims();
    admin["roles"] = json!(["admin"]);
    strict.verify(&keys.token(admin)).await.unwrap();
    assert!(matches!(
        Verifier::bearer(Some(&http::HeaderValue::from_static("Basic abc"))),
        Err(AuthError::Missing)
    ));
    assert_eq!(
        Verifier::bearer(Some(&http::HeaderValue::from_static("Bearer a.b.c"))).unwrap(),
        "a.b.c"
    );
}

#[tokio::test]
async fn remembered_tokens_still_expire() {
    let keys = keypair("k1");
    let set = Arc::new(Mutex::new(vec![keys.jwk()]));
    let (url, _) = jwks_server(set).await;
    let verifier = Verifier::new(
        JwksCache::new(url),
        Requirements {
            leeway: Duration::ZERO,
            ..requirements()
        },
    );
    let mut claims = good_claims();
    claims["exp"] = json!(now() + 1);
    let token = keys.token(claims);
    verifier.verify(&token).await.unwrap();
    verifier.verify(&token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    invalid(verifier.verify(&token).await);
}

#[test]
fn a_refused_token_is_told_generically_and_the_reason_stays_in_the_log() {
    let problem = AuthError::Invalid("InvalidSignature at base64 offset 17".into()).to_problem();
    assert_eq!(problem.status, 401);
    let detail = problem.detail.unwrap_or_default();
    assert!(!detail.contains("Signature") && !detail.contains("offset"), "{detail}");
    let missing = AuthError::Missing.to_problem();
    assert_eq!(missing.status, 401);
}

#[test]
fn the_public_url_names_the_issuer_and_falls_back_to_localhost() {
    use super::{public_url_from, DEFAULT_PUBLIC_URL};
    assert_eq!(
        public_url_from(Some("https://shop.example.com/")),
        "https://shop.example.com"
    );
    assert_eq!(public_url_from(Some("http://shop.internal")), "http://shop.internal");
    assert_eq!(public_url_from(None), DEFAULT_PUBLIC_URL);
    assert_eq!(public_url_from(Some("shop.example.com")), DEFAULT_PUBLIC_URL);
}
