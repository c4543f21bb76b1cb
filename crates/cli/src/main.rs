//! `flotilla`: runs the whole system (`up`), its parts (`control`, `gateway`, `service`) and
//! its tools (`status`, `logs`, `traces`, …). Thin: parses flags, sets up logging, binds, and
//! calls the libraries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use flotilla::app::bind;
use flotilla::discovery::RegistryClient;
use flotilla::runtime;
use flotilla_cli::chaos::schedule::{DurationRange, Schedule};
use flotilla_cli::local_time::LocalTime;
use flotilla_cli::logs::level::Level;
use flotilla_cli::supervisor::{self, UpOptions};
use flotilla_cli::{running, status, style, token, traces};

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "A microservices platform for Rust: gateway, registry, supervisor and the reference shop"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system from the manifest: control plane, gateway and services.
    Up {
        /// The system manifest.
        #[arg(long, default_value = "flotilla.toml")]
        manifest: PathBuf,
        /// Where state and logs are kept.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        gateway_addr: SocketAddr,
        /// Where the control plane listens.
        #[arg(long, env = "FLOTILLA_CONTROL_ADDR", default_value = "127.0.0.1:7070")]
        control_addr: SocketAddr,
        /// Run this many instances of a service instead of the manifest's count (`catalog=3`).
        #[arg(long, value_parser = parse_scale)]
        scale: Vec<(String, u32)>,
        /// Plain HTTP between the processes instead of mTLS with workload certificates (to
        /// measure what mTLS costs; never in production).
        #[arg(long)]
        no_mtls: bool,
        /// Rehearse cluster mode on this machine: a 3-node NATS JetStream cluster (a
        /// nats-server ≥ 2.11 found on PATH or named by FLOTILLA_NATS_SERVER), 3 control-plane
        /// replicas keeping their state in it, the services on PostgreSQL (a database each,
        /// made if missing) and their events on JetStream.
        #[arg(long)]
        cluster: bool,
        /// The PostgreSQL server `--cluster` makes the services' databases on.
        #[arg(long, env = "FLOTILLA_POSTGRES", default_value = supervisor::cluster::DEFAULT_POSTGRES)]
        postgres: String,
        /// What `--cluster`'s database names start with (`<prefix>_<service>`), so two systems
        /// share a PostgreSQL server without sharing data.
        #[arg(long, env = "FLOTILLA_DATABASE_PREFIX", default_value = "flotilla", value_parser = parse_prefix)]
        database_prefix: String,
    },
    /// Make something new: `flotilla new service NAME`.
    New {
        #[command(subcommand)]
        what: NewWhat,
    },
    /// Show services and instances as the control plane sees them.
    Status {
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Change how many instances of a service a running `flotilla up` runs.
    Scale {
        /// The service.
        service: String,
        /// The instance count wanted (0 stops them all).
        instances: u32,
        /// The data dir of the running system.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
    },
    /// Replace a service's instances one at a time, each only once its replacement is ready:
    /// new code or config at start, without a failed request.
    Restart {
        /// The service.
        service: String,
        /// The data dir of the running system.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
    },
    /// Inject faults into a running `flotilla up`: kill or pause a process, delay or fail a
    /// share of a service's requests; once, or on a schedule (docs/chaos.md).
    Chaos {
        /// The control plane's address, unless given the running system's (fault rules, the registry, fault spans).
        #[arg(long, global = true, env = "FLOTILLA_CONTROL_ADDR")]
        control_addr: Option<String>,
        /// The data dir of the running system (its supervisor's socket, the token).
        #[arg(long, global = true, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
        /// Output format: a line per fault for people, or a JSON line per fault.
        #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(subcommand)]
        action: ChaosAction,
    },
    /// The gateway's routes: make a routes file the ones the running gateway follows again.
    Routes {
        /// The control plane's address (unless given: the running system's, from the data dir).
        #[arg(long, global = true, env = "FLOTILLA_CONTROL_ADDR")]
        control_addr: Option<String>,
        /// The data dir holding the token.
        #[arg(long, global = true, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
        #[command(subcommand)]
        action: RoutesAction,
    },
    /// Read and change the central configuration; see which instance runs which revision.
    Config {
        /// The control plane's address (unless given: the running system's, from the data dir).
        #[arg(long, global = true, env = "FLOTILLA_CONTROL_ADDR")]
        control_addr: Option<String>,
        /// The data dir holding the token (writes and reading secrets need it).
        #[arg(long, global = true, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
        /// Output format.
        #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Look into the event log: topics and groups, a topic's events, replaying dead letters.
    Events {
        /// The control plane's address (unless given: the running system's, from the data dir).
        #[arg(long, global = true, env = "FLOTILLA_CONTROL_ADDR")]
        control_addr: Option<String>,
        /// The data dir holding the token.
        #[arg(long, global = true, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
        /// The events backend when it is not the control plane's log: a `nats://` URL (the
        /// manifest's `events`).
        #[arg(long, global = true, env = "FLOTILLA_EVENTS")]
        events: Option<String>,
        /// Output format.
        #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Every process's log as one stream in time order: by service, trace, level and age.
    Logs {
        /// Only this service (`orders`) or process (`orders-2`).
        service: Option<String>,
        /// Only the lines of this trace: its id, or at least its first 8 hex digits.
        #[arg(long)]
        trace: Option<String>,
        /// Only this level and more severe.
        #[arg(long, value_enum, ignore_case = true)]
        level: Option<Level>,
        /// Keep printing lines as they are written (and new processes' logs), until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only lines from this long ago on (`30s`, `5m`, `1h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// `text` draws lines for people; `json` prints the JSON lines as written (plain
        /// lines, such as panics, are left out so the output stays JSON lines).
        #[arg(long, value_enum, default_value_t = LogsOutput::Text)]
        output: LogsOutput,
        /// The data dir whose `logs/` to read.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
    },
    /// The newest stored traces that match: find the slow or failed request.
    Traces {
        #[command(flatten)]
        control: ControlArgs,
        /// Only traces with a span of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only traces with a span of this operation (`GET /api/v1/orders/{id}`).
        #[arg(long)]
        operation: Option<String>,
        /// Only traces at least this long (`100ms`, `2s`).
        #[arg(long, value_parser = humantime::parse_duration)]
        min_duration: Option<Duration>,
        /// Only traces with a failed span.
        #[arg(long)]
        errors: bool,
        /// At most this many (the control plane's default is 20).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One trace drawn as a waterfall: every span, under its parent, on the trace's timeline.
    Trace {
        /// The trace id: 32 hex digits, or the first 8 or more (as the logs show them).
        id: String,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Which service calls which, how often, how often it fails and how fast, from the spans.
    Deps {
        /// How far back to look.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        lookback: Duration,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Print a control-plane credential for a service, minted from the operator's token: what
    /// a cluster's bootstrap Secret holds for that service's instances (`FLOTILLA_TOKEN`). It
    /// speaks only for `service`: its registrations, config scope, topics and certificates.
    Credential {
        /// The service it speaks for.
        service: String,
        /// The instance name it carries (a Secret shared by a service's pods: `cluster`).
        #[arg(long, default_value = "cluster")]
        instance: String,
        /// Where the operator's token is kept.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
    },
    /// The dashboard: prints its URL (the control plane's `/ui`) and opens it in a browser when
    /// there is one. Sign in with the operator's token or a read-only credential.
    Dashboard {
        #[command(flatten)]
        control: ControlArgs,
        /// Only print the URL.
        #[arg(long)]
        no_open: bool,
    },
    /// Kubernetes: `init` writes what a deployment needs and must not check in (keys, token,
    /// credentials, database URLs) as a kustomization the overlays include.
    Kube {
        #[command(subcommand)]
        action: KubeAction,
    },
    /// Put into a control plane what the manifest declares, as `up` does for a new data dir:
    /// the routes file as the gateway's routes, each service's secrets and OAuth client, the
    /// callers its `calls` grant. What exists is kept, so it can run again (a Kubernetes Job).
    Seed {
        /// The system manifest (its routes file beside it).
        #[arg(long, env = "FLOTILLA_MANIFEST", default_value = "flotilla.toml")]
        manifest: PathBuf,
        /// The control plane's operator address (unless given: the running `up`'s).
        #[arg(long, env = "FLOTILLA_CONTROL_ADDR")]
        control_addr: Option<String>,
        /// The data dir holding the operator's token, when `FLOTILLA_TOKEN` does not give it.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
        /// How long to wait for the control plane to be ready.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Run the control plane (the registry and the config store).
    Control {
        /// Where to listen.
        #[arg(long, env = "FLOTILLA_LISTEN", default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Where the token is kept (created if missing).
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
        /// How often instances heartbeat.
        #[arg(long, env = "FLOTILLA_HEARTBEAT", default_value = "1s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// How long an instance lives without a heartbeat.
        #[arg(long, env = "FLOTILLA_TTL", default_value = "3s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Where to serve the same API over mTLS for services (certificate from the control
        /// plane's own CA); given, services' credentials are refused on `--listen`.
        #[arg(long, env = "FLOTILLA_TLS_LISTEN")]
        tls_listen: Option<SocketAddr>,
        /// Where state lives: `embedded` (the data dir) or a NATS JetStream cluster,
        /// `nats://h1:4222,h2:4222,h3:4222[?replicas=N]`, shared by any number of replicas
        /// (the data dir then holds only the keys, which must be the same on every replica).
        #[arg(long, env = "FLOTILLA_STORE", default_value = "embedded")]
        store: flotilla_control::store::StoreSpec,
        /// Where spans are kept: a PostgreSQL URL (`postgres://…/traces`), which every replica
        /// shares in cluster mode; without it, `telemetry.db` in the data dir.
        #[arg(long, env = "FLOTILLA_TRACES")]
        traces: Option<String>,
        /// On NATS: when more than this share of the instances' leases run out within one TTL,
        /// hold them a further TTL (Eureka's self-preservation); 0 to 1.
        #[arg(long, env = "FLOTILLA_SELF_PRESERVATION", default_value = "0.5", value_parser = parse_share)]
        self_preservation: f64,
        /// Where the keys are read from (`ca.key`, `ca.pem`, `config.key`) instead of the data
        /// dir: a mounted Secret every replica shares (`flotilla kube secrets` makes one).
        #[arg(long, env = "FLOTILLA_KEYS_DIR")]
        keys_dir: Option<PathBuf>,
        /// Where the processes' log files are (`<name>.log`, JSON lines), shown in the
        /// dashboard's Logs view; `flotilla up` passes its `<data-dir>/logs`.
        #[arg(long, env = "FLOTILLA_LOGS_DIR")]
        logs_dir: Option<PathBuf>,
    },
    /// Run the gateway: with a control plane, or standalone from a routes file.
    Gateway {
        /// Where to listen.
        #[arg(long, env = "FLOTILLA_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// A routes file, watched for changes. Without it the routes come from the control
        /// plane's config store (key `routes` of scope `gateway`).
        #[arg(long, env = "FLOTILLA_ROUTES", required_unless_present = "control_addr")]
        routes: Option<PathBuf>,
        /// The control plane: the registry for routes that name a service, and the config
        /// store for the routes when no file is given; omit to run standalone.
        #[arg(long, env = "FLOTILLA_CONTROL_ADDR")]
        control_addr: Option<String>,
        /// Terminate TLS with this certificate chain (PEM); reloaded when it changes.
        #[arg(long, env = "FLOTILLA_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of the certificate (PEM).
        #[arg(long, env = "FLOTILLA_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Where the admin endpoints listen (`/-/routes`, `/-/metrics`, `/-/ready` in
        /// detail): loopback on a free port unless told otherwise, never the public listener.
        #[arg(long, env = "FLOTILLA_ADMIN_LISTEN", default_value = "127.0.0.1:0")]
        admin_listen: SocketAddr,
        /// Proxies in front of the gateway whose X-Forwarded-For is believed: addresses and
        /// CIDR networks, comma-separated. None by default: a client's own claims are dropped.
        #[arg(long, env = "FLOTILLA_TRUSTED_PROXIES", default_value = "")]
        trusted_proxies: flotilla_gateway::forwarded::TrustedProxies,
        /// Threads serving requests (default: one per core). With 1, everything runs on one
        /// thread, with no cross-thread wake-ups: the fastest setting for one core.
        #[arg(long, env = "FLOTILLA_WORKERS")]
        workers: Option<usize>,
    },
    /// Run one of the reference shop's services.
    Service {
        /// Which service.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(SERVICES.iter().map(|e| e.name)))]
        name: String,
        /// Where to listen (default: a free port on 127.0.0.1).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

/// What `flotilla kube` does.
#[derive(Subcommand)]
enum KubeAction {
    /// Write (or complete) the generated kustomization: keys kept, credentials and the
    /// manifest copy refreshed.
    Init {
        /// Where to write.
        #[arg(long, default_value = "deploy/kubernetes/generated")]
        out: PathBuf,
        /// The system manifest.
        #[arg(long, default_value = "flotilla.toml")]
        manifest: PathBuf,
        /// The PostgreSQL server of the `cluster` overlay (`postgres://user:password@host:5432`);
        /// the demo StatefulSet's unless given.
        #[arg(long)]
        postgres: Option<String>,
    },
}

/// How a command that asks the control plane reaches it, and how it answers.
#[derive(Args, Clone)]
struct ControlArgs {
    /// The control plane's address (unless given: the one the `up` running in the data dir
    /// recorded, else 127.0.0.1:7070).
    #[arg(long, env = "FLOTILLA_CONTROL_ADDR")]
    control_addr: Option<String>,
    /// The data dir holding the token.
    #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
    data_dir: PathBuf,
    /// Output format: drawn for people, or the API's JSON.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

impl ControlArgs {
    /// The control plane these flags, or the running system, point at.
    fn control(&self) -> running::Found {
        running::control(self.control_addr.clone(), &self.data_dir)
    }

    fn client(&self) -> traces::TelemetryClient {
        let token = token::read(&self.data_dir).ok().flatten();
        traces::TelemetryClient::new(&self.control().addr, token)
    }

    fn json(&self) -> bool {
        matches!(self.output, Output::Json)
    }
}

/// Which key a `flotilla config` command is about.
#[derive(Args, Clone)]
struct KeyArgs {
    /// The key (`page_size`, `routes`).
    key: String,
    /// `application` (every service) or a service name.
    #[arg(long, default_value = "application")]
    scope: String,
    /// The profile (`default`, `dev`, `prod`, …).
    #[arg(long, env = "FLOTILLA_PROFILE", default_value = "default")]
    profile: String,
}

#[derive(Debug, Subcommand)]
enum NewWhat {
    /// A service crate that builds on the first try — handlers for a verified caller, its own
    /// database and migration, a call to another service, live config, OpenAPI from the code,
    /// tests — built, added to the manifest and routed: a running `up` starts it within a second.
    Service {
        /// Its name (lowercase letters, digits, `-`): in the registry, routes and config.
        name: String,
        /// The crate's directory (default: ./NAME). Inside a Cargo workspace it becomes a member.
        #[arg(long)]
        path: Option<PathBuf>,
        /// The manifest to add it to (with a route in its routes file); skipped if missing.
        #[arg(long, default_value = "flotilla.toml")]
        manifest: PathBuf,
        /// The SDK to depend on outside a workspace that has it: a path to `crates/sdk`, or a
        /// version (default: the checkout this binary was built from, else its version).
        #[arg(long)]
        sdk: Option<String>,
        /// Only write the files: no build, no manifest entry, no route.
        #[arg(long)]
        no_build: bool,
        /// The data dir of a running `up`, whose gateway is waited on until the service answers.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum RoutesAction {
    /// Check a routes file and write it to the config store (`gateway/routes`) as a new
    /// revision: every gateway follows it within a moment. `up` seeds only a new data dir; this
    /// is how an edited `routes.toml` reaches a running system.
    Apply {
        /// The routes file.
        #[arg(default_value = "routes.toml")]
        file: PathBuf,
        /// Write only over this revision (optimistic concurrency).
        #[arg(long)]
        expect: Option<u64>,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print a key's value (secrets only with the token).
    Get {
        #[command(flatten)]
        key: KeyArgs,
        /// An earlier revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Set a key: VALUE is JSON when it parses as JSON, else a string; `@FILE` reads JSON.
    Set {
        #[command(flatten)]
        key: KeyArgs,
        /// The value.
        value: String,
        /// Encrypt at rest and mask in listings.
        #[arg(long)]
        secret: bool,
        /// Take VALUE as a string even if it parses as JSON.
        #[arg(long)]
        string: bool,
        /// Why.
        #[arg(long, short = 'm')]
        comment: Option<String>,
        /// Write only if the key is at this revision (0: only if it has no value).
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Delete a key (its history stays).
    Delete {
        #[command(flatten)]
        key: KeyArgs,
        /// Why.
        #[arg(long, short = 'm')]
        comment: Option<String>,
        /// Delete only if the key is at this revision.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Every key with a value (secrets masked).
    List {
        /// Only this scope.
        #[arg(long)]
        scope: Option<String>,
        /// Only this profile.
        #[arg(long)]
        profile: Option<String>,
    },
    /// Edit a key's value in $EDITOR; checked before it is written, and written only if
    /// nobody changed it meanwhile.
    Edit {
        #[command(flatten)]
        key: KeyArgs,
        /// Why.
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
    /// A key's revisions, newest first.
    History {
        #[command(flatten)]
        key: KeyArgs,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// What changed between two revisions of a key (TO defaults to the newest).
    Diff {
        #[command(flatten)]
        key: KeyArgs,
        /// The older revision.
        from: u64,
        /// The newer revision.
        to: Option<u64>,
    },
    /// Bring back a revision's value, as a new revision.
    Rollback {
        #[command(flatten)]
        key: KeyArgs,
        /// The revision to bring back.
        revision: u64,
        /// Why.
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
    /// Which revision each instance runs, and any revision it refused.
    Applied {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
    },
}

/// When a fault repeats, and the seed of its random choices.
#[derive(Args, Clone)]
struct RepeatArgs {
    /// Repeat the fault, waiting a random time in this range between two (`2s..3s`, or `2s`).
    #[arg(long, value_parser = parse_range)]
    every: Option<DurationRange>,
    /// Stop repeating after this long (`180s`, `3m`); without it, Ctrl-C stops.
    #[arg(long, requires = "every", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed every random choice (process, pause length, wait) to repeat a run exactly.
    #[arg(long)]
    seed: Option<u64>,
}

/// Which of a service's requests a latency or abort rule picks, and for how long.
#[derive(Args, Clone)]
struct AimArgs {
    /// The share of requests picked, 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    share: f64,
    /// Only requests of this method (`POST`).
    #[arg(long)]
    method: Option<String>,
    /// Only requests whose path matches (`/api/v1/payments/*/capture`: `*` is one segment).
    #[arg(long)]
    path: Option<String>,
    /// For how long (`30s`); without it, until `flotilla chaos clear`.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    length: Option<Duration>,
}

impl From<AimArgs> for flotilla_cli::chaos::Aim {
    fn from(aim: AimArgs) -> Self {
        Self {
            share: aim.share,
            method: aim.method,
            path: aim.path,
            length: aim.length,
        }
    }
}

#[derive(Subcommand)]
enum ChaosAction {
    /// SIGKILL a process; the supervisor restarts it, as after any crash.
    Kill {
        /// A process (`orders-1`), a service (one of its instances, at random), or `random`
        /// (any process, the gateway and the control plane included).
        target: String,
        #[command(flatten)]
        repeat: RepeatArgs,
    },
    /// Stop a process (SIGSTOP) for a while, then continue it (SIGCONT): a hung process.
    Pause {
        /// A process, a service, or `random`, as for `kill`.
        target: String,
        /// How long: `2s`, or a range to draw from, `1s..3s`.
        #[arg(long = "for", value_parser = parse_range)]
        length: DurationRange,
        #[command(flatten)]
        repeat: RepeatArgs,
    },
    /// Delay a share of a service's requests (health checks are never delayed).
    Latency {
        /// The service.
        service: String,
        /// By how much (`200ms`).
        #[arg(value_parser = humantime::parse_duration)]
        delay: Duration,
        #[command(flatten)]
        aim: AimArgs,
        #[command(flatten)]
        repeat: RepeatArgs,
    },
    /// Answer a share of a service's requests with an error status (problem+json).
    Abort {
        /// The service.
        service: String,
        /// The status answered.
        #[arg(long, default_value_t = 503)]
        status: u16,
        #[command(flatten)]
        aim: AimArgs,
        #[command(flatten)]
        repeat: RepeatArgs,
    },
    /// End the faults in force: every service's latency and abort rules and every pause, or
    /// those of one service (or process).
    Clear {
        /// Only this service's (or process's) faults.
        target: Option<String>,
    },
}

#[derive(Subcommand)]
enum EventsAction {
    /// Every topic, with each consumer group's next offset, in-flight count and lag.
    Topics,
    /// A topic's events from an offset (`orders.dead-letter` shows why each died).
    Read {
        /// The topic.
        topic: String,
        /// The first offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Append a dead letter back onto its topic, as a new event.
    Replay {
        /// The dead-letter topic (`orders.dead-letter`).
        topic: String,
        /// The dead letter's offset.
        offset: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogsOutput {
    Text,
    Json,
}

/// The built-in services `flotilla service NAME` runs: one line each.
const SERVICES: &[flotilla::app::Entry] = &[
    flotilla::app::entry::<flotilla_catalog::Catalog>(),
    flotilla::app::entry::<flotilla_identity::IdentityApp>(),
    flotilla::app::entry::<flotilla_inventory::Inventory>(),
    flotilla::app::entry::<flotilla_notifications::Notifications>(),
    flotilla::app::entry::<flotilla_orders::OrdersApp>(),
    flotilla::app::entry::<flotilla_payments::Payments>(),
    flotilla::app::entry::<flotilla_shipping::Shipping>(),
];

fn parse_range(text: &str) -> Result<DurationRange, String> {
    text.parse()
}

fn parse_share(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|share| (0.0..=1.0).contains(share))
        .ok_or_else(|| format!("`{text}` is not a share from 0 to 1"))
}

fn parse_prefix(text: &str) -> Result<String, String> {
    supervisor::cluster::valid_prefix(text).map(|()| text.to_owned())
}

fn parse_scale(text: &str) -> Result<(String, u32), String> {
    let (name, n) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` should look like SERVICE=COUNT, e.g. catalog=3"))?;
    let n = n.parse().map_err(|_| format!("`{n}` in `{text}` is not a count"))?;
    Ok((name.to_owned(), n))
}

/// Output piped into a reader that stops early (`flotilla traces | head`) ends the command
/// quietly, with the status a shell gives a tool SIGPIPE stopped (141), as Unix tools do:
/// Rust ignores SIGPIPE, so the write fails and `println!` would panic instead.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> std::process::ExitCode {
    quiet_on_closed_pipe();
    // Whatever this process writes (databases, keys, logs) is its owner's only, whatever the
    // umask; the processes `up` starts inherit it.
    flotilla::data_dir::restrict_new_files();
    let cli = Cli::parse();
    let workers = match &cli.command {
        Command::Gateway { workers, .. } => *workers,
        _ => None,
    };
    let runtime = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line with every cause, and no backtrace: this is for people, not debuggers.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Opens `url` in the desktop's browser when there is a desktop (a display, or macOS); says
/// nothing when there is none, as on a server the URL printed is the answer.
fn open_browser(url: &str) {
    let desktop = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if desktop {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(opener) = opener {
        let opened = std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if opened.is_err() {
            eprintln!("(could not run {opener}: open the URL above yourself)");
        }
    }
}

/// `flotilla new service`: scaffold, build, register; each step said with its time.
fn new_service(
    name: String,
    path: Option<PathBuf>,
    manifest: PathBuf,
    sdk: Option<String>,
    no_build: bool,
    data_dir: &std::path::Path,
) -> Result<()> {
    use flotilla_cli::scaffold::{self, NewService, Sdk};
    let started = std::time::Instant::now();
    let sdk = match sdk {
        Some(text) if std::path::Path::new(&text).is_dir() => Sdk::Path(
            std::path::Path::new(&text)
                .canonicalize()
                .with_context(|| format!("--sdk {text}"))?,
        ),
        Some(version) => Sdk::Version(version),
        None => scaffold::default_sdk(),
    };
    let dir = path.unwrap_or_else(|| PathBuf::from(&name));
    let registered_in = (!no_build && manifest.is_file()).then(|| manifest.clone());
    let made = scaffold::scaffold(&NewService {
        name: name.clone(),
        dir,
        sdk,
        manifest: registered_in.clone(),
    })?;
    println!(
        "{name}: scaffolded {}{}",
        made.dir.display(),
        made.workspace
            .as_ref()
            .map(|w| format!(" (a member of the workspace at {})", w.display()))
            .unwrap_or_default()
    );
    if no_build {
        println!(
            "build it with `cargo build --manifest-path {}/Cargo.toml`",
            made.dir.display()
        );
        return Ok(());
    }
    println!("{name}: building (cargo's progress below)");
    let executable = scaffold::build(&made.dir, &name)?;
    println!(
        "{name}: built {} in {:.1}s",
        executable.display(),
        started.elapsed().as_secs_f64()
    );
    match registered_in {
        Some(manifest) => {
            let changed = scaffold::register(&manifest, &name, &executable, &made.calls)?;
            println!("{name}: added to {}", changed.join(" and "));
            match running::read(data_dir) {
                Some(system) => match scaffold::wait_for_answer(&system.gateway, &name, Duration::from_secs(60)) {
                    Some(after) => println!(
                        "{name}: the running system serves it at http://{}/api/v1/{name} ({:.1}s after it was added; {:.1}s in all)",
                        system.gateway,
                        after.as_secs_f64(),
                        started.elapsed().as_secs_f64()
                    ),
                    None => anyhow::bail!(
                        "{name} was added, but the gateway at {} did not route /api/v1/{name} to it within 60 s; see `flotilla logs {name}`",
                        system.gateway
                    ),
                },
                None => println!("{name}: `flotilla up` starts it with the rest of the system"),
            }
        }
        None => println!(
            "{name}: run it with `{}` (no {} to add it to)",
            executable.display(),
            manifest.display()
        ),
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up {
            manifest,
            data_dir,
            gateway_addr,
            control_addr,
            scale,
            no_mtls,
            cluster,
            postgres,
            database_prefix,
        } => {
            let options = UpOptions {
                cluster: cluster.then_some(supervisor::cluster::ClusterOptions {
                    postgres,
                    database_prefix,
                }),
                manifest,
                data_dir,
                gateway_addr,
                control_addr,
                scale,
                mtls: !no_mtls,
                self_exe: std::env::current_exe().context("finding this program's path")?,
                ready_timeout: Duration::from_secs(30),
            };
            supervisor::up(options, runtime::shutdown_signal()).await?;
        }
        Command::New {
            what:
                NewWhat::Service {
                    name,
                    path,
                    manifest,
                    sdk,
                    no_build,
                    data_dir,
                },
        } => new_service(name, path, manifest, sdk, no_build, &data_dir)?,
        Command::Status {
            control:
                ControlArgs {
                    control_addr,
                    data_dir,
                    output,
                },
        } => {
            let found = running::control(control_addr, &data_dir);
            let control_addr = found.addr.clone();
            let token = token::read(&data_dir).ok().flatten();
            let client = RegistryClient::new(&control_addr, token.clone());
            let list = status::fetch(&client)
                .await
                .with_context(|| format!("asking the control plane at {found}"))?;
            let replicas = status::replicas(&control_addr, token.as_deref()).await;
            let faults = status::faults(&data_dir, &flotilla::config::ConfigClient::new(&control_addr, token)).await;
            let autoscale = status::autoscale(&data_dir).await;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&status::Report {
                        list: &list,
                        replicas: &replicas,
                        faults: &faults,
                        autoscale: &autoscale,
                    })?
                ),
                Output::Table => print!(
                    "{}{}{}{}",
                    status::table(&control_addr, &list),
                    status::replicas_table(&replicas),
                    status::autoscale_table(&autoscale, &LocalTime::system()),
                    status::faults_table(&faults, &LocalTime::system())
                ),
            }
        }
        Command::Scale {
            service,
            instances,
            data_dir,
        } => {
            let scaled = supervisor::control::scale(&data_dir, &service, instances).await?;
            let list = |key: &str| {
                scaled[key]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            let mut line = format!("{service}: {} → {} instances", scaled["from"], scaled["to"]);
            if !list("started").is_empty() {
                line.push_str(&format!(
                    "; started {} (they take traffic once registered)",
                    list("started")
                ));
            }
            if !list("stopped").is_empty() {
                line.push_str(&format!("; drained and stopped {}", list("stopped")));
            }
            println!("{line}");
        }
        Command::Restart { service, data_dir } => {
            let started = std::time::Instant::now();
            let restarted = supervisor::control::restart(&data_dir, &service).await?;
            let pairs: Vec<String> = restarted["replaced"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|pair| {
                            format!(
                                "{} → {}",
                                pair[0].as_str().unwrap_or("?"),
                                pair[1].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "{service}: {} in {:.1}s, each old instance drained once its replacement was ready",
                if pairs.is_empty() {
                    "no instances to replace".to_owned()
                } else {
                    pairs.join(", ")
                },
                started.elapsed().as_secs_f64()
            );
        }
        Command::Chaos {
            control_addr,
            data_dir,
            output,
            action,
        } => {
            use flotilla_cli::chaos::{self, ChaosOptions, Fault};
            let control_addr = running::control(control_addr, &data_dir).addr;
            let mut options = ChaosOptions {
                data_dir,
                control_addr,
                json: matches!(output, Output::Json),
                seed: None,
                schedule: None,
                time: LocalTime::system(),
            };
            let mut out = std::io::stdout();
            let (fault, repeat) = match action {
                ChaosAction::Kill { target, repeat } => (Fault::Kill { target }, repeat),
                ChaosAction::Pause { target, length, repeat } => (Fault::Pause { target, length }, repeat),
                ChaosAction::Latency {
                    service,
                    delay,
                    aim,
                    repeat,
                } => (
                    Fault::Latency {
                        service,
                        delay,
                        aim: aim.into(),
                    },
                    repeat,
                ),
                ChaosAction::Abort {
                    service,
                    status,
                    aim,
                    repeat,
                } => (
                    Fault::Abort {
                        service,
                        status,
                        aim: aim.into(),
                    },
                    repeat,
                ),
                ChaosAction::Clear { target } => {
                    chaos::clear(&options, target.as_deref(), &mut out).await?;
                    return Ok(());
                }
            };
            options.seed = repeat.seed;
            options.schedule = repeat.every.map(|every| Schedule {
                every,
                duration: repeat.duration,
            });
            chaos::run(&options, &fault, &mut out, runtime::shutdown_signal()).await?;
        }
        Command::Routes {
            control_addr,
            data_dir,
            action: RoutesAction::Apply { file, expect },
        } => {
            use flotilla::api::config::{ConfigKey, DEFAULT_PROFILE, GATEWAY_SCOPE, ROUTES_KEY};
            // Checked whole, with file and line, before anything is written.
            let routes = flotilla_gateway::routes::RouteTable::file_to_json(&flotilla::config::TomlFile::read(&file)?)?;
            let count = routes.as_array().map_or(0, Vec::len);
            let target = flotilla_cli::config_command::Target {
                control_addr: running::control(control_addr, &data_dir).addr,
                token: token::read(&data_dir).ok().flatten(),
                key: ConfigKey::new(GATEWAY_SCOPE, DEFAULT_PROFILE, ROUTES_KEY),
            };
            flotilla_cli::config_command::set(
                &target,
                routes,
                false,
                expect,
                Some(format!("applied from {}", file.display())),
            )
            .await?;
            println!("{count} routes from {} are the gateway's now", file.display());
        }
        Command::Config {
            control_addr,
            data_dir,
            output,
            action,
        } => {
            use flotilla_cli::config_command as config;
            let control_addr = running::control(control_addr, &data_dir).addr;
            let token = token::read(&data_dir).ok().flatten();
            let json = matches!(output, Output::Json);
            let target = |k: KeyArgs| config::Target {
                control_addr: control_addr.clone(),
                token: token.clone(),
                key: flotilla::api::config::ConfigKey::new(k.scope, k.profile, k.key),
            };
            match action {
                ConfigAction::Get { key, revision } => config::get(&target(key), revision, json).await?,
                ConfigAction::Set {
                    key,
                    value,
                    secret,
                    string,
                    comment,
                    if_match,
                } => {
                    let value = config::parse_value(&value, string)?;
                    config::set(&target(key), value, secret, if_match, comment).await?
                }
                ConfigAction::Delete { key, comment, if_match } => {
                    config::delete(&target(key), if_match, comment).await?
                }
                ConfigAction::List { scope, profile } => {
                    let any = target(KeyArgs {
                        key: String::new(),
                        scope: String::new(),
                        profile: String::new(),
                    });
                    config::list(&any, scope.as_deref(), profile.as_deref(), json).await?
                }
                ConfigAction::Edit { key, comment } => {
                    config::edit(&target(key), &std::env::temp_dir(), comment).await?
                }
                ConfigAction::History { key, limit } => config::history(&target(key), limit, json).await?,
                ConfigAction::Diff { key, from, to } => config::diff(&target(key), from, to, json).await?,
                ConfigAction::Rollback { key, revision, comment } => {
                    config::rollback(&target(key), revision, comment).await?
                }
                ConfigAction::Applied { service } => {
                    config::applied(&control_addr, token.clone(), service.as_deref(), json).await?
                }
            }
        }
        Command::Events {
            control_addr,
            data_dir,
            events: backend,
            output,
            action,
        } => {
            use flotilla_cli::events_command as events;
            let control_addr = running::control(control_addr, &data_dir).addr;
            let token = token::read(&data_dir).ok().flatten();
            let client = match backend {
                Some(url) => flotilla::events::EventsClient::connect(&url, token)
                    .await
                    .with_context(|| format!("connecting to {url}"))?,
                None => flotilla::events::EventsClient::new(&control_addr, token),
            };
            let json = matches!(output, Output::Json);
            match action {
                EventsAction::Topics => events::topics(&client, json).await?,
                EventsAction::Read { topic, from, limit } => events::read(&client, &topic, from, limit, json).await?,
                EventsAction::Replay { topic, offset } => events::replay(&client, &topic, offset).await?,
            }
        }
        Command::Logs {
            service,
            trace,
            level,
            follow,
            since,
            output,
            data_dir,
        } => {
            let since = match since {
                Some(since) => {
                    let at = std::time::SystemTime::now()
                        .checked_sub(since)
                        .with_context(|| format!("--since {}", humantime::format_duration(since)))?;
                    Some(jiff::Timestamp::try_from(at).context("--since")?)
                }
                None => None,
            };
            let json = matches!(output, LogsOutput::Json);
            let options = flotilla_cli::logs::LogsOptions {
                dir: data_dir.join("logs"),
                filter: flotilla_cli::logs::filter::Filter::new(service, trace.as_deref(), level, since)?,
                follow,
                json,
                color: !json && style::stdout_wants_color(),
                time: LocalTime::system(),
                poll: flotilla_cli::logs::FOLLOW_POLL,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout());
            flotilla_cli::logs::run(&options, &mut out, runtime::shutdown_signal()).await?;
        }
        Command::Traces {
            control,
            service,
            operation,
            min_duration,
            errors,
            limit,
        } => {
            let query = flotilla_api::telemetry::TraceQuery {
                service,
                operation,
                min_duration_ms: min_duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                errors,
                limit,
                since_ms: None,
                until_ms: None,
            };
            let list = control.client().traces(&query).await?;
            if control.json() {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!(
                    "{}",
                    traces::list::table(&list, &LocalTime::system(), style::stdout_wants_color())
                );
            }
        }
        Command::Trace { id, control } => {
            let trace = control.client().trace(&id).await?;
            if control.json() {
                println!("{}", serde_json::to_string_pretty(&trace)?);
            } else {
                let width = traces::waterfall::terminal_width();
                print!(
                    "{}",
                    traces::waterfall::draw(&trace, width, style::stdout_wants_color())
                );
            }
        }
        Command::Deps { lookback, control } => {
            let graph = control.client().dependencies(lookback).await?;
            if control.json() {
                println!("{}", serde_json::to_string_pretty(&graph)?);
            } else {
                print!("{}", traces::deps::draw(&graph, lookback, style::stdout_wants_color()));
            }
        }
        Command::Dashboard { control, no_open } => {
            let found = control.control();
            let base = flotilla::http::base_url(&found.addr);
            let url = format!("{base}/ui");
            println!("{url}");
            println!(
                "sign in with the operator's token ({}) or a read-only credential",
                token::path(&control.data_dir).display()
            );
            if !no_open {
                open_browser(&url);
            }
        }
        Command::Kube {
            action:
                KubeAction::Init {
                    out,
                    manifest,
                    postgres,
                },
        } => {
            let manifest = flotilla_cli::manifest::Manifest::load(
                &manifest,
                &std::env::current_exe().context("finding this program's path")?,
            )?;
            for line in flotilla_cli::kube::init(&flotilla_cli::kube::Init {
                out,
                manifest,
                postgres,
            })? {
                println!("{line}");
            }
        }
        Command::Seed {
            manifest,
            control_addr,
            data_dir,
            wait,
        } => {
            let manifest = flotilla_cli::manifest::Manifest::load(
                &manifest,
                &std::env::current_exe().context("finding this program's path")?,
            )?;
            let token = match std::env::var(flotilla_api::env::TOKEN) {
                Ok(token) if !token.is_empty() => token,
                _ => token::read(&data_dir)
                    .with_context(|| format!("reading the operator's token in {}", data_dir.display()))?
                    .with_context(|| format!("no FLOTILLA_TOKEN and no token in {}", data_dir.display()))?,
            };
            let control = running::control(control_addr, &data_dir).addr;
            let http = flotilla::http::HttpClient::new(Duration::from_secs(2)).failing_over(&control);
            let ready_url = format!("{}/health/ready", flotilla::http::base_url(&control));
            let started = std::time::Instant::now();
            loop {
                let ready = http
                    .send_raw::<()>(http::Method::GET, &ready_url, None, None, None)
                    .await;
                if ready.is_ok() {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < wait,
                    "the control plane at {control} was not ready within {wait:?}"
                );
                eprintln!("waiting for the control plane at {control}…");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            for line in supervisor::seeds::everything(&control, &token, &manifest).await? {
                println!("{line}");
            }
        }
        Command::Credential {
            service,
            instance,
            data_dir,
        } => {
            let token = token::read(&data_dir)
                .with_context(|| format!("reading the operator's token in {}", data_dir.display()))?
                .with_context(|| {
                    format!(
                        "no operator token in {} (has `flotilla up` run there?)",
                        data_dir.display()
                    )
                })?;
            let credential = flotilla_control::acl::Keyring::new(&token)
                .service(&service, &instance)
                .with_context(|| {
                    format!(
                        "`{service}` / `{instance}` cannot be named in a credential (letters, digits, `-`, `_`, `.`)"
                    )
                })?;
            println!("{credential}");
        }
        Command::Control {
            listen,
            data_dir,
            heartbeat,
            ttl,
            tls_listen,
            store,
            traces,
            self_preservation,
            keys_dir,
            logs_dir,
        } => {
            let token = match std::env::var(flotilla_api::env::TOKEN) {
                Ok(token) if !token.is_empty() => token,
                _ => {
                    flotilla::data_dir::ensure_private(&data_dir)?;
                    token::ensure(&data_dir).with_context(|| format!("token in {}", data_dir.display()))?
                }
            };
            let listener = bind(Some(listen), "--listen").await?;
            let tls_listener = match tls_listen {
                Some(addr) => Some(bind(Some(addr), "--tls-listen").await?),
                None => None,
            };
            let options = flotilla_control::process::Options {
                data_dir,
                registry: flotilla_control::RegistryConfig { heartbeat, ttl },
                token,
                store,
                traces,
                preservation: flotilla_control::registry::Preservation {
                    share: self_preservation,
                },
                keys_dir,
                logs_dir,
            };
            flotilla_control::process::run(listener, tls_listener, options, runtime::shutdown_signal()).await?;
        }
        Command::Gateway {
            listen,
            admin_listen,
            trusted_proxies,
            routes,
            control_addr,
            tls_cert,
            tls_key,
            ..
        } => {
            let listener = bind(Some(listen), "--listen").await?;
            let admin = bind(Some(admin_listen), "--admin-listen").await?;
            let options = flotilla_gateway::process::Options {
                routes,
                control_addr,
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| flotilla_gateway::tls::TlsFiles { cert, key }),
                trusted_proxies,
            };
            flotilla_gateway::process::run(listener, admin, options, runtime::shutdown_signal()).await?;
        }
        Command::Service { name, listen } => {
            let entry = SERVICES
                .iter()
                .find(|entry| entry.name == name)
                .with_context(|| format!("no built-in service `{name}`"))?;
            entry.run(bind(listen, "--listen").await?).await?;
        }
    }
    Ok(())
}
