//! The deployment as Kubernetes would receive it: `deploy/kubernetes` copied to a temp dir,
//! its keys made by `flotilla kube init`, the overlay rendered by `kubectl kustomize`, and
//! the objects read back.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// One overlay, rendered.
pub struct Rendered {
    /// Where the copy (and the generated keys) live; removed on drop.
    pub dir: tempfile::TempDir,
    /// Every object, in the order kustomize printed them.
    pub objects: Vec<Value>,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Renders `overlay` (`single`, `cluster`) of the repository's `deploy/kubernetes`.
pub fn render(overlay: &str) -> Rendered {
    let repo = super::support::repo_root();
    let dir = tempfile::tempdir().unwrap();
    let kube = dir.path().join("kubernetes");
    for part in ["base", "overlays"] {
        copy_tree(&repo.join("deploy/kubernetes").join(part), &kube.join(part));
    }
    let init = Command::new(super::support::flotilla())
        .args(["kube", "init", "--out"])
        .arg(kube.join("generated"))
        .arg("--manifest")
        .arg(repo.join("flotilla.toml"))
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "flotilla kube init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let objects = kustomize(&kube.join("overlays").join(overlay));
    Rendered { dir, objects }
}

/// `kubectl kustomize DIR`, read as objects.
pub fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl (with kustomize) on PATH");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

impl Rendered {
    /// The objects of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    /// The object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// The object of `kind` named `name`, to change it.
    pub fn get_mut(&mut self, kind: &str, name: &str) -> &mut Value {
        self.objects
            .iter_mut()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    /// The Deployments, StatefulSets and Jobs: what runs.
    pub fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.objects
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet" | "Job")))
    }

    /// A ConfigMap's or Secret's entries, decoded.
    pub fn data(&self, kind: &str, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
        use base64::Engine;
        let object = self.get(kind, name)?;
        let mut out = Vec::new();
        // kustomize folds long values over lines.
        let decode = |v: &Value| {
            let text: String = v.as_str().unwrap_or_default().split_whitespace().collect();
            base64::engine::general_purpose::STANDARD.decode(text).unwrap()
        };
        if let Some(map) = object["data"].as_object() {
            for (key, value) in map {
                let bytes = match kind {
                    "Secret" => decode(value),
                    _ => value.as_str().unwrap_or_default().as_bytes().to_vec(),
                };
                out.push((key.clone(), bytes));
            }
        }
        if let Some(map) = object["binaryData"].as_object() {
            out.extend(map.iter().map(|(k, v)| (k.clone(), decode(v))));
        }
        Some(out)
    }

    /// The directory the copy lives in.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// The pod template of a workload.
pub fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// Whether `selector` (`matchLabels`) selects `labels`.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.get("matchLabels").unwrap_or(selector);
    wanted
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The container port a probe or Service names (by name or number).
pub fn container_port(container: &Value, port: &Value) -> Option<u16> {
    let ports = container["ports"].as_array()?;
    match port {
        Value::String(name) => ports
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64()),
        Value::Number(n) => ports
            .iter()
            .find(|p| p["containerPort"].as_u64() == n.as_u64())
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
    .and_then(|p| u16::try_from(p).ok())
}
