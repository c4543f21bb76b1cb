use super::*;

fn system(dir: &Path, with_catalog: bool) -> PathBuf {
    let manifest = dir.join("flotilla.toml");
    let mut text = String::from("# the system\n[gateway]\nroutes = \"routes.toml\"\n");
    if with_catalog {
        text.push_str("\n[services.catalog]\ncommand = \"flotilla\"\n");
    }
    std::fs::write(&manifest, text).unwrap();
    std::fs::write(
        dir.join("routes.toml"),
        "[[routes]]\nprefix = \"/api/v1/products\"\nservice = \"catalog\"\n",
    )
    .unwrap();
    manifest
}

#[test]
fn a_standalone_service_gets_every_file_the_sdk_by_path_and_the_calls_its_system_allows() {
    let root = tempfile::tempdir().unwrap();
    let manifest = system(root.path(), true);
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()
        .unwrap();
    let made = scaffold(&NewService {
        name: "product-reviews".into(),
        dir: root.path().join("product-reviews"),
        sdk: Sdk::Path(sdk.clone()),
        manifest: Some(manifest),
    })
    .unwrap();
    assert_eq!(made.workspace, None);
    assert_eq!(made.calls, ["catalog"]);
    for (file, _) in FILES {
        let text = std::fs::read_to_string(made.dir.join(file)).unwrap();
        assert!(!text.contains("{{"), "{file} has a placeholder left: {text}");
    }
    let main = std::fs::read_to_string(made.dir.join("src/main.rs")).unwrap();
    assert!(
        main.contains("flotilla::app::main::<product_reviews::ProductReviews>()"),
        "{main}"
    );
    let config = std::fs::read_to_string(made.dir.join("src/config.rs")).unwrap();
    assert!(config.contains("\"catalog\".into()"), "{config}");
    let cargo = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains(&format!("flotilla = {{ path = {:?} }}", sdk.display().to_string())),
        "{cargo}"
    );
    assert!(cargo.ends_with("\n[workspace]\n"), "its own workspace: {cargo}");
    assert!(cargo.contains("result_large_err = \"allow\""), "{cargo}");
    assert!(made.dir.join("Cargo.lock").is_file(), "the SDK's lockfile comes along");
    // main.rs and the App impl are all a service needs beyond its handlers (the goal: 15).
    let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
    let beyond = start_up_lines(&main) + start_up_lines(&lib);
    assert!(beyond <= 15, "{beyond} lines of start-up code");
}

/// Lines of code that are not its modules' declarations, comments or blank.
pub(crate) fn start_up_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("pub mod "))
        .count()
}

#[test]
fn inside_a_workspace_the_service_becomes_a_member_on_the_workspace_sdk() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("Cargo.toml"),
        "[workspace]\nresolver = \"2\"\nmembers = [\"crates/a\"]\n\n[workspace.dependencies]\nflotilla = { path = \"crates/sdk\" }\n\n[workspace.lints.rust]\nunsafe_code = \"forbid\"\n",
    )
    .unwrap();
    let made = scaffold(&NewService {
        name: "reviews".into(),
        dir: root.path().join("services/reviews"),
        sdk: Sdk::Version("0.1.0".into()),
        manifest: None,
    })
    .unwrap();
    assert_eq!(
        made.workspace.as_deref(),
        Some(root.path().canonicalize().unwrap().as_path())
    );
    assert!(made.calls.is_empty(), "no manifest, no catalog to call");
    let cargo = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains("flotilla.workspace = true") && !cargo.contains("[workspace]"),
        "{cargo}"
    );
    assert!(
        cargo.ends_with("[lints]\nworkspace = true\n"),
        "the workspace's lints: {cargo}"
    );
    let workspace = std::fs::read_to_string(root.path().join("Cargo.toml")).unwrap();
    assert!(
        workspace.contains("members = [\"crates/a\", \"services/reviews\"]"),
        "{workspace}"
    );
    let config = std::fs::read_to_string(made.dir.join("src/config.rs")).unwrap();
    assert!(
        config.contains("subject_service: \"\".into()"),
        "unchecked without a catalog: {config}"
    );
}

#[test]
fn registering_adds_a_service_the_manifest_accepts_and_a_route() {
    let root = tempfile::tempdir().unwrap();
    let manifest = system(root.path(), true);
    let exe = root.path().join("target/debug/reviews");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::write(&exe, "").unwrap();
    let changed = register(&manifest, "reviews", &exe, &["catalog".to_owned()]).unwrap();
    assert_eq!(changed.len(), 2);
    let parsed = crate::manifest::Manifest::load(&manifest, Path::new("/usr/bin/flotilla")).unwrap();
    let reviews = parsed.services.iter().find(|s| s.name == "reviews").unwrap();
    assert_eq!(reviews.calls, ["catalog"]);
    assert_eq!(
        reviews.program.command,
        root.path().canonicalize().unwrap().join("target/debug/reviews")
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.starts_with("# the system\n"), "comments kept: {text}");
    let routes = flotilla::config::TomlFile::read(root.path().join("routes.toml")).unwrap();
    let routes = flotilla_gateway::routes::RouteTable::file_to_json(&routes).unwrap();
    assert_eq!(routes[1]["prefix"], "/api/v1/reviews");
    assert_eq!(routes[1]["service"], "reviews");
    // A second time: the manifest refuses the name before anything is written.
    let again = scaffold(&NewService {
        name: "reviews".into(),
        dir: root.path().join("again"),
        sdk: Sdk::Version("0.1.0".into()),
        manifest: Some(manifest),
    })
    .unwrap_err();
    assert!(
        again.to_string().ends_with("already has a service `reviews`"),
        "{again}"
    );
}

#[test]
fn a_bad_name_or_a_full_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let new = |name: &str, dir: &Path| NewService {
        name: name.into(),
        dir: dir.to_path_buf(),
        sdk: Sdk::Version("0.1.0".into()),
        manifest: None,
    };
    let err = scaffold(&new("Reviews", &root.path().join("x"))).unwrap_err();
    assert!(err.to_string().contains("not a valid service name"), "{err}");
    std::fs::write(root.path().join("file"), "").unwrap();
    let err = scaffold(&new("reviews", root.path())).unwrap_err();
    assert!(err.to_string().contains("exists and is not empty"), "{err}");
}
