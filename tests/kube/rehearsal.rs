//! The rendered manifests run as a kubelet would run them, but as local processes: each
//! workload's pod gets its containers' `args` with exactly the `env` the manifests declare
//! (ConfigMaps and Secrets resolved, `$(VAR)` expanded, the downward API answered), its
//! volumes as directories (ConfigMap and Secret keys as files, with their modes), its declared
//! ports on free loopback ports (a pod's own network namespace, by remapping), Service names
//! resolved to the pods they select; restarted when they exit, as `restartPolicy` says; and
//! probed on the declared paths and ports until ready. What the binary does not know — a flag,
//! a variable it needs, a port or a path — shows as a process that exits with a usage error,
//! a probe answered 404, or a pod never ready: the rehearsal fails, naming it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::render::{container_port, pod_spec, selects, Rendered};
use super::support::{free_addr, http_get};

/// How long after the pods the Jobs start.
const JOB_DELAY: Duration = Duration::from_secs(3);

/// The image whose entrypoint is the binary under test.
const FLOTILLA_IMAGE: &str = "ghcr.io/flotilla-rs/flotilla";

/// A pod: one container (Flotilla's are single-container), and what the kubelet made for it.
struct Pod {
    /// `<workload>-0`.
    name: String,
    kind: String,
    labels: Value,
    container: Value,
    restart_on_failure_only: bool,
    /// Declared container port → the loopback port it has here.
    ports: BTreeMap<u16, u16>,
    dir: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    restarts: u32,
    next_start: Instant,
    succeeded: bool,
    started: bool,
    ready: bool,
    /// What the last failing probe saw.
    probed: String,
}

/// A running rehearsal; every process is stopped when it drops.
pub struct Rehearsal {
    pods: Vec<Pod>,
    /// Service name → (service port → (pod index, loopback port)).
    services: BTreeMap<String, BTreeMap<u16, (usize, u16)>>,
}

/// Why a rehearsal failed.
#[derive(Debug)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, Failed> {
    Err(Failed(message.into()))
}

impl Rehearsal {
    /// Starts every workload of `rendered` in `namespace`, with `binary` as the Flotilla
    /// image's entrypoint.
    pub fn start(rendered: &Rendered, binary: &Path) -> Result<Self, Failed> {
        let root = rendered.path().join("rehearsal");
        let mut pods = Vec::new();
        for workload in rendered.workloads() {
            let kind = workload["kind"].as_str().unwrap_or_default().to_owned();
            let name = workload["metadata"]["name"].as_str().unwrap_or_default();
            let spec = pod_spec(workload);
            let containers = spec["containers"].as_array().cloned().unwrap_or_default();
            let [container] = containers.as_slice() else {
                return fail(format!("{kind} {name}: the rehearsal runs one container per pod"));
            };
            let image = container["image"].as_str().unwrap_or_default();
            if image.split(':').next() != Some(FLOTILLA_IMAGE) {
                return fail(format!("{kind} {name}: image {image} is not the Flotilla image"));
            }
            let pod_name = format!("{name}-0");
            let dir = root.join(&pod_name);
            std::fs::create_dir_all(&dir).map_err(|e| Failed(e.to_string()))?;
            let mut ports = BTreeMap::new();
            for port in container["ports"].as_array().into_iter().flatten() {
                let declared = port["containerPort"].as_u64().unwrap_or(0) as u16;
                ports.insert(declared, free_addr().port());
            }
            // Jobs last: the worst order for what they seed, which must wait, not crash.
            let next_start = Instant::now() + if kind == "Job" { JOB_DELAY } else { Duration::ZERO };
            pods.push(Pod {
                name: pod_name,
                restart_on_failure_only: kind == "Job",
                labels: workload["spec"]["template"]["metadata"]["labels"].clone(),
                kind,
                container: container.clone(),
                ports,
                dir,
                program: binary.to_path_buf(),
                args: Vec::new(),
                env: Vec::new(),
                child: None,
                restarts: 0,
                next_start,
                succeeded: false,
                started: false,
                ready: false,
                probed: "not probed yet".into(),
            });
        }
        // Services: what each port of each name reaches.
        let mut services = BTreeMap::new();
        for service in rendered.of_kind("Service") {
            let name = service["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let mut ports = BTreeMap::new();
            for (index, pod) in pods.iter().enumerate() {
                if !selects(&service["spec"]["selector"], &pod.labels) {
                    continue;
                }
                for port in service["spec"]["ports"].as_array().into_iter().flatten() {
                    let number = port["port"].as_u64().unwrap_or(0) as u16;
                    let target = port.get("targetPort").unwrap_or(&port["port"]);
                    if let Some(declared) = container_port(&pod.container, target) {
                        ports.insert(number, (index, pod.ports[&declared]));
                    }
                }
            }
            services.insert(name, ports);
        }
        let mut rehearsal = Self { pods, services };
        for index in 0..rehearsal.pods.len() {
            rehearsal.prepare(rendered, index)?;
        }
        Ok(rehearsal)
    }

    /// The pod's volumes as directories, its args and env resolved as the kubelet would.
    fn prepare(&mut self, rendered: &Rendered, index: usize) -> Result<(), Failed> {
        let namespace = rendered
            .objects
            .iter()
            .find_map(|o| o["metadata"]["namespace"].as_str())
            .unwrap_or("default")
            .to_owned();
        let workload = rendered.workloads().nth(index).cloned().unwrap_or(Value::Null);
        let spec = pod_spec(&workload).clone();
        let pod = &self.pods[index];
        let who = format!("{} {}", pod.kind, pod.name);
        // Volumes.
        let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
        let templates: Vec<String> = workload["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        for name in templates {
            let dir = rendered.path().join("volumes").join(format!("{name}-{}", pod.name));
            make_dir(&dir, 0o777)?;
            volumes.insert(name, dir);
        }
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            let name = volume["name"].as_str().unwrap_or_default().to_owned();
            let dir = if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                if rendered.get("PersistentVolumeClaim", claim).is_none() {
                    return fail(format!("{who}: volume {name} claims {claim}, which no object makes"));
                }
                rendered.path().join("volumes").join(claim)
            } else {
                pod.dir.join("volumes").join(&name)
            };
            make_dir(&dir, 0o777)?;
            let source = if volume.get("configMap").is_some() {
                Some((
                    "ConfigMap",
                    &volume["configMap"]["name"],
                    &volume["configMap"]["defaultMode"],
                ))
            } else if volume.get("secret").is_some() {
                Some((
                    "Secret",
                    &volume["secret"]["secretName"],
                    &volume["secret"]["defaultMode"],
                ))
            } else {
                None
            };
            if let Some((kind, object, mode)) = source {
                let object = object.as_str().unwrap_or_default();
                let Some(entries) = rendered.data(kind, object) else {
                    return fail(format!(
                        "{who}: volume {name} names {kind} {object}, which no object makes"
                    ));
                };
                let mode = mode.as_u64().unwrap_or(0o644) as u32;
                for (key, bytes) in entries {
                    let file = dir.join(&key);
                    std::fs::write(&file, bytes).map_err(|e| Failed(e.to_string()))?;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| Failed(e.to_string()))?;
                }
            }
            volumes.insert(name, dir);
        }
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in pod.container["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().unwrap_or_default();
            let Some(dir) = volumes.get(name) else {
                return fail(format!("{who}: mounts volume {name}, which the pod does not have"));
            };
            mounts.push((mount["mountPath"].as_str().unwrap_or_default().to_owned(), dir.clone()));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));

        // Environment: envFrom, then env in order, `$(VAR)` expanded against what came before.
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        };
        for from in pod.container["envFrom"].as_array().into_iter().flatten() {
            let (kind, object) = match (from.get("configMapRef"), from.get("secretRef")) {
                (Some(r), _) => ("ConfigMap", r["name"].as_str().unwrap_or_default()),
                (_, Some(r)) => ("Secret", r["name"].as_str().unwrap_or_default()),
                _ => continue,
            };
            let Some(entries) = rendered.data(kind, object) else {
                return fail(format!("{who}: envFrom names {kind} {object}, which no object makes"));
            };
            for (key, bytes) in entries {
                set(&mut env, key, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        for entry in pod.container["env"].as_array().into_iter().flatten() {
            let key = entry["name"].as_str().unwrap_or_default().to_owned();
            let value = if let Some(value) = entry["value"].as_str() {
                expand(value, &env)
            } else if let Some(field) = entry["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "metadata.name" => pod.name.clone(),
                    "metadata.namespace" => namespace.clone(),
                    "status.podIP" | "status.hostIP" => "127.0.0.1".to_owned(),
                    other => return fail(format!("{who}: env {key} asks the downward API for {other}")),
                }
            } else if let Some(reference) = entry["valueFrom"].get("secretKeyRef") {
                lookup(rendered, "Secret", reference, &who, &key)?
            } else if let Some(reference) = entry["valueFrom"].get("configMapKeyRef") {
                lookup(rendered, "ConfigMap", reference, &who, &key)?
            } else {
                return fail(format!("{who}: env {key} has no value the rehearsal understands"));
            };
            set(&mut env, key, value);
        }

        let command: Vec<String> = pod.container["command"]
            .as_array()
            .map(|c| c.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if !command.is_empty() {
            return fail(format!("{who}: overrides the image's entrypoint ({command:?})"));
        }
        let args: Vec<String> = pod.container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .map(|a| expand(a, &env))
            .collect();
        let rewrite = |text: &str| self.rewrite(index, &mounts, text);
        let args = args.iter().map(|a| rewrite(a)).collect();
        let env = env.into_iter().map(|(k, v)| (k, rewrite(&v))).collect();
        let pod = &mut self.pods[index];
        pod.args = args;
        pod.env = env;
        Ok(())
    }

    /// Paths under a mount to the volume's directory; the pod's own ports and Service
    /// addresses to the loopback ports that stand for them.
    fn rewrite(&self, index: usize, mounts: &[(String, PathBuf)], text: &str) -> String {
        let mut text = text.to_owned();
        for (path, dir) in mounts {
            if text == *path || text.starts_with(&format!("{path}/")) {
                text = format!("{}{}", dir.display(), &text[path.len()..]);
                break;
            }
        }
        let pod = &self.pods[index];
        for host in ["0.0.0.0", "127.0.0.1", "[::]"] {
            for (declared, local) in &pod.ports {
                text = replace_address(&text, &format!("{host}:{declared}"), &format!("127.0.0.1:{local}"));
            }
        }
        // A port the container does not declare: in a pod it would be bound but unreachable;
        // here it gets a free port nobody looks at (never the machine's fixed ones).
        while let Some(at) = text.find("0.0.0.0:") {
            let digits = text[at + 8..].chars().take_while(char::is_ascii_digit).count();
            let free = free_addr().port();
            text.replace_range(at..at + 8 + digits, &format!("127.0.0.1:{free}"));
        }
        for (name, ports) in &self.services {
            for (port, (target, local)) in ports {
                let pod_name = &self.pods[*target].name;
                for host in [
                    format!("{pod_name}.{name}"),
                    format!("{name}.flotilla.svc.cluster.local"),
                    format!("{name}.flotilla.svc"),
                    format!("{name}.flotilla"),
                    name.clone(),
                ] {
                    text = replace_address(&text, &format!("{host}:{port}"), &format!("127.0.0.1:{local}"));
                }
            }
        }
        text
    }

    /// Runs until every pod is ready and every Job has succeeded, restarting what exits as
    /// its restart policy says; fails at once on a usage error or a probe path the binary
    /// does not serve, else after `within`.
    pub fn wait_ready(&mut self, within: Duration) -> Result<(), Failed> {
        let deadline = Instant::now() + within;
        loop {
            for index in 0..self.pods.len() {
                self.tend(index)?;
            }
            if self.pods.iter().all(|p| {
                if p.restart_on_failure_only {
                    p.succeeded
                } else {
                    p.ready
                }
            }) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let waiting: Vec<String> = self
                    .pods
                    .iter()
                    .filter(|p| !(p.ready || p.succeeded))
                    .map(|p| {
                        format!(
                            "{} (restarts {}; {}): {}",
                            p.name,
                            p.restarts,
                            p.probed,
                            last_lines(&p.dir.join("log"), 6)
                        )
                    })
                    .collect();
                return fail(format!("not ready within {within:?}: {}", waiting.join("\n\n")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One look at a pod: start or restart it, probe it.
    fn tend(&mut self, index: usize) -> Result<(), Failed> {
        let pod = &mut self.pods[index];
        if pod.succeeded {
            return Ok(());
        }
        if let Some(child) = pod.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                pod.child = None;
                pod.ready = false;
                pod.started = false;
                let log = last_lines(&pod.dir.join("log"), 8);
                if status.code() == Some(2) && (log.contains("Usage:") || log.contains("unexpected argument")) {
                    return fail(format!("{}: the binary refused its command line: {log}", pod.name));
                }
                if pod.restart_on_failure_only && status.success() {
                    pod.succeeded = true;
                    return Ok(());
                }
                pod.restarts += 1;
                let backoff = Duration::from_millis(500 * 2u64.pow(pod.restarts.min(4)));
                pod.next_start = Instant::now() + backoff;
            }
        }
        if pod.child.is_none() {
            if Instant::now() < pod.next_start {
                return Ok(());
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(pod.dir.join("log"))
                .map_err(|e| Failed(e.to_string()))?;
            let err = log.try_clone().map_err(|e| Failed(e.to_string()))?;
            // The kubelet gives a container only what is declared (and the image's PATH).
            let child = Command::new(&pod.program)
                .args(&pod.args)
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .envs(pod.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&pod.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(err))
                .spawn()
                .map_err(|e| Failed(format!("{}: {e}", pod.name)))?;
            pod.child = Some(child);
            return Ok(());
        }
        // Probes: startup first, then readiness (and liveness, which must pass as well).
        let container = pod.container.clone();
        let ports = pod.ports.clone();
        let name = pod.name.clone();
        let mut probed = None;
        let mut probe = |kind: &str| -> Result<Option<bool>, Failed> {
            let Some(handler) = container.get(kind).filter(|p| !p.is_null()) else {
                return Ok(None);
            };
            let Some(get) = handler.get("httpGet") else {
                return fail(format!("{name}: {kind} is not an httpGet probe"));
            };
            let Some(declared) = container_port(&container, &get["port"]) else {
                return fail(format!(
                    "{name}: {kind} names port {}, which the container does not declare",
                    get["port"]
                ));
            };
            let path = get["path"].as_str().unwrap_or("/");
            let addr = SocketAddr::from(([127, 0, 0, 1], ports[&declared]));
            match http_get(addr, path) {
                Ok((404, body)) => fail(format!("{name}: {kind} GET {path} on port {declared}: 404 {body}")),
                Ok((status, _)) if (200..400).contains(&status) => Ok(Some(true)),
                Ok((status, _)) => {
                    probed = Some(format!("{kind} GET {path} on port {declared}: {status}"));
                    Ok(Some(false))
                }
                Err(err) => {
                    probed = Some(format!("{kind} GET {path} on port {declared}: {err}"));
                    Ok(Some(false))
                }
            }
        };
        let started = pod.started || probe("startupProbe")?.unwrap_or(true);
        let ready = started && probe("readinessProbe")?.unwrap_or(true) && probe("livenessProbe")?.unwrap_or(true);
        let pod = &mut self.pods[index];
        pod.started = started;
        pod.ready = ready;
        if let Some(probed) = probed {
            pod.probed = probed;
        }
        Ok(())
    }

    /// Where a Service's port is reached here.
    pub fn service(&self, name: &str, port: u16) -> Option<SocketAddr> {
        let (_, local) = self.services.get(name)?.get(&port)?;
        Some(SocketAddr::from(([127, 0, 0, 1], *local)))
    }

    /// The pods that restarted, with how often: started together, none should have to.
    pub fn restarted(&self) -> Vec<(String, u32)> {
        self.pods
            .iter()
            .filter(|p| p.restarts > 0)
            .map(|p| (p.name.clone(), p.restarts))
            .collect()
    }

    /// A pod's log so far.
    pub fn log(&self, workload: &str) -> String {
        std::fs::read_to_string(
            self.pods
                .iter()
                .find(|p| p.name == format!("{workload}-0"))
                .map_or_else(PathBuf::new, |p| p.dir.join("log")),
        )
        .unwrap_or_default()
    }
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        for pod in &mut self.pods {
            if let Some(child) = pod.child.as_mut() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for pod in &mut self.pods {
            if let Some(mut child) = pod.child.take() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), Failed> {
    std::fs::create_dir_all(dir).map_err(|e| Failed(e.to_string()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| Failed(e.to_string()))
}

fn lookup(rendered: &Rendered, kind: &str, reference: &Value, who: &str, key: &str) -> Result<String, Failed> {
    let object = reference["name"].as_str().unwrap_or_default();
    let wanted = reference["key"].as_str().unwrap_or_default();
    let found = rendered
        .data(kind, object)
        .and_then(|entries| entries.into_iter().find(|(k, _)| k == wanted));
    match found {
        Some((_, bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        None => fail(format!(
            "{who}: env {key} names {kind} {object} key {wanted}, which is not there"
        )),
    }
}

/// Kubernetes' `$(VAR)` expansion against the variables defined before.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = value.to_owned();
    for (key, found) in env {
        out = out.replace(&format!("$({key})"), found);
    }
    out
}

/// Replaces `from` (a `host:port`) where it stands as an address: not inside a longer name
/// or port.
fn replace_address(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let before = rest[..at].chars().last();
        let after = rest[at + from.len()..].chars().next();
        let bounded = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && !after.is_some_and(|c| c.is_ascii_digit());
        out.push_str(&rest[..at]);
        out.push_str(if bounded { to } else { from });
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn addresses_are_replaced_only_where_they_stand_as_addresses() {
    assert_eq!(
        replace_address("https://control:7443", "control:7443", "127.0.0.1:1"),
        "https://127.0.0.1:1"
    );
    assert_eq!(
        replace_address("xcontrol:7443", "control:7443", "127.0.0.1:1"),
        "xcontrol:7443"
    );
    assert_eq!(
        replace_address("control:74430", "control:7443", "127.0.0.1:1"),
        "control:74430"
    );
    assert_eq!(
        replace_address(
            "nats://nats-0.nats:4222,nats-1.nats:4222",
            "nats-1.nats:4222",
            "127.0.0.1:2"
        ),
        "nats://nats-0.nats:4222,127.0.0.1:2"
    );
}
