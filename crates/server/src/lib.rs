//! berth's control plane: the ECS API over HTTP.
//!
//! # Design
//!
//! [`api`] is the edge: it checks the SigV4 signature, turns `X-Amz-Target`
//! plus the JSON body into one typed request of [`berth_model::ecs`], hands it to
//! the service layer in [`ops`], and renders the answer or the ECS error shape.
//! Nothing past the edge sees raw JSON. The service layer holds every rule of
//! every operation in one place and runs each API write as one store
//! transaction, committed before the answer is sent.
//!
//! # Limitations
//!
//! Operations that later parts of berth will implement answer
//! `UnsupportedFeatureException` naming the operation.

pub mod access;
pub mod api;
pub mod audit;
mod berth_ops;
pub mod credentials;
pub mod exec;
pub mod gateway;
pub mod logs;
pub mod ops;
pub mod registry;
pub mod sigv4;
pub mod users;

use anyhow::Context as _;
use berth_model::arn::ArnContext;
use berth_model::clock::Clock;
use berth_store::{Durability, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The real clock: the only place berth reads the system time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// How a server is started.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    pub account_id: String,
    pub durability: Durability,
    /// Exec sessions: token lifetime, idle timeout, public URL.
    pub exec: exec::ExecConfig,
    /// Instance types, prices and fees (`--price-table`, `--fee-table`,
    /// `--fee-percent` replace the embedded ones).
    pub catalog: &'static berth_catalog::Catalog,
}

/// A server bound to its address, ready to serve.
pub struct Server {
    listener: tokio::net::TcpListener,
    /// More addresses serving the same app (the agents' side of a bridge).
    extra: Vec<tokio::net::TcpListener>,
    state: Arc<api::AppState>,
    pub credentials: credentials::RootKey,
}

impl Server {
    /// Opens the store, loads or creates the root key and binds the address.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
        let db = config.data_dir.join("berth.db");
        let store = Store::open_sqlite(&db, config.durability)
            .with_context(|| format!("cannot open the store {}", db.display()))?;
        // The store holds the users' secrets: only the server's user reads it.
        for suffix in ["", "-wal", "-shm"] {
            let mut f = db.clone().into_os_string();
            f.push(suffix);
            private(std::path::Path::new(&f))?;
        }
        let credentials = credentials::RootKey::load_or_create(&config.data_dir)?;
        let ctx = ops::Ctx {
            store,
            arns: ArnContext {
                region: config.region.clone(),
                account: config.account_id.clone(),
            },
            clock: Arc::new(SystemClock),
            catalog: config.catalog,
        };
        let state = Arc::new(
            api::AppState::new(ctx, &credentials, &config.data_dir)?
                .with_exec_config(config.exec.clone()),
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Self {
            listener,
            extra: vec![],
            state,
            credentials,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the same API on one more address as well; returns it bound.
    pub async fn also_listen(&mut self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = l.local_addr()?;
        self.extra.push(l);
        Ok(bound)
    }

    /// Makes this server launch instances through `provider` and schedule
    /// tasks onto them (`berth up`); without it tasks wait in PROVISIONING.
    pub fn with_provider(
        &self,
        provider: Arc<dyn berth_control::scheduler::Launcher>,
        config: berth_control::scheduler::SchedulerConfig,
    ) {
        let link: Arc<dyn berth_control::AgentLink> = self.state.hub.clone();
        let s = berth_control::scheduler::Scheduler::new(
            self.state.ctx.clone(),
            provider,
            link,
            config,
        );
        self.state.set_scheduler(Arc::new(s));
    }

    /// The shared state, for callers that embed the server.
    pub fn state(&self) -> Arc<api::AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains open requests for at most `grace`.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let scheduler_loop = self.state.scheduler().cloned().map(|s| {
            let wake = self.state.wake.clone();
            tokio::spawn(run_scheduler(s, wake))
        });
        let app = api::app(self.state);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (stop_extra, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut extras = vec![];
        for l in self.extra {
            let mut stop = stop_extra.subscribe();
            let serve = axum::serve(l, app.clone()).with_graceful_shutdown(async move {
                let _ = stop.recv().await;
            });
            extras.push(AbortOnDrop(Some(tokio::spawn(async move {
                if let Err(e) = serve.await {
                    tracing::warn!(error = %e, "an extra listener failed");
                }
            }))));
        }
        let server = axum::serve(self.listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_extra.send(());
            let _ = tx.send(());
        });
        let mut handle = tokio::spawn(async move { server.await });
        let _guard = AbortOnDrop(scheduler_loop);
        tokio::select! {
            r = &mut handle => return Ok(r??),
            _ = rx => {}
        }
        match tokio::time::timeout(grace, &mut handle).await {
            Ok(r) => Ok(r??),
            Err(_) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "requests still open after the grace period; closing them"
                );
                handle.abort();
                Ok(())
            }
        }
    }
}

/// Makes a file readable and writable by its owner only, when it exists.
fn private(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", path.display()))
        }
        _ => Ok(()),
    }
}

/// Aborts a background task when dropped, so no loop outlives the server.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Runs the scheduler: a tick on every wake-up and at least every second.
async fn run_scheduler(
    s: Arc<berth_control::scheduler::Scheduler>,
    wake: Arc<tokio::sync::Notify>,
) {
    loop {
        let sched = s.clone();
        let mut next = Duration::from_secs(1);
        match tokio::task::spawn_blocking(move || sched.tick()).await {
            Ok(Ok(report)) => {
                if report.placed > 0 || !report.launched.is_empty() || !report.terminated.is_empty()
                {
                    tracing::debug!(placed = report.placed, launched = ?report.launched, terminated = ?report.terminated, "scheduler tick");
                }
                if let Some(due) = report.next_tick {
                    next = next.min(Duration::from_secs_f64(due.max(0.0) + 0.01));
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e.message, "scheduler tick failed"),
            Err(e) => tracing::error!(error = %e, "scheduler tick panicked"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
}
