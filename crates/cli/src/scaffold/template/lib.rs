//! {{name}}: a Flotilla service. Scaffolded by `flotilla new service {{name}}`; the handlers in
//! `api.rs` and the tables in `migrations/` are yours to change.

pub mod api;
pub mod config;

/// The service's name: in the registry, in routes, in its config scope and its certificate.
pub const SERVICE: &str = "{{name}}";

/// The service as a Flotilla app: registered, health-checked, drained and traced by the SDK.
pub struct {{Type}};

impl flotilla::app::App for {{Type}} {
    const NAME: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = config::Config;

    async fn start(setup: &flotilla::app::Setup<config::Config>) -> Result<flotilla::axum::Router, flotilla::app::AppError> {
        let store = setup.store_from(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).await?;
        let tokens = setup.verifier(&flotilla::auth::TrustedIssuer::default(), &[], &[]);
        Ok(api::router(api::AppState { store, tokens, config: setup.config().clone(), context: setup.context().clone() }))
    }
}
