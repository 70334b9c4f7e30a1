//! `berth agent` (runs on each instance) and `berth shim` (one per container).

use anyhow::Context as _;
use berth_agent::daemon::{self, AgentConfig};
use berth_agent::images::Images;
use berth_agent::runtime::{self, ShimCommand};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The server, http://HOST:PORT.
    #[arg(long, env = "BERTH_SERVER")]
    server: String,
    #[arg(long, env = "BERTH_INSTANCE_ID")]
    instance_id: String,
    /// Where the agent keeps its credential, task records, images and logs.
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long, default_value = "")]
    instance_type: String,
    #[arg(long, env = "BERTH_AVAILABILITY_ZONE", default_value = "")]
    availability_zone: String,
    /// CPU units to register (vCPUs × 1024).
    #[arg(long)]
    cpu: u32,
    /// Memory to register, MiB.
    #[arg(long)]
    memory: u64,
    /// Whole GPUs to register, with ids `0`..`N-1`: the host's `/dev/nvidiaN`
    /// devices are passed to the containers given them where they exist, and
    /// the ids are only declared (for scheduling) where they do not.
    #[arg(long, default_value_t = 0)]
    gpus: u32,
}

pub async fn agent(
    args: AgentArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the berth binary")?;
    let runtime: Arc<dyn runtime::Runtime> = Arc::from(runtime::detect(
        &args.state_dir.join("runtime"),
        ShimCommand::new(exe).arg("shim"),
    ));
    let cgroup_root =
        std::env::var("BERTH_CGROUP").unwrap_or_else(|_| format!("/berth/{}", args.instance_id));
    let images = Images::open(
        &args.state_dir.join("images"),
        &args.server,
        &args.instance_id,
        args.state_dir.join("credential"),
        tokio::runtime::Handle::current(),
    )?;
    let config = AgentConfig {
        server: args.server.clone(),
        instance_id: args.instance_id.clone(),
        state_dir: args.state_dir.clone(),
        instance_type: args.instance_type.clone(),
        availability_zone: args.availability_zone.clone(),
        cpu: args.cpu,
        memory_mib: args.memory,
        gpus: (0..args.gpus).map(|i| i.to_string()).collect(),
        join_token: std::env::var("BERTH_JOIN_TOKEN").ok(),
        cgroup_root,
    };
    daemon::run(
        config,
        runtime,
        Arc::new(images),
        Arc::new(berth_server::SystemClock),
        shutdown,
    )
    .await
}
