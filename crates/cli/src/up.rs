//! `berth up`: the server, the local instance provider and the scheduler in
//! one process tree. Ctrl-C stops everything and leaves nothing behind.

use anyhow::Context as _;
use berth_control::scheduler::{LaunchRequest, Launcher, SchedulerConfig};
use berth_providers::{AgentCommand, InstanceProvider, LaunchSpec, LocalConfig, LocalProvider};
use berth_server::{Config, Server};
use std::sync::Arc;
use std::time::Duration;

/// Lets the scheduler launch (and terminate) through an instance provider;
/// `agents_dir` holds the agents' state, cleaned after a termination.
pub struct ProviderLauncher(pub Arc<dyn InstanceProvider>, pub std::path::PathBuf);

impl Launcher for ProviderLauncher {
    fn launch(&self, r: &LaunchRequest) -> Result<(), String> {
        let spec = LaunchSpec {
            instance_id: r.instance_id.clone(),
            instance_type: r.instance_type.clone(),
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            gpus: r.gpus,
            subnet: r.subnet.clone(),
            now: r.now,
            agent: AgentCommand {
                program: r.agent_program.clone(),
                args: r.agent_args.clone(),
                env: r.agent_env.clone(),
            },
        };
        self.0.launch(&spec).map(|_| ()).map_err(|e| e.to_string())
    }

    fn availability_zone(&self, subnet: &str) -> String {
        self.0.availability_zone(subnet)
    }

    fn new_instance_id(&self) -> String {
        berth_providers::new_instance_id()
    }

    fn allocate_task_address(
        &self,
        instance_id: &str,
        task_id: &str,
    ) -> Result<berth_protocol::TaskAddress, String> {
        self.0
            .allocate_task_address(instance_id, task_id)
            .map(|a| berth_protocol::TaskAddress {
                address: a.address,
                prefix: a.prefix,
                gateway: a.gateway,
            })
            .map_err(|e| e.to_string())
    }

    fn release_task_address(&self, instance_id: &str, task_id: &str) -> Result<(), String> {
        self.0
            .release_task_address(instance_id, task_id)
            .map_err(|e| e.to_string())
    }

    fn terminate(&self, instance_id: &str) -> Result<(), String> {
        self.0.terminate(instance_id).map_err(|e| e.to_string())?;
        remove_leftovers_of(&self.1.join(instance_id), instance_id);
        Ok(())
    }
}

/// Removes what the agents of instances that are gone left on the host
/// (containers' runc state, mounts and cgroups; task network namespaces):
/// every agent state directory under `agents_dir` but those of `keep`.
fn remove_agent_leftovers(agents_dir: &std::path::Path, keep: &[&str]) {
    let Ok(entries) = std::fs::read_dir(agents_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name.as_str()) {
            remove_leftovers_of(&entry.path(), &name);
        }
    }
}

/// Removes what the agent of one gone instance left, from its state dir, and says so.
fn remove_leftovers_of(state_dir: &std::path::Path, instance_id: &str) {
    let (removed, errors) = berth_agent::leftovers::remove(state_dir);
    if !removed.containers.is_empty() || !removed.namespaces.is_empty() {
        tracing::info!(
            instance_id,
            containers = removed.containers.len(),
            namespaces = removed.namespaces.len(),
            "removed what the instance's agent left"
        );
    }
    for e in errors {
        tracing::warn!(instance_id, error = e, "cannot remove what the agent left");
    }
}

/// Terminates every instance the provider knows and records it in the store.
fn terminate_all(
    provider: &dyn InstanceProvider,
    server: &Arc<berth_server::api::AppState>,
    reason: &str,
) {
    let instances = match provider.list() {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list instances");
            return;
        }
    };
    for i in instances.iter().filter(|i| i.state.is_live()) {
        if let Err(e) = provider.terminate(&i.instance_id) {
            tracing::warn!(instance_id = i.instance_id, error = %e, "cannot terminate instance");
        }
        if let Err(e) = berth_control::agents::terminated(&server.ctx, &i.instance_id, reason) {
            tracing::warn!(instance_id = i.instance_id, error = %e.message, "cannot record the termination");
        }
    }
}

pub async fn up(
    config: Config,
    args: crate::LocalArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut server = Server::bind(&config).await?;
    let addr = server.local_addr()?;
    let mut local = LocalConfig::with_state_dir(config.data_dir.join("instances"));
    local.region = config.region.clone();
    local.bridge = args.bridge.clone();
    local.range = args
        .address_range
        .parse()
        .map_err(|e| anyhow::anyhow!("--address-range {}: {e}", args.address_range))?;
    local.cgroup_root = args.cgroup_root.clone();
    let provider =
        LocalProvider::detect(local).context("cannot start the local instance provider")?;
    let state = server.state();
    // After a crash, instances the store still knows keep running (their agents
    // reconnect); everything else a previous run left is cleaned away.
    let running: Vec<String> = provider
        .list()
        .context("cannot list the instances of a previous run")?
        .into_iter()
        .filter(|i| i.state.is_live())
        .map(|i| i.instance_id)
        .collect();
    let kept = berth_control::agents::reconcile_instances(
        &state.ctx,
        &running,
        "The instance was terminated: it was gone when berth restarted.",
    )
    .map_err(|e| anyhow::anyhow!(e.message))?;
    let keep: Vec<&str> = kept.iter().map(String::as_str).collect();
    let swept = provider
        .sweep(&keep)
        .context("cannot clean up instances of a previous run")?;
    tracing::debug!(?swept, "swept leftovers");
    remove_agent_leftovers(&config.data_dir.join("agents"), &keep);
    // Agents reach the server through the bridge's address when there is one.
    provider
        .prepare_network()
        .context("cannot set up the instance network")?;
    let agent_url = match provider.gateway() {
        Some(ip) => {
            let extra = server
                .also_listen(std::net::SocketAddr::new(ip.into(), addr.port()))
                .await?;
            format!("http://{extra}")
        }
        None => format!("http://{addr}"),
    };
    let local = Arc::new(provider);
    let provider: Arc<dyn InstanceProvider> = local.clone();
    let program = std::env::current_exe().context("cannot find the berth binary")?;
    server.with_provider(
        Arc::new(ProviderLauncher(
            provider.clone(),
            config.data_dir.join("agents"),
        )),
        SchedulerConfig {
            architecture: Some(if cfg!(target_arch = "aarch64") {
                berth_catalog::Architecture::Arm64
            } else {
                berth_catalog::Architecture::X86_64
            }),
            reserved_memory_mib: args.reserved_memory,
            default_scale_in_after: args.default_scale_in_after,
            lifecycle: berth_control::lifecycle::LifecycleConfig {
                drain_age: args.drain_age.as_secs_f64(),
                max_lifetime: args
                    .max_lifetime
                    .as_secs_f64()
                    .max(args.drain_age.as_secs_f64()),
                agent_timeout: args.agent_timeout.as_secs_f64(),
                ..Default::default()
            },
            ..SchedulerConfig::new(agent_url.clone(), program, config.data_dir.join("agents"))
        },
    );
    crate::print_banner(&server, &config, addr);
    eprintln!("  instances: local provider, agents reach the server at {agent_url}");
    let result = server.serve(shutdown, Duration::from_secs(10)).await;
    eprintln!("stopping instances…");
    let p = provider.clone();
    let s = state.clone();
    let agents_dir = config.data_dir.join("agents");
    tokio::task::spawn_blocking(move || {
        terminate_all(
            p.as_ref(),
            &s,
            "The instance was terminated: berth stopped.",
        );
        remove_agent_leftovers(&agents_dir, &[]);
        // The bridge and the cgroup root go too: nothing is left behind.
        if let Err(e) = local.destroy() {
            tracing::warn!(error = %e, "cannot remove the instance network");
        }
    })
    .await
    .ok();
    result
}
