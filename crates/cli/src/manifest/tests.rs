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

#[test]
fn resources_are_kubernetes_quantities_with_defaults() {
    let m = parse("[services.catalog]\n").unwrap();
    assert_eq!(m.services[0].resources, Resources::default());
    assert_eq!(m.services[0].resources.cpu_millis, 100);
    assert_eq!(m.services[0].resources.memory_bytes, 64 * 1024 * 1024);
    assert_eq!(m.services[0].autoscale, None);

    let m = parse(
        "[services.catalog]\nresources = { cpu = \"250m\", memory = \"1Gi\", cpu_limit = \"0.5\", memory_limit = \"1.5Gi\" }\n",
    )
    .unwrap();
    assert_eq!(
        m.services[0].resources,
        Resources {
            cpu_millis: 250,
            memory_bytes: 1 << 30,
            cpu_limit_millis: Some(500),
            memory_limit_bytes: Some(3 << 29),
        }
    );
    // A bare number is cores (or bytes), as in YAML.
    let m = parse("[services.catalog]\nresources = { cpu = 2 }\n").unwrap();
    assert_eq!(m.services[0].resources.cpu_millis, 2000);
    assert_eq!(m.services[0].resources.memory_bytes, DEFAULT_MEMORY_BYTES);
}

#[test]
fn quantities_parse_exactly_and_print_as_kubernetes_does() {
    for (text, millis) in [
        ("250m", 250),
        ("0.5", 500),
        ("1", 1000),
        ("1.25", 1250),
        ("20m", 20),
        ("2000m", 2000),
    ] {
        assert_eq!(parse_cpu(text), Ok(millis), "{text}");
    }
    for (text, bytes) in [
        ("64Mi", 64u64 << 20),
        ("1Gi", 1 << 30),
        ("500M", 500_000_000),
        ("128974848", 128_974_848),
        ("1k", 1000),
        ("0.5Ki", 512),
    ] {
        assert_eq!(parse_memory(text), Ok(bytes), "{text}");
    }
    for bad in [
        "", "m", "-1", "1.2.3", ".5", "0", "0m", "0.0001", "1Mi", "12 cores", "1e3",
    ] {
        assert!(parse_cpu(bad).is_err(), "{bad}");
    }
    for bad in ["", "Mi", "64MB", "0", "0.5", "1.5m", "99999999999Ei"] {
        assert!(parse_memory(bad).is_err(), "{bad}");
    }
    assert_eq!(cpu_quantity(250), "250m");
    assert_eq!(cpu_quantity(2000), "2");
    assert_eq!(memory_quantity(64 << 20), "64Mi");
    assert_eq!(memory_quantity(3 << 29), "1536Mi");
    assert_eq!(memory_quantity(500_000_000), "500000000");
}

#[test]
fn bad_quantities_name_the_line_and_key() {
    let err = parse("[services.catalog]\ninstances = 1\nresources = { cpu = \"lots\" }\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("services.catalog.resources.cpu"), "{err}");
    assert!(err.message.contains("`lots` is not a quantity"), "{err}");

    let err = parse("[services.catalog]\n\nresources = { memory = \"64MB\" }\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(
        err.message.contains("resources.memory: `64MB`: unknown suffix `MB`"),
        "{err}"
    );

    let err = parse("[services.catalog]\nresources = { cpu = \"500m\", cpu_limit = \"250m\" }\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(
        err.message.contains("cpu_limit: 250m is below the request, 500m"),
        "{err}"
    );

    let err = parse("[services.catalog]\nresources = { cpus = \"1\" }\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("cpus"), "{err}");
}

#[test]
fn autoscale_takes_the_hpas_numbers_and_defaults() {
    let m = parse("[services.catalog]\ninstances = 2\nautoscale = { min = 1, max = 4, target_cpu = 70 }\n").unwrap();
    let service = &m.services[0];
    assert_eq!(
        service.autoscale,
        Some(Autoscale {
            min: 1,
            max: 4,
            target_cpu: Some(70),
            target_inflight: None,
            scale_down_window: Duration::from_secs(300),
            period: Duration::from_secs(15),
        })
    );
    assert_eq!(service.instances, 2, "the starting count");

    let m = parse(
        "[services.catalog]\ninstances = 9\nautoscale = { min = 2, max = 3, target_inflight = 4, scale_down_window = \"20s\", period = \"3s\" }\n",
    )
    .unwrap();
    let service = &m.services[0];
    let autoscale = service.autoscale.unwrap();
    assert_eq!(autoscale.target_inflight, Some(4.0));
    assert_eq!(autoscale.target_cpu, None);
    assert_eq!(autoscale.scale_down_window, Duration::from_secs(20));
    assert_eq!(autoscale.period, Duration::from_secs(3));
    assert_eq!(service.instances, 3, "clamped into min..=max");
    let m =
        parse("[services.catalog]\nautoscale = { min = 2, max = 3, target_cpu = 50, scale_down_window = \"0s\" }\n")
            .unwrap();
    assert_eq!(m.services[0].instances, 2, "clamped up to min");
    assert_eq!(m.services[0].autoscale.unwrap().scale_down_window, Duration::ZERO);
}

#[test]
fn bad_autoscale_bounds_and_targets_name_the_line() {
    let cases = [
        (
            "autoscale = { min = 0, max = 4, target_cpu = 70 }",
            "autoscale.min: 0 is out of range",
        ),
        (
            "autoscale = { min = 3, max = 2, target_cpu = 70 }",
            "autoscale.max: 2 is out of range (3, the min",
        ),
        (
            "autoscale = { max = 65, target_cpu = 70 }",
            "autoscale.max: 65 is out of range",
        ),
        (
            "autoscale = { max = 4, target_cpu = 0 }",
            "autoscale.target_cpu: 0 is out of range",
        ),
        (
            "autoscale = { max = 4, target_cpu = 1001 }",
            "autoscale.target_cpu: 1001",
        ),
        (
            "autoscale = { max = 4, target_inflight = 0 }",
            "autoscale.target_inflight: 0 is not",
        ),
        ("autoscale = { max = 4 }", "autoscale: needs a target"),
        (
            "autoscale = { max = 4, target_cpu = 70, period = \"soon\" }",
            "autoscale.period: `soon`",
        ),
        (
            "autoscale = { max = 4, target_cpu = 70, period = \"500ms\" }",
            "autoscale.period: at least 1s",
        ),
        (
            "autoscale = { max = 4, target_cpu = 70, scale_down_window = \"2h\" }",
            "scale_down_window: at most 1h",
        ),
        // Unknown and missing keys are the parser's own errors, named and placed as well.
        (
            "autoscale = { max = 4, target_cpu = 70, target_memory = 80 }",
            "unknown field `target_memory`",
        ),
        ("autoscale = { min = 1, target_cpu = 70 }", "missing field `max`"),
    ];
    for (line, wanted) in cases {
        let err = parse(&format!("[services.catalog]\ninstances = 1\n{line}\n")).unwrap_err();
        assert_eq!(err.line, Some(3), "{line}: {err}");
        assert!(err.message.contains(wanted), "{line}: {err}");
    }
}

#[test]
fn the_shipped_manifest_requests_resources_for_every_service_and_its_autoscale_lines_parse() {
    // The numbers themselves are the cluster overlay's (tests/kube.rs compares them).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flotilla.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Read where it lies, so its routes file is found.
    let parse = |text: &str| Manifest::parse(&TomlFile::from_text(&path, text), Path::new("/usr/bin/flotilla-self"));
    let m = parse(&text).unwrap();
    for service in &m.services {
        assert!(
            text.contains(&format!("[services.{}]", service.name)) && service.resources != Resources::default(),
            "{}: resources of its own",
            service.name
        );
        assert!(
            service.resources.memory_limit_bytes >= Some(service.resources.memory_bytes),
            "{}",
            service.name
        );
        assert_eq!(service.autoscale, None, "{}: off under `up` as shipped", service.name);
    }
    // Uncommented, each is the cluster overlay's HPA.
    let m = parse(&text.replace("# autoscale = ", "autoscale = ")).unwrap();
    for service in &m.services {
        let autoscale = service.autoscale.unwrap();
        assert_eq!(
            (autoscale.min, autoscale.max, autoscale.target_cpu),
            (1, 4, Some(70)),
            "{}",
            service.name
        );
        assert_eq!(autoscale.scale_down_window, DEFAULT_SCALE_DOWN_WINDOW);
    }
}
