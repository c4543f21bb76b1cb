//! {{name}}: a Flotilla service. Scaffolded by `flotilla new service {{name}}`; the handlers in
//! `api.rs` and the tables in `migrations/` are yours to change.

pub mod api;
pub mod config;

/// The service as a Flotilla app: registered, health-checked, drained and traced by the SDK.
pub struct {{Type}};

impl flotilla::app::App for {{Type}} {
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = config::Config;

    async fn start(setup: &flotilla::app::Setup<config::Config>) -> flotilla::app::Started {
        let store = setup.store_from(flotilla::migrations!()).await?;
        api::router(store, setup).await
    }
}
