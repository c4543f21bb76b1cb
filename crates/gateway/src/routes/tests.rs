use http::{HeaderMap, HeaderValue, Method};

use super::*;

fn table(text: &str) -> Result<RouteTable, FileError> {
    let specs = RouteTable::parse(&TomlFile::from_text("routes.toml", text))?;
    let discovery = Discovery::fixed(flotilla_api::InstanceList {
        index: 1,
        ..Default::default()
    });
    let upstreams = Upstreams::new(Some(discovery), None);
    Ok(RouteTable::build(specs, &upstreams).unwrap())
}

fn find<'a>(t: &'a RouteTable, path: &str) -> Option<&'a str> {
    t.find(path, &Method::GET, Some("shop.example"), &HeaderMap::new())
        .map(|r| r.name.as_str())
}

#[tokio::test]
async fn longest_prefix_on_segment_boundaries() {
    let t = table(
        r#"
[[routes]]
prefix = "/api/v1/products"
service = "catalog"

[[routes]]
prefix = "/"
upstreams = ["http://127.0.0.1:9000"]
"#,
    )
    .unwrap();
    assert_eq!(find(&t, "/api/v1/products"), Some("catalog"));
    assert_eq!(find(&t, "/api/v1/products/7"), Some("catalog"));
    assert_eq!(find(&t, "/api/v1/productsX"), Some("/"));
    assert_eq!(find(&t, "/anything"), Some("/"));
}

#[tokio::test]
async fn templates_hosts_methods_and_headers() {
    let t = table(
        r#"
[[routes]]
name = "order"
path = "/api/v1/orders/{id}"
service = "orders"

[[routes]]
name = "orders"
prefix = "/api/v1/orders"
service = "orders"

[[routes]]
name = "canary"
prefix = "/api/v1/orders"
headers = { "x-canary" = "1" }
service = "orders-next"

[[routes]]
name = "admin-write"
prefix = "/admin"
hosts = ["*.example"]
methods = ["post", "DELETE"]
service = "admin"
"#,
    )
    .unwrap();
    assert_eq!(find(&t, "/api/v1/orders/42"), Some("order"));
    assert_eq!(find(&t, "/api/v1/orders/42/lines"), Some("orders"));
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", HeaderValue::from_static("1"));
    let pick = |path: &str, method: Method, host: &str, headers: &HeaderMap| {
        t.find(path, &method, Some(host), headers).map(|r| r.name.clone())
    };
    assert_eq!(
        pick("/api/v1/orders", Method::GET, "x", &canary).as_deref(),
        Some("canary")
    );
    assert_eq!(
        pick("/admin/x", Method::POST, "shop.example", &HeaderMap::new()).as_deref(),
        Some("admin-write")
    );
    assert_eq!(pick("/admin/x", Method::GET, "shop.example", &HeaderMap::new()), None);
    assert_eq!(pick("/admin/x", Method::POST, "evil.test", &HeaderMap::new()), None);
}

#[tokio::test]
async fn strip_and_rewrite_keep_a_rooted_path() {
    let t = table(
        "[[routes]]\nprefix = \"/legacy/\"\nupstreams = [\"http://127.0.0.1:9\"]\nstrip_prefix = true\n\n\
         [[routes]]\nprefix = \"/v1\"\nrewrite_prefix = \"/api/v2\"\nupstreams = [\"http://127.0.0.1:9\"]\n",
    )
    .unwrap();
    let legacy = t.find("/legacy/a/b", &Method::GET, None, &HeaderMap::new()).unwrap();
    assert_eq!(legacy.upstream_path("/legacy/a/b"), "/a/b");
    assert_eq!(legacy.upstream_path("/legacy"), "/");
    let v1 = t.find("/v1/things", &Method::GET, None, &HeaderMap::new()).unwrap();
    assert_eq!(v1.upstream_path("/v1/things"), "/api/v2/things");
    assert_eq!(v1.upstream_path("/v1"), "/api/v2");
    assert!(t.find("/legacyx", &Method::GET, None, &HeaderMap::new()).is_none());
}

#[tokio::test]
async fn errors_name_the_line() {
    let line = |text: &str| table(text).unwrap_err().line;
    assert_eq!(
        line("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\nupstreams = [\"http://x:1\"]\n"),
        Some(2)
    );
    assert_eq!(line("[[routes]]\nprefix = \"/a\"\nservic = \"a\"\n"), Some(3));
    assert_eq!(
        line("[[routes]]\nprefix = \"/a\"\nupstreams = [\"ftp://x\"]\n"),
        Some(3)
    );
    assert_eq!(
        line("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\ntimeout = \"soon\"\n"),
        Some(4)
    );
    assert_eq!(
        line("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\nattempts = 0\n"),
        Some(4)
    );
    assert_eq!(line("[[routes]]\npath = \"/a/{*x}/b\"\nservice = \"a\"\n"), Some(2));
    assert_eq!(
        line("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\nmax_body = \"lots\"\n"),
        Some(4)
    );
    assert_eq!(
        line("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\nrate_limit = { requests = 0, per = \"1s\" }\n"),
        Some(4)
    );
    assert_eq!(
        line("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\ncors = { origins = [\"*\"], credentials = true }\n"),
        Some(4)
    );
    let err = table("[[routes]]\nprefix = \"a\"\nservice = \"a\"\n").unwrap_err();
    assert!(err.message.contains("must start with '/'"), "{err}");
    let err = table("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\n[[routes]]\nprefix = \"/a\"\nservice = \"b\"\n")
        .unwrap_err();
    assert!(err.message.contains("same requests"), "{err}");
}

#[tokio::test]
async fn a_service_route_needs_discovery() {
    let specs = RouteTable::parse(&TomlFile::from_text(
        "r.toml",
        "[[routes]]\nprefix = \"/a\"\nservice = \"a\"\n",
    ))
    .unwrap();
    let upstreams = Upstreams::new(None, None);
    assert!(matches!(
        RouteTable::build(specs, &upstreams),
        Err(BuildError::NoDiscovery { .. })
    ));
}
