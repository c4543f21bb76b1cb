use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use flotilla::config::LiveConfig;
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::accounts::{self, SignUp, ADMIN};
use crate::config::{IdentityConfig, ServiceClient};
use crate::{Identity, MIGRATOR};

const PASSWORD: &str = "correct horse battery";
const ORDERS_SECRET: &str = "orders-secret-orders-secret-0123456789";
/// The sealing key of the test instances (32 bytes, base64).
const SEAL_KEY: &str = "c2VhbGluZy1rZXktZm9yLXRoZS10ZXN0LWluc3RhbmM=";

struct App {
    router: Router,
    identity: Arc<Identity>,
    _db: TestDatabase,
}

async fn app() -> App {
    let db = TestDatabase::create("identity").await;
    let (router, identity) = instance(&db.url).await;
    App {
        router,
        identity,
        _db: db,
    }
}

/// One identity instance over the database at `url` (several share one, as in a fleet).
async fn instance(url: &str) -> (Router, Arc<Identity>) {
    instance_sealed(url, SEAL_KEY).await.unwrap()
}

/// An instance whose signing keys are sealed with `seal_key`.
async fn instance_sealed(url: &str, seal_key: &str) -> Result<(Router, Arc<Identity>), crate::keys::KeyError> {
    let store = Store::open(url, &MIGRATOR).await.unwrap();
    let config = IdentityConfig {
        issuer: "https://id.test".into(),
        max_failures_per_account: 3,
        clients: vec![ServiceClient {
            id: "orders".into(),
            secret: ORDERS_SECRET.into(),
            scope: "inventory.reserve payments.charge".into(),
            roles: vec!["service".into()],
        }],
        seal_key: Some(seal_key.into()),
        ..IdentityConfig::default()
    };
    let identity = Identity::start(store, LiveConfig::fixed(config)).await?;
    Ok((
        flotilla::http::with_problem_fallbacks(crate::router(identity.clone())),
        identity,
    ))
}

fn login_form(email: &str, password: &str, from: &str) -> Request<Body> {
    form_post(
        &[
            ("grant_type", "password"),
            ("client_id", "shop-web"),
            ("username", email),
            ("password", password),
        ],
        from,
    )
}

async fn call(app: &App, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app.router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, value)
}

fn json_post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn form_post(form: &[(&str, &str)], from: &str) -> Request<Body> {
    Request::post("/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-flotilla-client-address", from)
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

async fn sign_up(app: &App, email: &str) -> Value {
    let (status, _, body) = call(
        app,
        json_post(
            "/api/v1/accounts",
            json!({"email": email, "password": PASSWORD, "name": "Ana"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (account, _) = accounts::by_email(&app.identity.store, email).await.unwrap().unwrap();
    serde_json::to_value(account).unwrap()
}

async fn login(app: &App, email: &str, password: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    call(
        app,
        form_post(
            &[
                ("grant_type", "password"),
                ("client_id", "shop-web"),
                ("username", email),
                ("password", password),
            ],
            "203.0.113.9",
        ),
    )
    .await
}

#[tokio::test]
async fn sign_up_refuses_bad_fields_by_name_and_a_taken_email() {
    let app = app().await;
    let created = sign_up(&app, "Ana@Example.com").await;
    assert_eq!(created["email"], "ana@example.com");
    assert_eq!(created["roles"], json!(["customer"]));
    assert!(created.get("password_hash").is_none());
    // A taken address, and addresses that only look like it, get the answer a new one gets
    // and make nothing: which addresses have accounts is not told.
    let new = |email: &str| {
        json_post(
            "/api/v1/accounts",
            json!({"email": email, "password": PASSWORD, "name": "Ana"}),
        )
    };
    let (_, _, fresh) = call(&app, new("Zoe@example.com")).await;
    for look_alike in [
        "ana@example.com",
        "ＡＮＡ@ｅｘａｍｐｌｅ.ｃｏｍ", // full-width
        "\u{0430}na@example.com",       // a Cyrillic а
        "ana@\u{0435}xample.com",       // a Cyrillic е
    ] {
        let (status, _, body) = call(&app, new(look_alike)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{look_alike}: {body}");
        assert_eq!(body["status"], fresh["status"]);
        let email = accounts::normalize_email(look_alike);
        let made = accounts::by_email(&app.identity.store, &email).await.unwrap();
        assert!(
            email == "ana@example.com" || made.is_none(),
            "{look_alike} made an account"
        );
    }
    // Invisible characters make an address look like another: refused.
    let (status, _, body) = call(&app, new("a\u{200B}na@example.com")).await;
    assert_eq!(
        (status, body["invalid-params"][0]["name"].as_str()),
        (StatusCode::BAD_REQUEST, Some("email"))
    );
    // Blank and common passwords are refused by name.
    for weak in ["          ", "qwertyuiop", "Password123"] {
        let (status, _, body) = call(
            &app,
            json_post(
                "/api/v1/accounts",
                json!({"email": "bo@example.com", "password": weak, "name": "Bo"}),
            ),
        )
        .await;
        assert_eq!(
            (status, body["invalid-params"][0]["name"].as_str()),
            (StatusCode::BAD_REQUEST, Some("password")),
            "{weak:?}: {body}"
        );
    }
    let (status, _, body) = call(
        &app,
        json_post(
            "/api/v1/accounts",
            json!({"email": "bo@example.com", "password": "short", "name": "Bo"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["invalid-params"][0]["name"], "password");
    let (status, _, body) = call(&app, json_post("/api/v1/accounts", json!({"email": "bo@example.com"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let huge = "x".repeat(20_000);
    let (status, _, _) = call(
        &app,
        json_post(
            "/api/v1/accounts",
            json!({"email": "bo@example.com", "password": huge, "name": "Bo"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_password_grant_issues_a_jwt_that_verifies_against_the_jwks_and_opens_me() {
    let app = app().await;
    let account = sign_up(&app, "ana@example.com").await;
    let (status, headers, tokens) = login(&app, "ana@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "shop");
    let access = tokens["access_token"].as_str().unwrap();

    // Anyone can check it with the published keys, as the gateway does.
    let (_, _, jwks) = call(&app, get("/oauth2/jwks", None)).await;
    let (_, _, discovery) = call(&app, get("/.well-known/openid-configuration", None)).await;
    assert_eq!(discovery["jwks_uri"], "https://id.test/oauth2/jwks");
    let verifier = flotilla::auth::Verifier::new(
        flotilla::auth::JwksCache::local(serde_json::from_value(jwks).unwrap()),
        flotilla::auth::Requirements {
            issuer: discovery["issuer"].as_str().unwrap().into(),
            audiences: vec!["shop".into()],
            algorithms: vec![jsonwebtoken::Algorithm::EdDSA],
            leeway: std::time::Duration::from_secs(30),
            scopes: vec!["shop".into()],
            roles: vec!["customer".into()],
        },
    );
    let who = verifier.verify(access).await.unwrap();
    assert_eq!(who.subject, account["id"].as_str().unwrap());

    let (status, _, me) = call(&app, get("/api/v1/me", Some(access))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "ana@example.com");
    let (status, headers, _) = call(&app, get("/api/v1/me", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["content-type"], "application/problem+json");
    let tampered = format!("{}x", &access[..access.len() - 1]);
    let (status, _, _) = call(&app, get("/api/v1/me", Some(&tampered))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_passwords_and_unknown_accounts_read_alike_and_are_throttled() {
    let app = app().await;
    sign_up(&app, "ana@example.com").await;
    let (status, _, wrong) = login(&app, "ana@example.com", "not the password").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong["error"], "invalid_grant");
    let (_, _, unknown) = login(&app, "nobody@example.com", "not the password").await;
    assert_eq!(unknown["error_description"], wrong["error_description"]);
    for _ in 0..2 {
        login(&app, "ana@example.com", "still not it").await;
    }
    // Three failures: even the right password waits now.
    let (status, headers, body) = login(&app, "ana@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(body["type"], "urn:flotilla:problem:too-many-failed-logins");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
    let app = app().await;
    sign_up(&app, "ana@example.com").await;
    let (_, _, first) = login(&app, "ana@example.com", PASSWORD).await;
    let refresh = |token: String| {
        form_post_owned(vec![
            ("grant_type", "refresh_token".into()),
            ("client_id", "shop-web".into()),
            ("refresh_token", token),
        ])
    };
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let (status, _, second) = call(&app, refresh(r1.clone())).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    // The first token again: refused, and the whole family with it.
    let (status, _, reused) = call(&app, refresh(r1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reused["error"], "invalid_grant");
    let (status, _, _) = call(&app, refresh(r2)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the newest token of a revoked family is refused too"
    );
    let (status, _, _) = call(&app, refresh("made-up".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

fn form_post_owned(form: Vec<(&str, String)>) -> Request<Body> {
    Request::post("/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn of_two_racing_uses_of_one_refresh_token_exactly_one_wins() {
    let app = app().await;
    sign_up(&app, "ana@example.com").await;
    let (_, _, first) = login(&app, "ana@example.com", PASSWORD).await;
    let token = first["refresh_token"].as_str().unwrap().to_owned();
    let tries = (0..8).map(|_| {
        let request = form_post_owned(vec![
            ("grant_type", "refresh_token".into()),
            ("client_id", "shop-web".into()),
            ("refresh_token", token.clone()),
        ]);
        let router = app.router.clone();
        tokio::spawn(async move { router.oneshot(request).await.unwrap().status() })
    });
    let statuses: Vec<StatusCode> = futures_join(tries).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
}

async fn futures_join(tasks: impl Iterator<Item = tokio::task::JoinHandle<StatusCode>>) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.unwrap());
    }
    out
}

/// A token request's form fields.
type Form<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn client_credentials_for_services_and_the_errors_of_rfc_6749() {
    let app = app().await;
    let (status, _, tokens) = call(
        &app,
        form_post(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "orders"),
                ("client_secret", ORDERS_SECRET),
                ("scope", "inventory.reserve"),
            ],
            "10.0.0.1",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens.get("refresh_token").is_none());
    assert_eq!(tokens["scope"], "inventory.reserve");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("orders:{ORDERS_SECRET}"),
    );
    let request = Request::post("/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {basic}"))
        .body(Body::from("grant_type=client_credentials"))
        .unwrap();
    let (status, _, _) = call(&app, request).await;
    assert_eq!(status, StatusCode::OK, "HTTP Basic client authentication");

    let cases: [(Form, StatusCode, &str); 6] = [
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "orders"),
                ("client_secret", "wrong"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "orders"),
                ("client_secret", ORDERS_SECRET),
                ("scope", "admin"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            &[("grant_type", "client_credentials"), ("client_id", "shop-web")],
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
        (
            &[
                ("grant_type", "password"),
                ("client_id", "nope"),
                ("username", "a"),
                ("password", "b"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            &[("grant_type", "implicit"), ("client_id", "shop-web")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (&[("client_id", "shop-web")], StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (form, status, error) in cases {
        let (got, _, body) = call(&app, form_post(form, "10.0.0.1")).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap()),
            (status, error),
            "{form:?}: {body}"
        );
    }
    let json = json_post("/oauth2/token", json!({"grant_type": "password"}));
    let (status, _, body) = call(&app, json).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_only_admins_may_ask_for_it() {
    let app = app().await;
    sign_up(&app, "ana@example.com").await;
    accounts::create(
        &app.identity.store,
        SignUp {
            email: "root@example.com".into(),
            password: PASSWORD.into(),
            name: "Root".into(),
        },
        &[ADMIN],
    )
    .await
    .unwrap();
    let (_, _, customer) = login(&app, "ana@example.com", PASSWORD).await;
    let customer = customer["access_token"].as_str().unwrap().to_owned();
    let (_, _, admin) = login(&app, "root@example.com", PASSWORD).await;
    let admin = admin["access_token"].as_str().unwrap().to_owned();

    let rotate = |token: &str| {
        Request::post("/api/v1/admin/signing-keys")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, _) = call(&app, rotate(&customer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, rotated) = call(&app, rotate(&admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, _, jwks) = call(&app, get("/oauth2/jwks", None)).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "the old key stays published");
    // A token signed before the rotation still opens /me; new ones name the new key.
    let (status, _, _) = call(&app, get("/api/v1/me", Some(&customer))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, fresh) = login(&app, "ana@example.com", PASSWORD).await;
    let header = jsonwebtoken::decode_header(fresh["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.kid.as_deref(), rotated["kid"].as_str());
}

#[tokio::test]
async fn the_openapi_document_names_every_route() {
    let app = app().await;
    let (status, _, doc) = call(&app, get("/openapi.json", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/api/v1/accounts", "post"),
        ("/oauth2/token", "post"),
        ("/oauth2/jwks", "get"),
        ("/.well-known/openid-configuration", "get"),
        ("/api/v1/me", "get"),
        ("/api/v1/admin/signing-keys", "post"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = call(&app, request).await;
        assert_ne!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} is documented but not served"
        );
    }
}

/// Three instances over one database, thirty wrong guesses at once from one address: each is
/// counted before its password is checked, so only the free attempts reach a password check.
#[tokio::test]
async fn three_instances_and_thirty_concurrent_guesses_stay_within_the_limit() {
    let first = app().await;
    sign_up(&first, "ana@example.com").await;
    let mut routers = vec![first.router.clone()];
    for _ in 0..2 {
        routers.push(instance(&first._db.url).await.0);
    }
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..30 {
        let router = routers[i % 3].clone();
        guesses.spawn(async move {
            let request = login_form("ana@example.com", &format!("guess number {i}"), "203.0.113.9");
            router.oneshot(request).await.unwrap().status()
        });
    }
    let statuses: Vec<StatusCode> = guesses.join_all().await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::BAD_REQUEST).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((checked, refused), (3, 27), "{statuses:?}");
    // A restart forgets nothing: a new instance refuses too.
    let (fresh, _) = instance(&first._db.url).await;
    let status = fresh
        .oneshot(login_form("ana@example.com", PASSWORD, "203.0.113.9"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

/// Guessing from many addresses is bounded by the account's own throttle, but that throttle
/// holds back only addresses the account never signed in from: its owner still gets in.
#[tokio::test]
async fn a_stranger_guessing_from_many_addresses_is_bounded_and_cannot_lock_the_owner_out() {
    let app = app().await;
    sign_up(&app, "ana@example.com").await;
    let (status, _, _) = call(&app, login_form("ana@example.com", PASSWORD, "198.51.100.7")).await;
    assert_eq!(status, StatusCode::OK, "the owner signs in from home");
    let mut checked = 0;
    for i in 0..40 {
        let (status, _, _) = call(
            &app,
            login_form("ana@example.com", "a wrong guess", &format!("203.0.113.{i}")),
        )
        .await;
        checked += usize::from(status == StatusCode::BAD_REQUEST);
    }
    assert_eq!(checked, 20, "the account's free attempts from unknown addresses");
    let (status, _, _) = call(&app, login_form("ana@example.com", PASSWORD, "192.0.2.200")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "a new address waits");
    let (status, _, body) = call(&app, login_form("ana@example.com", PASSWORD, "198.51.100.7")).await;
    assert_eq!(status, StatusCode::OK, "the owner's address is not held back: {body}");
}

/// Which clients exist is not told: a service's client id and a made-up one get the same
/// `invalid_client`. A refresh refused for its scope does not spend the token.
#[tokio::test]
async fn clients_read_alike_and_a_refused_refresh_leaves_the_token_usable() {
    let app = app().await;
    sign_up(&app, "ana@example.com").await;
    let mut answers = Vec::new();
    for client in ["orders", "made-up"] {
        let (status, _, body) = call(
            &app,
            form_post(
                &[
                    ("grant_type", "password"),
                    ("client_id", client),
                    ("username", "ana@example.com"),
                    ("password", PASSWORD),
                ],
                "203.0.113.9",
            ),
        )
        .await;
        answers.push((status, body));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].1["error"], "invalid_client");

    let (_, _, tokens) = login(&app, "ana@example.com", PASSWORD).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let with_scope = |scope: Option<&str>| {
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", "shop-web".to_owned()),
            ("refresh_token", refresh.clone()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope.to_owned()));
        }
        form_post_owned(form)
    };
    let (status, _, refused) = call(&app, with_scope(Some("admin"))).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (status, _, renewed) = call(&app, with_scope(None)).await;
    assert_eq!(status, StatusCode::OK, "the token is still good: {renewed}");
}

/// A stolen copy of identity's database signs nothing: its signing keys are sealed under a
/// key kept elsewhere; another sealing key does not open them; a key an earlier version kept
/// in plain text is sealed at start.
#[tokio::test]
async fn a_stolen_database_cannot_sign() {
    use base64::Engine;
    let app = app().await;
    let store = &app.identity.store;
    let stored: Vec<String> = sqlx::query_scalar("SELECT pkcs8 FROM signing_keys")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(!stored.is_empty());
    for value in &stored {
        let rest = value.strip_prefix("sealed:").expect("sealed");
        let bytes = base64::engine::general_purpose::STANDARD.decode(rest).unwrap();
        assert!(flotilla::auth::signing::SigningKey::from_pkcs8("k", &bytes).is_err());
        assert!(
            flotilla::auth::signing::SigningKey::from_pkcs8("k", &bytes[12..]).is_err(),
            "not the key behind a nonce either"
        );
    }
    let other = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let refused = instance_sealed(&app._db.url, &other)
        .await
        .err()
        .expect("another key opens nothing");
    assert!(matches!(refused, crate::keys::KeyError::Sealed(_)), "{refused}");

    // A key kept in plain text (as before sealing) is sealed when an instance starts.
    let key = flotilla::auth::signing::SigningKey::generate("plainkid").unwrap();
    sqlx::query("INSERT INTO signing_keys (kid, pkcs8, created_ms, retired_ms) VALUES ($1, $2, $3, NULL)")
        .bind("plainkid")
        .bind(base64::engine::general_purpose::STANDARD.encode(key.pkcs8()))
        .bind(flotilla::store::now_ms() + 1_000)
        .execute(store.pool())
        .await
        .unwrap();
    let (_, again) = instance(&app._db.url).await;
    assert_eq!(again.keys.current().signing.kid(), "plainkid");
    let now: String = sqlx::query_scalar("SELECT pkcs8 FROM signing_keys WHERE kid = 'plainkid'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(now.starts_with("sealed:"), "{now}");
}
