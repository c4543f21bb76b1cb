//! `flotilla new service NAME`: a service crate that builds on the first try and runs under
//! `up` at once — a few lines of `main`, handlers for a verified caller, a migration, its own
//! database, a call to another service, typed live config, its OpenAPI document made from the
//! code, a unit test and a test of the real binary — then built, added to `flotilla.toml`
//! (with the `calls` it makes) and given a route in the gateway's routes file, which a running
//! `up` picks up within a second.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files of a new service: (path in the crate, template).
const FILES: &[(&str, &str)] = &[
    ("src/main.rs", include_str!("template/main.rs")),
    ("src/lib.rs", include_str!("template/lib.rs")),
    ("src/api.rs", include_str!("template/api.rs")),
    ("src/config.rs", include_str!("template/config.rs")),
    (
        "migrations/0001_entries.sql",
        include_str!("template/migrations/0001_entries.sql"),
    ),
    ("tests/service.rs", include_str!("template/tests/service.rs")),
];

/// The service a new one checks its subjects with, when the system runs it.
const SUBJECT_SERVICE: &str = "catalog";
const SUBJECT_PATH: &str = "/api/v1/products/{subject}";

/// Where the SDK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// The enclosing workspace's `[workspace.dependencies] flotilla`.
    Workspace,
    /// A checkout's `crates/sdk`.
    Path(PathBuf),
    /// A published version.
    Version(String),
}

/// What to make.
#[derive(Debug, Clone)]
pub struct NewService {
    /// The service's (and crate's) name.
    pub name: String,
    /// The crate's directory (must not exist, or be empty).
    pub dir: PathBuf,
    /// The SDK to depend on, unless the enclosing workspace has it.
    pub sdk: Sdk,
    /// The manifest to add it to, if any.
    pub manifest: Option<PathBuf>,
}

/// What was made.
#[derive(Debug, Clone)]
pub struct Scaffolded {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The workspace it was added to, if any.
    pub workspace: Option<PathBuf>,
    /// The services it calls (granted in the manifest).
    pub calls: Vec<String>,
}

/// Why a service could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not a service name.
    #[error("{0}")]
    Name(String),
    /// The directory holds something already.
    #[error("{0} exists and is not empty; choose another --path")]
    Exists(PathBuf),
    /// The manifest already has the service.
    #[error("{manifest} already has a service `{name}`")]
    Taken {
        /// The manifest.
        manifest: PathBuf,
        /// The service.
        name: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Cargo.toml or manifest could not be edited.
    #[error("{path}: {reason}")]
    Edit {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The build failed.
    #[error(
        "building {name} failed (cargo's messages are above); fix it and run `cargo build --manifest-path {manifest}`"
    )]
    Build {
        /// The service.
        name: String,
        /// Its Cargo.toml.
        manifest: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `reviews-api` → `ReviewsApi`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The SDK a standalone crate depends on: this checkout's, when the binary was built from one
/// that is still there, else the published version.
pub fn default_sdk() -> Sdk {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    match checkout.join("Cargo.toml").is_file() {
        true => Sdk::Path(checkout.canonicalize().unwrap_or(checkout)),
        false => Sdk::Version(env!("CARGO_PKG_VERSION").to_owned()),
    }
}

/// The nearest directory above `dir` whose Cargo.toml has a `[workspace]`.
fn enclosing_workspace(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().skip(1).find_map(|candidate| {
        let text = std::fs::read_to_string(candidate.join("Cargo.toml")).ok()?;
        let doc: toml_edit::DocumentMut = text.parse().ok()?;
        doc.get("workspace").map(|_| candidate.to_path_buf())
    })
}

/// Makes the crate. Nothing is built or registered yet: see [`build`] and [`register`].
pub fn scaffold(new: &NewService) -> Result<Scaffolded, ScaffoldError> {
    flotilla_api::registry::validate_service_name(&new.name).map_err(ScaffoldError::Name)?;
    if std::fs::read_dir(&new.dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(new.dir.clone()));
    }
    std::fs::create_dir_all(&new.dir).map_err(io(&new.dir))?;
    let dir = new.dir.canonicalize().map_err(io(&new.dir))?;
    let manifest = match &new.manifest {
        Some(path) if path.is_file() => {
            let text = std::fs::read_to_string(path).map_err(io(path))?;
            let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| ScaffoldError::Edit {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            if doc.get("services").and_then(|s| s.get(&new.name)).is_some() {
                return Err(ScaffoldError::Taken {
                    manifest: path.clone(),
                    name: new.name.clone(),
                });
            }
            Some(doc)
        }
        _ => None,
    };
    // The subject check asks the catalog only where the system runs one.
    let runs_catalog = manifest
        .as_ref()
        .is_some_and(|doc| doc.get("services").and_then(|s| s.get(SUBJECT_SERVICE)).is_some());
    let (subject_service, subject_path) = match runs_catalog {
        true => (SUBJECT_SERVICE, SUBJECT_PATH),
        false => ("", ""),
    };
    let workspace = enclosing_workspace(&dir);
    let workspace_doc = workspace.as_ref().and_then(|root| {
        std::fs::read_to_string(root.join("Cargo.toml"))
            .ok()?
            .parse::<toml_edit::DocumentMut>()
            .ok()
    });
    let in_workspace = |key: &str| {
        workspace_doc
            .as_ref()
            .and_then(|doc| doc.get("workspace")?.get(key))
            .is_some()
    };
    let workspace_has_sdk = workspace_doc
        .as_ref()
        .and_then(|doc| doc.get("workspace")?.get("dependencies")?.get("flotilla"))
        .is_some();
    let workspace_lints = workspace.as_ref().map(|_| in_workspace("lints"));
    let sdk = if workspace_has_sdk {
        Sdk::Workspace
    } else {
        new.sdk.clone()
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", &new.name)
            .replace("{{crate}}", &new.name.replace('-', "_"))
            .replace("{{Type}}", &type_name(&new.name))
            .replace("{{subject_service}}", subject_service)
            .replace("{{subject_path}}", subject_path)
    };
    for (path, template) in FILES {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, fill(template)).map_err(io(&path))?;
    }
    let cargo_toml = dir.join("Cargo.toml");
    std::fs::write(&cargo_toml, cargo_toml_text(&new.name, &sdk, workspace_lints)).map_err(io(&cargo_toml))?;
    if let Some(root) = &workspace {
        add_member(root, &dir)?;
    } else if let Sdk::Path(sdk_dir) = &sdk {
        // The versions the SDK is tested with (and built with, so a shared target dir reuses
        // its artifacts): cargo keeps what the new crate uses and drops the rest.
        let lock = sdk_dir.join("../../Cargo.lock");
        if lock.is_file() {
            std::fs::copy(&lock, dir.join("Cargo.lock")).map_err(io(&lock))?;
        }
    }
    Ok(Scaffolded {
        dir,
        workspace,
        calls: if runs_catalog {
            vec![SUBJECT_SERVICE.to_owned()]
        } else {
            Vec::new()
        },
    })
}

fn cargo_toml_text(name: &str, sdk: &Sdk, workspace_lints: Option<bool>) -> String {
    let dependency = match sdk {
        Sdk::Workspace => "flotilla.workspace = true".to_owned(),
        Sdk::Path(path) => format!("flotilla = {{ path = {:?} }}", path.display().to_string()),
        Sdk::Version(version) => format!("flotilla = \"{version}\""),
    };
    let mut text = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         # Everything a service is written with comes through the SDK (flotilla::axum, ::sqlx,\n\
         # ::serde, ::tokio, ::utoipa, ...): one dependency, at the versions the SDK is built on.\n\
         [dependencies]\n{dependency}\n"
    );
    match workspace_lints {
        Some(true) => text.push_str("\n[lints]\nworkspace = true\n"),
        Some(false) => {}
        None => {
            // Its own workspace: a crate made inside another project's tree is not taken for
            // one of its members.
            text.push_str(
                "\n[lints.clippy]\n# Handlers answer `Result<_, Problem>`: the problem document is the response, made\n\
                 # once per failed request, so its size on the stack is not worth a box.\nresult_large_err = \"allow\"\n\n[workspace]\n",
            );
        }
    }
    text
}

/// Adds `dir` to the workspace at `root`'s `members`.
fn add_member(root: &Path, dir: &Path) -> Result<(), ScaffoldError> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| ScaffoldError::Edit {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let member = dir
        .strip_prefix(root.canonicalize().map_err(io(root))?)
        .unwrap_or(dir)
        .display()
        .to_string();
    let workspace = doc["workspace"].or_insert(toml_edit::table());
    let members = workspace["members"].or_insert(toml_edit::value(toml_edit::Array::new()));
    let Some(members) = members.as_array_mut() else {
        return Err(ScaffoldError::Edit {
            path,
            reason: "`workspace.members` is not a list".into(),
        });
    };
    if !members.iter().any(|m| m.as_str() == Some(member.as_str())) {
        members.push(member);
    }
    std::fs::write(&path, doc.to_string()).map_err(io(&path))
}

/// Builds the service's binary, cargo's progress on stderr; the executable's path.
pub fn build(dir: &Path, name: &str) -> Result<PathBuf, ScaffoldError> {
    let manifest = dir.join("Cargo.toml");
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--bin",
            name,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io(&manifest))?;
    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] == "compiler-artifact" && message["target"]["name"] == name {
                if let Some(path) = message["executable"].as_str() {
                    executable = Some(PathBuf::from(path));
                }
            }
        }
    }
    let status = child.wait().map_err(io(&manifest))?;
    match (status.success(), executable) {
        (true, Some(executable)) => Ok(executable),
        _ => Err(ScaffoldError::Build {
            name: name.to_owned(),
            manifest,
        }),
    }
}

/// Adds the service to the manifest (running `executable`, granted its `calls`) and a route
/// `/api/v1/NAME` to the manifest's routes file; what was changed.
pub fn register(
    manifest: &Path,
    name: &str,
    executable: &Path,
    calls: &[String],
) -> Result<Vec<String>, ScaffoldError> {
    let mut changed = Vec::new();
    let text = std::fs::read_to_string(manifest).map_err(io(manifest))?;
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| ScaffoldError::Edit {
        path: manifest.to_path_buf(),
        reason: e.to_string(),
    })?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    let command = match executable.strip_prefix(&base) {
        Ok(inside) => inside.display().to_string(),
        Err(_) => executable.display().to_string(),
    };
    let command = if command.contains('/') {
        command
    } else {
        format!("./{command}")
    };
    let mut entry =
        format!("\n[services.{name}]\ncommand = {command:?}\ninstances = 1\nenv = {{ RUST_LOG = \"info\" }}\n");
    if !calls.is_empty() {
        let list: Vec<String> = calls.iter().map(|c| format!("{c:?}")).collect();
        entry.push_str(&format!(
            "calls = [{}]   # lets it call them over mTLS (checking subjects)\n",
            list.join(", ")
        ));
    }
    append(manifest, &text, &entry)?;
    changed.push(manifest.display().to_string());
    let routes = doc
        .get("gateway")
        .and_then(|g| g.get("routes"))
        .and_then(|r| r.as_str())
        .map(|r| base.join(r));
    if let Some(routes) = routes.filter(|r| r.is_file()) {
        let text = std::fs::read_to_string(&routes).map_err(io(&routes))?;
        let prefix = format!("/api/v1/{name}");
        if !text.contains(&format!("\"{prefix}\"")) {
            let route = format!("\n# {name}, scaffolded by `flotilla new service`.\n[[routes]]\nprefix = \"{prefix}\"\nservice = \"{name}\"\n");
            append(&routes, &text, &route)?;
            changed.push(routes.display().to_string());
        }
    }
    Ok(changed)
}

/// Waits until the gateway at `gateway` (`host:port`) answers `/api/v1/NAME` from the service
/// itself (not 404 for want of a route, nor 502–504 for want of an instance); how long that
/// took, or `None` after `within`.
pub fn wait_for_answer(gateway: &str, name: &str, within: std::time::Duration) -> Option<std::time::Duration> {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        let status = std::net::TcpStream::connect(gateway).ok().and_then(|mut stream| {
            stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
            write!(
                stream,
                "GET /api/v1/{name} HTTP/1.1\r\nhost: {gateway}\r\nconnection: close\r\n\r\n"
            )
            .ok()?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).ok()?;
            std::str::from_utf8(&head[9..12]).ok()?.parse::<u16>().ok()
        });
        if status.is_some_and(|s| !matches!(s, 404 | 502..=504)) {
            return Some(started.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

fn append(path: &Path, text: &str, more: &str) -> Result<(), ScaffoldError> {
    let mut whole = text.to_owned();
    if !whole.ends_with('\n') {
        whole.push('\n');
    }
    whole.push_str(more);
    // Written whole and renamed: a running `up` never reads half of it.
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, whole).map_err(io(&tmp))?;
    if let Ok(metadata) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, metadata.permissions()).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests;
