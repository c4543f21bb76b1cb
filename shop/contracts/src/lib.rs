//! The shop's contracts between its own services, kept apart from the platform's wire types
//! (`flotilla-api`): a service of the shop depends on these, the platform never does.

pub mod orders;
