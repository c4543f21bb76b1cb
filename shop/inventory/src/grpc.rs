//! Inventory's gRPC API (`flotilla.shop.inventory.v1.Inventory`, beside its JSON routes on the
//! same listener): how many units of each product may be reserved now, for a caller holding the
//! `inventory.reserve` scope — orders, before it accepts an order.

use flotilla::auth::{AuthError, Verifier};
use flotilla::store::Store;
use flotilla_shop_contracts::inventory_v1::inventory_server::{Inventory, InventoryServer};
use flotilla_shop_contracts::inventory_v1::{Availability, AvailabilityReply, AvailabilityRequest};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::api::RESERVE_SCOPE;
use crate::stock::{self, StockError};

/// The most products one request may ask about.
const MAX_PRODUCTS: usize = 100;

/// The service, over inventory's store.
#[derive(Clone)]
pub struct Stock {
    store: Store,
    tokens: Verifier,
}

/// The generated server around [`Stock`], for [`flotilla::grpc::route`].
pub fn server(store: Store, tokens: Verifier) -> InventoryServer<Stock> {
    InventoryServer::new(Stock { store, tokens })
}

fn refused(err: AuthError) -> Status {
    match err {
        AuthError::Forbidden(reason) => Status::permission_denied(reason),
        AuthError::Unavailable(reason) => Status::unavailable(reason),
        other => Status::unauthenticated(other.to_string()),
    }
}

#[tonic::async_trait]
impl Inventory for Stock {
    async fn get_availability(
        &self,
        request: Request<AvailabilityRequest>,
    ) -> Result<Response<AvailabilityReply>, Status> {
        let who = self.tokens.caller(request.metadata().as_ref()).await.map_err(refused)?;
        who.admin_or(Some(RESERVE_SCOPE)).map_err(refused)?;
        let asked = request.into_inner().product_ids;
        if asked.is_empty() || asked.len() > MAX_PRODUCTS {
            return Err(Status::invalid_argument(format!(
                "product_ids: 1 to {MAX_PRODUCTS} products, not {}",
                asked.len()
            )));
        }
        let mut items = Vec::with_capacity(asked.len());
        for product_id in asked {
            let found = stock::stock(&self.store, product_id)
                .instrument(self.store.span("read stock"))
                .await;
            items.push(match found {
                Ok(stock) => Availability {
                    product_id,
                    available: stock.available.max(0),
                    known: true,
                },
                Err(StockError::NotFound(_)) => Availability {
                    product_id,
                    available: 0,
                    known: false,
                },
                Err(err) => {
                    tracing::error!(error = %err, "reading stock");
                    return Err(Status::internal("reading stock failed"));
                }
            });
        }
        Ok(Response::new(AvailabilityReply { items }))
    }
}
