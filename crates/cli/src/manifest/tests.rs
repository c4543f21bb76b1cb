use super::*;

fn parse(text: &str) -> Result<Manifest, FileError> {
    Manifest::parse(
        &TomlFile::from_text("/tmp/flotilla.toml", text),
        Path::new("/usr/bin/flotilla-self"),
    )
}

#[test]
fn defaults_run_the_built_in_components() {
    let m = parse("[services.catalog]\n").unwrap();
    assert_eq!(m.control.program.command, Path::new("/usr/bin/flotilla-self"));
    assert_eq!(m.control.program.args, ["control"]);
    assert_eq!(m.gateway.program.args, ["gateway"]);
    assert_eq!(m.control.ttl, Duration::from_secs(3));
    assert_eq!(m.services[0].name, "catalog");
    assert_eq!(m.services[0].instances, 1);
    assert_eq!(m.services[0].program.args, ["service", "catalog"]);
}

#[test]
fn full_service_entry() {
    let m = parse(
        "[services.catalog]\ncommand = \"flotilla\"\nargs = [\"service\", \"catalog\"]\ninstances = 3\nenv = { RUST_LOG = \"debug\" }\n\n[services.legacy]\ncommand = \"sh\"\nargs = [\"-c\", \"exit 0\"]\n",
    )
    .unwrap();
    assert_eq!(m.services[0].instances, 3);
    assert_eq!(m.services[0].program.env["RUST_LOG"], "debug");
    assert!(m.services[1].program.command.ends_with("sh"));
}

#[test]
fn unknown_key_names_line_and_key() {
    let err = parse("[services.catalog]\ninstances = 2\ninstnces = 3\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("instnces"), "{err}");
    assert!(err.to_string().starts_with("/tmp/flotilla.toml:3:"), "{err}");

    let err = parse("[gatewy]\nroutes = \"x\"\n").unwrap_err();
    assert_eq!(err.line, Some(1), "{err}");
    assert!(err.message.contains("gatewy"), "{err}");
}

#[test]
fn bad_values_name_line_and_key() {
    let err = parse("[services.catalog]\ninstances = -1\n").unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("services.catalog.instances"), "{err}");

    let err = parse("[services.catalog]\ninstances = \"two\"\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");

    let err = parse("\n[services.Catalog]\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("not a valid service name"), "{err}");

    let err = parse("[control]\nheartbeat = \"soon\"\n").unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("control.heartbeat"), "{err}");

    let err = parse("[control]\nheartbeat = \"2s\"\nttl = \"3s\"\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
}

#[test]
fn missing_files_and_commands_are_named() {
    let err = parse("[gateway]\nroutes = \"no-such-routes.toml\"\n").unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("no-such-routes.toml"), "{err}");

    let err = parse("[services.x]\ncommand = \"definitely-not-a-program-4242\"\n").unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("not found on PATH"), "{err}");

    let err = parse("[services.x]\ncommand = \"./bin/nothing\"\n").unwrap_err();
    assert!(err.message.contains("does not exist"), "{err}");

    let err = Manifest::load(Path::new("/nonexistent/flotilla.toml"), Path::new("/x")).unwrap_err();
    assert_eq!(err.to_string(), "/nonexistent/flotilla.toml: file not found");
}

#[test]
fn scale_overrides_and_refuses_unknown_services() {
    let mut m = parse("[services.catalog]\n").unwrap();
    m.scale("catalog", 3).unwrap();
    assert_eq!(m.services[0].instances, 3);
    assert!(m.scale("orders", 2).unwrap_err().contains("no service `orders`"));
}

#[test]
fn tls_files_go_together_and_must_exist() {
    let err = parse("[gateway]\ntls_cert = \"cert.pem\"\n").unwrap_err();
    assert!(err.message.contains("go together"), "{err}");
    let err = parse("[gateway]\ntls_cert = \"nope.pem\"\ntls_key = \"nope.key\"\n").unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("gateway.tls_cert"), "{err}");
}

#[test]
fn events_names_a_nats_server_or_is_left_out() {
    assert_eq!(parse("[services.catalog]\n").unwrap().events, None);
    let m = parse("events = \"nats://127.0.0.1:4222\"\n\n[services.catalog]\n").unwrap();
    assert_eq!(m.events.as_deref(), Some("nats://127.0.0.1:4222"));

    let err = parse("# events\n\nevents = \"kafka://broker.example:9092\"\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("events:"), "{err}");
    assert!(err.message.contains("not a NATS URL"), "{err}");
    let err = parse("events = \"nats://\"\n").unwrap_err();
    assert_eq!(err.line, Some(1), "{err}");

    // Under a table it is that table's key, and unknown there.
    let err = parse("[control]\nevents = \"nats://127.0.0.1:4222\"\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("events"), "{err}");
}

#[test]
fn the_public_url_is_an_http_url_with_a_host_and_no_path() {
    let m = parse("[gateway]\npublic_url = \"https://shop.example.com/\"\n").unwrap();
    assert_eq!(m.gateway.public_url.as_deref(), Some("https://shop.example.com"));
    assert_eq!(parse("[services.catalog]\n").unwrap().gateway.public_url, None);
    for bad in [
        "shop.example.com",
        "ftp://shop.example.com",
        "https://shop.example.com/api",
    ] {
        let err = parse(&format!("[gateway]\n\npublic_url = \"{bad}\"\n")).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("gateway.public_url"), "{err}");
    }
}

#[test]
fn services_declare_the_secrets_and_oauth_clients_up_makes_for_them() {
    let m = parse(
        "[services.identity]\nsecrets = [\"seal_key\"]\n\n[services.orders]\noauth_client = { provider = \"identity\", scope = \"a.b c.d\" }\n",
    )
    .unwrap();
    let identity = m.services.iter().find(|s| s.name == "identity").unwrap();
    assert_eq!(identity.secrets, ["seal_key"]);
    let orders = m.services.iter().find(|s| s.name == "orders").unwrap();
    assert_eq!(
        orders.oauth_client,
        Some(OauthClient {
            provider: "identity".into(),
            scope: "a.b c.d".into()
        })
    );
    let err = parse("[services.orders]\n\noauth_client = { provider = \"idp\" }\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("`idp` is not a service"), "{err}");
    let err = parse("[services.identity]\nsecrets = [\"no/slash\"]\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
}

#[test]
fn the_shipped_manifest_gives_orders_the_scopes_it_asks_for() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flotilla.toml");
    let m = Manifest::parse(&TomlFile::read(&path).unwrap(), Path::new("/usr/bin/flotilla-self")).unwrap();
    let orders = m.services.iter().find(|s| s.name == flotilla_orders::SERVICE).unwrap();
    assert_eq!(orders.oauth_client.as_ref().unwrap().scope, flotilla_orders::SCOPES);
    let identity = m
        .services
        .iter()
        .find(|s| s.name == flotilla_identity::SERVICE)
        .unwrap();
    assert_eq!(identity.secrets, ["seal_key"]);
}

#[test]
fn a_service_may_be_granted_calls_to_services_of_the_manifest_only() {
    let m = parse("[services.catalog]\n\n[services.reviews]\ncalls = [\"catalog\"]\n").unwrap();
    let reviews = m.services.iter().find(|s| s.name == "reviews").unwrap();
    assert_eq!(reviews.calls, ["catalog"]);
    let err = parse("[services.reviews]\n\ncalls = [\"catalgo\"]\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(
        err.message
            .contains("services.reviews.calls: `catalgo` is not a service"),
        "{err}"
    );
    assert!(reviews.mtls, "mTLS unless told");
    let m = parse("[services.hello]\nmtls = false\n").unwrap();
    assert!(!m.services[0].mtls, "a program without the SDK is declared plain");
}

#[test]
fn the_control_planes_store_is_embedded_or_a_nats_cluster_named_by_line_when_wrong() {
    use flotilla_control::store::StoreSpec;
    assert_eq!(parse("[control]\n").unwrap().control.store, StoreSpec::Embedded);
    let m = parse("[control]\nstore = \"nats://127.0.0.1:4222,127.0.0.1:4223,127.0.0.1:4224\"\n").unwrap();
    let StoreSpec::Nats(spec) = m.control.store else {
        panic!("not nats")
    };
    assert_eq!((spec.servers.len(), spec.replicas), (3, 3));
    let err = parse("[control]\nttl = \"3s\"\nstore = \"redis://h:6379\"\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("control.store"), "{err}");
}
