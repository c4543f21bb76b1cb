//! `flotilla kube init`: what a Kubernetes deployment needs that must not be checked in —
//! the operator's token, the workload CA and the config sealing key (the same on every
//! control-plane replica and across restarts), one control-plane credential per workload, the
//! services' database URLs — and the manifest the seed Job reads, written as a kustomization
//! the overlays under `deploy/kubernetes` include. Keys already there are kept: making a new
//! CA or sealing key under a running system would leave its certificates and secrets
//! unreadable.

use std::path::{Path, PathBuf};

use crate::manifest::Manifest;

/// The instance name every pod of a service carries in its credential (one Secret per
/// service, shared by its pods).
pub const CLUSTER_INSTANCE: &str = "cluster";

/// Workloads that are not services of the manifest but speak to the control plane.
const PLATFORM: &[&str] = &["gateway"];

/// Why the generated directory could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA could not be made or read.
    #[error(transparent)]
    Authority(#[from] flotilla_control::ca::CaError),
    /// The sealing key could not be made or read.
    #[error(transparent)]
    Seal(#[from] flotilla::seal::SealError),
    /// A service's name cannot be carried in a credential.
    #[error("`{0}` cannot be named in a credential (letters, digits, `-`, `_`, `.`)")]
    Name(String),
}

/// What [`init`] is told.
#[derive(Debug, Clone)]
pub struct Init {
    /// Where to write (`deploy/kubernetes/generated`).
    pub out: PathBuf,
    /// The system's manifest: its services get credentials and databases, and it is copied
    /// (with its routes file) for the seed Job.
    pub manifest: Manifest,
    /// The PostgreSQL server the `cluster` overlay's services use (`postgres://user:pw@host:5432`);
    /// the demo StatefulSet's when not given.
    pub postgres: Option<String>,
}

/// Writes (or completes) the directory; returns a line per thing made.
pub fn init(init: &Init) -> Result<Vec<String>, KubeError> {
    let out = &init.out;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KubeError::Io { path, source }
    };
    let mut said = Vec::new();
    let keys = out.join("keys");
    let made_ca = !keys.join("ca.key").exists();
    std::fs::create_dir_all(&keys).map_err(io(&keys))?;
    flotilla_control::ca::Authority::load_or_create(&keys)?;
    flotilla::seal::Sealer::from_file(&keys.join("config.key"))?;
    if made_ca {
        said.push(format!(
            "made the workload CA and the config sealing key in {}",
            keys.display()
        ));
    }
    let operator = out.join("operator");
    std::fs::create_dir_all(&operator).map_err(io(&operator))?;
    let token = crate::token::ensure(&operator).map_err(io(&operator))?;
    let keyring = flotilla_control::acl::Keyring::new(&token);

    let credentials = out.join("credentials");
    std::fs::create_dir_all(&credentials).map_err(io(&credentials))?;
    let workloads: Vec<String> = PLATFORM
        .iter()
        .map(|s| (*s).to_owned())
        .chain(init.manifest.services.iter().map(|s| s.name.clone()))
        .collect();
    for name in &workloads {
        let credential = keyring
            .service(name, CLUSTER_INSTANCE)
            .ok_or_else(|| KubeError::Name(name.clone()))?;
        let path = credentials.join(name);
        flotilla::data_dir::replace_private(&path, credential.as_bytes()).map_err(io(&path))?;
    }
    let reader = keyring.reader("prometheus").unwrap_or_default();
    let path = credentials.join("prometheus");
    flotilla::data_dir::replace_private(&path, reader.as_bytes()).map_err(io(&path))?;
    said.push(format!(
        "wrote control-plane credentials for {} and a read-only one for Prometheus",
        workloads.join(", ")
    ));

    let databases = out.join("databases");
    std::fs::create_dir_all(&databases).map_err(io(&databases))?;
    let password_file = databases.join("password");
    let password = match std::fs::read_to_string(&password_file) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => {
            let password = random_hex(24);
            flotilla::data_dir::replace_private(&password_file, password.as_bytes()).map_err(io(&password_file))?;
            password
        }
    };
    let server = init
        .postgres
        .clone()
        .unwrap_or_else(|| format!("postgres://flotilla:{password}@postgres:5432"));
    let server = server.trim_end_matches('/');
    let mut names = Vec::new();
    for name in init.manifest.services.iter().map(|s| s.name.as_str()).chain(["traces"]) {
        let database = format!("flotilla_{}", name.replace('-', "_"));
        let path = databases.join(name);
        flotilla::data_dir::replace_private(&path, format!("{server}/{database}").as_bytes()).map_err(io(&path))?;
        names.push(database);
    }
    let init_sql: String = names.iter().map(|n| format!("CREATE DATABASE {n};\n")).collect();
    let path = databases.join("init.sql");
    flotilla::data_dir::replace_private(&path, init_sql.as_bytes()).map_err(io(&path))?;

    // The manifest and its routes for the seed Job, as the repository has them now.
    let shop = out.join("manifest");
    std::fs::create_dir_all(&shop).map_err(io(&shop))?;
    let copy = |from: &Path, name: &str| -> Result<(), KubeError> {
        let to = shop.join(name);
        std::fs::copy(from, &to).map(drop).map_err(io(from))
    };
    copy(&init.manifest.path, "flotilla.toml")?;
    let routes = init.manifest.gateway.routes.as_deref();
    if let Some(routes) = routes {
        copy(routes, "routes.toml")?;
    }

    let kustomization = kustomization(&workloads, &init.manifest, routes.is_some());
    let path = out.join("kustomization.yaml");
    std::fs::write(&path, kustomization).map_err(io(&path))?;
    said.push(format!("wrote {}", path.display()));
    Ok(said)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The generators: Secrets for keys, token, credentials and database URLs; ConfigMaps for
/// the CA certificate (public), the manifest and the demo database's init script. Fixed
/// names, so the base refers to them.
fn kustomization(workloads: &[String], manifest: &Manifest, routes: bool) -> String {
    let list =
        |names: &mut dyn Iterator<Item = String>| -> String { names.map(|n| format!("      - {n}\n")).collect() };
    let credentials = list(
        &mut workloads
            .iter()
            .chain(std::iter::once(&"prometheus".to_owned()))
            .map(|n| format!("{n}=credentials/{n}")),
    );
    let databases = list(
        &mut manifest
            .services
            .iter()
            .map(|s| s.name.clone())
            .chain(["traces".to_owned(), "password".to_owned()])
            .map(|n| format!("{n}=databases/{n}")),
    );
    let manifest_files = if routes {
        "      - flotilla.toml=manifest/flotilla.toml\n      - routes.toml=manifest/routes.toml\n"
    } else {
        "      - flotilla.toml=manifest/flotilla.toml\n"
    };
    format!(
        "# Made by `flotilla kube init`: this system's keys, credentials and database URLs.\n\
         # Keep it out of version control; run the command again to refresh the manifest copy.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         generatorOptions:\n  disableNameSuffixHash: true\n  labels:\n    app.kubernetes.io/part-of: flotilla\n\
         secretGenerator:\n\
         \x20 - name: flotilla-control-keys\n    files:\n      - ca.key=keys/ca.key\n      - ca.pem=keys/ca.pem\n      - config.key=keys/config.key\n\
         \x20 - name: flotilla-operator\n    files:\n      - token=operator/token\n\
         \x20 - name: flotilla-credentials\n    files:\n{credentials}\
         \x20 - name: flotilla-databases\n    files:\n{databases}\
         configMapGenerator:\n\
         \x20 - name: flotilla-ca\n    files:\n      - ca.pem=keys/ca.pem\n\
         \x20 - name: flotilla-manifest\n    files:\n{manifest_files}\
         \x20 - name: flotilla-postgres-init\n    files:\n      - init.sql=databases/init.sql\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path) -> Manifest {
        std::fs::write(
            dir.join("routes.toml"),
            "[[routes]]\nname = \"catalog\"\npath = \"/api/v1/products\"\nservice = \"catalog\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("flotilla.toml"),
            "[gateway]\nroutes = \"routes.toml\"\n[services.catalog]\ncommand = \"flotilla\"\nargs = [\"service\", \"catalog\"]\n",
        )
        .unwrap();
        Manifest::load(&dir.join("flotilla.toml"), Path::new("/bin/flotilla")).unwrap()
    }

    #[test]
    fn init_writes_every_file_the_kustomization_names_and_keeps_keys() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("generated");
        let init = Init {
            out: out.clone(),
            manifest: manifest(dir.path()),
            postgres: None,
        };
        super::init(&init).unwrap();
        let text = std::fs::read_to_string(out.join("kustomization.yaml")).unwrap();
        for line in text.lines().filter_map(|l| l.trim().strip_prefix("- ")) {
            if let Some((_, file)) = line.split_once('=') {
                assert!(out.join(file).is_file(), "{file} named but not written");
            }
        }
        let ca = std::fs::read(out.join("keys/ca.pem")).unwrap();
        let token = std::fs::read(out.join("operator/token")).unwrap();
        super::init(&init).unwrap();
        assert_eq!(std::fs::read(out.join("keys/ca.pem")).unwrap(), ca, "the CA is kept");
        assert_eq!(
            std::fs::read(out.join("operator/token")).unwrap(),
            token,
            "the token is kept"
        );
        let credential = std::fs::read_to_string(out.join("credentials/catalog")).unwrap();
        let expected = flotilla_control::acl::Keyring::new(std::str::from_utf8(&token).unwrap().trim())
            .service("catalog", CLUSTER_INSTANCE)
            .unwrap();
        assert_eq!(credential, expected);
        let url = std::fs::read_to_string(out.join("databases/catalog")).unwrap();
        assert!(
            url.starts_with("postgres://flotilla:") && url.ends_with("@postgres:5432/flotilla_catalog"),
            "{url}"
        );
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.join("keys/ca.key")).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "keys are the owner's only");
    }
}
