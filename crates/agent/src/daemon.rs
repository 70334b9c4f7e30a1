//! The agent process: connects out to the server, says hello, receives the
//! desired set, runs the supervisor, reports back.
//!
//! # Guarantees
//!
//! - Tasks keep running while the server is away; the agent reconnects with
//!   backoff and jitter and its hello carries the full state.
//! - The join token is used once: the credential the server issues replaces it
//!   on disk (`STATE_DIR/credential`, mode 0600).

use crate::images::Images;
use crate::runtime::Runtime;
use crate::supervisor::{Supervisor, SupervisorConfig, Update};
use anyhow::Context as _;
use berth_protocol::{
    AgentMessage, Hello, Resources, ServerMessage, CONNECT_PATH, INSTANCE_HEADER, VERSION,
};
use futures_util::{SinkExt as _, StreamExt as _};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// How the agent was started.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server, `http://host:port`.
    pub server: String,
    pub instance_id: String,
    pub state_dir: PathBuf,
    pub instance_type: String,
    pub availability_zone: String,
    pub cpu: u32,
    pub memory_mib: u64,
    /// The ids of the instance's whole GPUs (`0`, `1`, …).
    pub gpus: Vec<String>,
    pub join_token: Option<String>,
    /// The instance's cgroup path, parent of its tasks' cgroups.
    pub cgroup_root: String,
}

const HEARTBEAT: Duration = Duration::from_secs(10);
const CONVERGE_EVERY: Duration = Duration::from_millis(250);

fn credential_path(config: &AgentConfig) -> PathBuf {
    config.state_dir.join("credential")
}

fn save_credential(config: &AgentConfig, credential: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = credential_path(config);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(credential.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Runs the agent until `shutdown` resolves. Containers are left running.
pub async fn run(
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    images: Arc<Images>,
    clock: Arc<dyn berth_model::clock::Clock>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create the state dir {}", config.state_dir.display()))?;
    let supervisor = Supervisor::open(
        SupervisorConfig {
            state_dir: config.state_dir.clone(),
            cgroup_root: config.cgroup_root.clone(),
            host_netns: PathBuf::from(format!("/proc/{}/ns/net", std::process::id())),
            uplink: "eth0".into(),
        },
        runtime.clone(),
        Box::new(images.clone()),
        Arc::new(move || clock.epoch_seconds()),
    )
    .context("cannot open the agent state")?;
    let supervisor = Arc::new(Mutex::new(supervisor));
    let link = Arc::new(Link::default());
    let converger = {
        let (supervisor, link) = (supervisor.clone(), link.clone());
        std::thread::Builder::new()
            .name("converge".into())
            .spawn(move || converge_loop(&supervisor, &link))
            .context("cannot start the converging thread")?
    };
    let _stop = StopOnDrop(link.clone(), Some(converger));
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = connect_once(
            &config,
            runtime.clone(),
            images.clone(),
            supervisor.clone(),
            link.clone(),
        );
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = session => match r {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "connection to the server lost"),
            },
        }
        // Containers keep running meanwhile; the next hello reports what happened.
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn connect_once(
    config: &AgentConfig,
    runtime: Arc<dyn Runtime>,
    images: Arc<Images>,
    supervisor: Arc<Mutex<Supervisor>>,
    link: Arc<Link>,
) -> anyhow::Result<()> {
    let secret = match std::fs::read_to_string(credential_path(config)) {
        Ok(c) => c.trim().to_string(),
        Err(_) => config
            .join_token
            .clone()
            .context("no credential and no join token: cannot authenticate")?,
    };
    let url = format!("{}{CONNECT_PATH}", config.server.replacen("http", "ws", 1));
    let mut request = url
        .as_str()
        .into_client_request()
        .context("bad server URL")?;
    request.headers_mut().insert(
        INSTANCE_HEADER,
        config.instance_id.parse().context("bad instance id")?,
    );
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {secret}")
            .parse()
            .context("bad credential")?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("cannot connect")?;
    let reports = supervisor.lock().map(|s| s.reports()).unwrap_or_default();
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "ecs.instance-type".to_string(),
        config.instance_type.clone(),
    );
    attributes.insert(
        "ecs.availability-zone".to_string(),
        config.availability_zone.clone(),
    );
    attributes.insert("ecs.os-type".to_string(), "linux".to_string());
    attributes.insert(
        "ecs.cpu-architecture".to_string(),
        if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "x86_64"
        }
        .to_string(),
    );
    for cap in [
        "privileged-container",
        "task-eni",
        "execution-role-awslogs",
        "container-health-check",
    ] {
        attributes.insert(format!("ecs.capability.{cap}"), String::new());
    }
    if runtime.name() == "runc" {
        attributes.insert(berth_protocol::EXEC_CAPABILITY.to_string(), String::new());
    }
    let hello = AgentMessage::Hello(Hello {
        protocol: VERSION,
        instance_id: config.instance_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime: runtime.name().to_string(),
        resources: Resources {
            cpu: config.cpu,
            memory_mib: config.memory_mib,
            gpus: config.gpus.clone(),
        },
        attributes,
        tasks: reports,
        generation: 0,
    });
    ws.send(Message::Text(serde_json::to_string(&hello)?.into()))
        .await?;
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel();
    // Exec sessions live as long as this connection.
    let exec = crate::exec::Sessions::new(runtime.clone(), out_tx.clone());
    link.connect(out_tx);
    let _disconnect = Disconnect(link.clone());
    let mut generation = 0u64;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let Some(msg) = incoming else { anyhow::bail!("the server closed the connection") };
                match msg? {
                    Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(ServerMessage::Welcome { container_instance_arn, credential }) => {
                            if let Some(c) = credential {
                                save_credential(config, &c).context("cannot store the credential")?;
                            }
                            tracing::info!(container_instance_arn, "registered with the server");
                        }
                        Ok(ServerMessage::Desired { generation: g, tasks }) => {
                            if g >= generation {
                                generation = g;
                                link.deliver(tasks);
                            }
                        }
                        Ok(ServerMessage::Goodbye { reason }) => anyhow::bail!("the server refused: {reason}"),
                        Ok(ServerMessage::Prefetch { images: wanted }) => prefetch(&images, wanted),
                        Ok(other) => {
                            exec.handle(other);
                        }
                        // A newer server's message: not ours to act on.
                        Err(e) => tracing::debug!(error = %e, "ignoring a server message"),
                    },
                    Message::Close(_) => anyhow::bail!("the server closed the connection"),
                    _ => {}
                }
            }
            _ = heartbeat.tick() => {
                let m = AgentMessage::Heartbeat { generation };
                ws.send(Message::Text(serde_json::to_string(&m)?.into())).await?;
            }
            Some(m) = out_rx.recv() => {
                ws.send(Message::Text(serde_json::to_string(&m)?.into())).await?;
            }
        }
    }
}

/// Pulls images ahead of the tasks that will use them, in the background;
/// a task that needs one meanwhile waits on the same store.
fn prefetch(images: &Arc<Images>, wanted: Vec<String>) {
    let images = images.clone();
    tokio::task::spawn_blocking(move || {
        for reference in wanted {
            match images.prepare(&reference) {
                Ok(p) => tracing::info!(image = reference, digest = p.digest, "image prefetched"),
                Err(e) => {
                    tracing::warn!(image = reference, error = %format!("{e:#}"), "cannot prefetch an image")
                }
            }
        }
    });
}

/// Between the connection and the converging thread: the newest desired set
/// not yet taken, and where changes go while a connection is up.
#[derive(Default)]
pub struct Link {
    state: Mutex<LinkState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct LinkState {
    inbox: Option<Vec<berth_protocol::TaskSpec>>,
    out: Option<tokio::sync::mpsc::UnboundedSender<AgentMessage>>,
    stop: bool,
}

impl Link {
    /// A new desired set: replaces one not yet taken and wakes the converging thread.
    fn deliver(&self, tasks: Vec<berth_protocol::TaskSpec>) {
        if let Ok(mut s) = self.state.lock() {
            s.inbox = Some(tasks);
        }
        self.wake.notify_all();
    }

    /// The desired set delivered since the last take, if any.
    fn take(&self) -> Option<Vec<berth_protocol::TaskSpec>> {
        self.state.lock().ok().and_then(|mut s| s.inbox.take())
    }

    fn connect(&self, out: tokio::sync::mpsc::UnboundedSender<AgentMessage>) {
        if let Ok(mut s) = self.state.lock() {
            s.out = Some(out);
        }
    }

    fn disconnect(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.out = None;
        }
    }

    /// Sends to the server when connected. Changes made while it is away
    /// are not queued: the next hello carries every task's state.
    fn send(&self, m: AgentMessage) {
        if let Ok(s) = self.state.lock() {
            if let Some(out) = &s.out {
                let _ = out.send(m);
            }
        }
    }

    fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stop = true;
        }
        self.wake.notify_all();
    }

    /// Waits until a desired set arrives, `timeout` passes or the agent stops;
    /// returns false when it stops.
    fn wait(&self, timeout: Duration) -> bool {
        let Ok(s) = self.state.lock() else {
            return false;
        };
        match self
            .wake
            .wait_timeout_while(s, timeout, |s| s.inbox.is_none() && !s.stop)
        {
            Ok((s, _)) => !s.stop,
            Err(_) => false,
        }
    }
}

/// Clears the connection's sender when the connection ends.
struct Disconnect(Arc<Link>);

impl Drop for Disconnect {
    fn drop(&mut self) {
        self.0.disconnect();
    }
}

/// Stops the converging thread when the agent's loop ends.
struct StopOnDrop(Arc<Link>, Option<std::thread::JoinHandle<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

/// The converging thread: a pass whenever a desired set arrives, and every
/// [`CONVERGE_EVERY`] anyway (exits, health checks, stop deadlines, logs) —
/// connected or not, so tasks are looked after while the server is away.
fn converge_loop(supervisor: &Mutex<Supervisor>, link: &Link) {
    let mut again = false;
    loop {
        if !again && !link.wait(CONVERGE_EVERY) {
            return;
        }
        let Ok(mut s) = supervisor.lock() else {
            return;
        };
        if let Some(desired) = link.take() {
            s.set_desired(desired);
        }
        again = s.converge_with(&|| link.take(), &mut |u| {
            link.send(match u {
                Update::Task(r) => AgentMessage::TaskUpdate(r),
                Update::Logs(b) => AgentMessage::Logs(b),
            })
        });
    }
}
