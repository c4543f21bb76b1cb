//! Contract tests: every call one part of the system makes to another, as the caller states
//! it next to its code, checked against the provider's published OpenAPI document; and every
//! published document checked for references that lead nowhere.

#![allow(clippy::unwrap_used)]

use flotilla::contract::{check, Expectation};
use serde_json::Value;

/// Every service's published document, by name.
fn providers() -> Vec<(&'static str, Value)> {
    vec![
        ("catalog", flotilla_catalog::openapi_document()),
        ("identity", flotilla_identity::openapi_document()),
        ("inventory", flotilla_inventory::openapi_document()),
        ("notifications", flotilla_notifications::openapi_document()),
        ("orders", flotilla_orders::openapi_document()),
        ("payments", flotilla_payments::openapi_document()),
        ("shipping", flotilla_shipping::openapi_document()),
    ]
}

/// Every statement of what a caller relies on, with the providers it is made of.
fn expectations() -> Vec<(Expectation, Vec<&'static str>)> {
    let mut all = vec![
        (flotilla::auth::JWKS_CONTRACT, vec!["identity"]),
        (
            flotilla_gateway::openapi::DOCUMENT_CONTRACT,
            vec![
                "catalog",
                "identity",
                "inventory",
                "notifications",
                "orders",
                "payments",
                "shipping",
            ],
        ),
    ];
    // Orders' calls to catalog, identity, inventory, payments and shipping.
    all.extend(
        flotilla_orders::downstream::CONTRACTS
            .iter()
            .map(|expectation| (*expectation, vec![expectation.provider])),
    );
    all
}

#[test]
fn every_caller_gets_what_it_relies_on() {
    let providers = providers();
    let mut broken = Vec::new();
    for (expectation, of) in expectations() {
        for name in of {
            let (_, document) = providers.iter().find(|(n, _)| *n == name).unwrap();
            if let Err(mut problems) = check(&expectation, document) {
                broken.append(&mut problems);
            }
        }
    }
    assert!(broken.is_empty(), "broken contracts:\n{}", broken.join("\n"));
}

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => out.push(target),
                    (_, inner) => refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_published_document_is_whole() {
    for (name, document) in providers() {
        assert_eq!(document["openapi"], "3.1.0", "{name}");
        assert_eq!(document["info"]["title"], name);
        let mut targets = Vec::new();
        refs(&document, &mut targets);
        for target in targets {
            let pointer = target.strip_prefix('#').unwrap_or(target);
            assert!(document.pointer(pointer).is_some(), "{name}: `{target}` leads nowhere");
        }
    }
}

/// Orders' statement of what it relies on in inventory's gRPC API, checked against the
/// compiled `.proto`: the method exists, unary, with the messages orders sends and reads, and
/// every field at the number and type orders encodes and decodes — a renumbered or retyped
/// field would be read as garbage, silently, at run time.
#[test]
fn orders_gets_what_it_relies_on_from_inventorys_grpc_api() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(flotilla_shop_contracts::DESCRIPTORS).unwrap();
    let (method_path, fields) = flotilla_orders::downstream::AVAILABILITY_CONTRACT;
    let (service_path, method_name) = method_path.trim_start_matches('/').split_once('/').unwrap();
    let (package, service_name) = service_path.rsplit_once('.').unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == package)
        .unwrap_or_else(|| panic!("no .proto has package {package}"));
    let service = file.service.iter().find(|s| s.name() == service_name).unwrap();
    let method = service
        .method
        .iter()
        .find(|m| m.name() == method_name)
        .unwrap_or_else(|| panic!("{service_name} has no {method_name}"));
    assert!(
        !method.client_streaming() && !method.server_streaming(),
        "unary, as orders calls it"
    );
    assert_eq!(method.input_type(), format!(".{package}.AvailabilityRequest"));
    assert_eq!(method.output_type(), format!(".{package}.AvailabilityReply"));
    let mut broken = Vec::new();
    for (message, field, number, kind) in fields {
        let found = file
            .message_type
            .iter()
            .find(|m| m.name() == *message)
            .and_then(|m| m.field.iter().find(|f| f.name() == *field));
        match found {
            None => broken.push(format!("{message}.{field} is gone")),
            Some(f) if f.number() != *number || f.r#type().as_str_name() != *kind => broken.push(format!(
                "{message}.{field}: orders relies on #{number} {kind}, the .proto says #{} {}",
                f.number(),
                f.r#type().as_str_name()
            )),
            Some(_) => {}
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}
