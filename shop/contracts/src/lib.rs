//! The shop's contracts between its own services, kept apart from the platform's wire types
//! (`flotilla-api`): a service of the shop depends on these, the platform never does.

pub mod orders;

/// `flotilla.shop.inventory.v1`: what inventory answers orders over gRPC (generated from
/// `proto/flotilla/shop/inventory/v1/inventory.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod inventory_v1 {
    tonic::include_proto!("flotilla.shop.inventory.v1");

    /// The full name of `GetAvailability`, as a request's path: a read, safe to ask again.
    pub const GET_AVAILABILITY: &str = "/flotilla.shop.inventory.v1.Inventory/GetAvailability";
}

/// The compiled descriptors of every `.proto` of the shop (a `FileDescriptorSet`), for
/// contract tests.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptors.bin"));
