//! `berth`: the one binary. Thin: parses the command line and calls the crates.

use anyhow::Context as _;
use berth_server::{Config, Server};
use berth_store::Durability;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod agent_cmd;
mod audit;
mod bench;
mod capacity;
mod client;
mod cost;
mod exec;
mod fleet;
mod image;
mod logs;
mod simulate;
mod up;
mod user;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A self-hosted container platform with an ECS-compatible API",
    long_about = "berth runs containers on managed instances behind an Amazon ECS-compatible API: \
                  point `aws ecs` or boto3 at it with --endpoint-url and use them as you would with ECS."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// fsync every commit: an acknowledged write survives power loss.
    Full,
    /// Survive a crash of the server process, not of the machine (faster).
    Process,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// Address to serve the ECS API on.
    #[arg(long, default_value = "127.0.0.1:7700", env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Where berth keeps its state (the store, the credentials file).
    /// Default: $XDG_DATA_HOME/berth, else ~/.local/share/berth.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Region in ARNs and in the SigV4 credential scope.
    #[arg(long, default_value = "us-east-1", env = "BERTH_REGION")]
    region: String,
    /// Account id in ARNs.
    #[arg(long, default_value = "000000000000", env = "BERTH_ACCOUNT_ID")]
    account_id: String,
    /// How hard each commit waits for the disk.
    #[arg(long, value_enum, default_value = "full")]
    durability: DurabilityArg,
    /// The server's URL as clients reach it (https://berth.example.com), for ExecuteCommand's
    /// streamUrl; default: the address each ExecuteCommand request was sent to.
    #[arg(long, env = "BERTH_PUBLIC_URL")]
    public_url: Option<String>,
    /// How long an exec session's token stays usable after ExecuteCommand.
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg, env = "BERTH_EXEC_TOKEN_TTL")]
    exec_token_ttl: std::time::Duration,
    /// An exec session without input or output for this long ends.
    #[arg(long, default_value = "20m", value_parser = parse_duration_arg, env = "BERTH_EXEC_IDLE_TIMEOUT")]
    exec_idle_timeout: std::time::Duration,
    /// On-demand prices to use instead of the embedded ones: a CSV with
    /// region,instance_type,usd_per_hour[,source][,as_of] (the format of
    /// crates/catalog/data/prices-on-demand.csv).
    #[arg(long, env = "BERTH_PRICE_TABLE")]
    price_table: Option<PathBuf>,
    /// Management fees to use instead of the embedded ones: a CSV with
    /// region,instance_type,fee_usd_per_hour[,basis][,as_of] (the format of
    /// ecs-mi-management-fee.csv); types without a row pay 12 % of on-demand.
    #[arg(long, env = "BERTH_FEE_TABLE", conflicts_with = "fee_percent")]
    fee_table: Option<PathBuf>,
    /// The management fee as this percentage of each type's on-demand price
    /// instead of a fee table.
    #[arg(long, env = "BERTH_FEE_PERCENT")]
    fee_percent: Option<f64>,
}

/// Where `berth up` puts its local instances.
#[derive(clap::Args, Clone)]
pub struct LocalArgs {
    /// The host bridge every local instance is cabled to.
    #[arg(long, default_value = "berth0", env = "BERTH_BRIDGE")]
    pub bridge: String,
    /// Addresses of local instances; the bridge takes the first. Nothing
    /// outside this range is ever contacted.
    #[arg(long, default_value = "10.213.0.0/16", env = "BERTH_ADDRESS_RANGE")]
    pub address_range: String,
    /// The cgroup (under each controller) that holds every instance's cgroup.
    #[arg(long, default_value = "/berth", env = "BERTH_CGROUP_ROOT")]
    pub cgroup_root: String,
    /// Memory of every instance held back from tasks for the OS and the agent
    /// (MiB); what is left is what the instance registers and what plans count.
    #[arg(long, default_value_t = 256, env = "BERTH_RESERVED_MEMORY")]
    pub reserved_memory: u64,
    /// Idle time before an instance is terminated when its capacity provider's
    /// scaleInAfter is unset (90s, 5m, ...).
    #[arg(long, default_value = "5m", value_parser = parse_duration_arg, env = "BERTH_DEFAULT_SCALE_IN_AFTER")]
    pub default_scale_in_after: std::time::Duration,
    /// Age at which an instance starts draining to be replaced (14d; a
    /// capacity provider's tag berth:drain-age overrides it).
    #[arg(long, default_value = "14d", value_parser = parse_duration_arg, env = "BERTH_DRAIN_AGE")]
    pub drain_age: std::time::Duration,
    /// Age at which an instance is terminated whatever still runs on it
    /// (21d; tag berth:max-lifetime).
    #[arg(long, default_value = "21d", value_parser = parse_duration_arg, env = "BERTH_MAX_LIFETIME")]
    pub max_lifetime: std::time::Duration,
    /// An instance whose agent has been unreachable this long is presumed
    /// lost: its tasks are STOPPED and replaced elsewhere.
    #[arg(long, default_value = "10m", value_parser = parse_duration_arg, env = "BERTH_AGENT_TIMEOUT")]
    pub agent_timeout: std::time::Duration,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    client::parse_duration(s).map_err(|e| format!("{e:#}"))
}

#[derive(clap::Args, Clone)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    local: LocalArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run berth on this machine: the ECS API, local managed instances (network
    /// namespaces and cgroups, or plain processes without root) and the scheduler.
    Up(UpArgs),
    /// Run the control plane only: the ECS API on --listen, state in --data-dir.
    Server(ServerArgs),
    /// Import images into berth's registry and list them.
    Image(image::ImageArgs),
    /// Print a task's container output.
    Logs(logs::LogsArgs),
    /// Run a command inside a task's running container (`berth exec TASK -it -- sh`).
    Exec(exec::ExecArgs),
    /// Run the agent of one instance (started by the instance provider).
    #[command(hide = true)]
    Agent(agent_cmd::AgentArgs),
    /// Measure a running server: API throughput and latency (`api`), task start latency (`tasks`).
    Bench(bench::BenchArgs),
    /// Plan capacity offline: the cheapest fleet of instance types for a set of tasks.
    Capacity(capacity::CapacityArgs),
    /// The instances' lifecycle: list ages and images, roll a new OS image, replace instances.
    Fleet(fleet::FleetArgs),
    /// API users: create one with a role (admin, operator, viewer), list, remove.
    User(user::UserArgs),
    /// The audit log: exec sessions and mutating API calls.
    Audit(audit::AuditArgs),
    /// Metered cost: instance bills at price + management fee, each task's
    /// share, idle capacity, and what Fargate would have cost.
    Cost(cost::CostArgs),
    /// Simulate weeks of a fleet's life in seconds: the real controllers on a virtual
    /// clock and simulated instances, driven by a scenario file.
    Simulate(simulate::SimulateArgs),
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("berth"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/berth"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

fn config(args: ServerArgs) -> anyhow::Result<Config> {
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    Ok(Config {
        listen: args.listen,
        data_dir,
        region: args.region,
        account_id: args.account_id,
        durability: match args.durability {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::Process => Durability::Process,
        },
        exec: berth_server::exec::ExecConfig {
            token_ttl: args.exec_token_ttl,
            idle_timeout: args.exec_idle_timeout,
            public_url: args.public_url,
        },
        catalog: cost::load_catalog(
            args.price_table.as_deref(),
            args.fee_table.as_deref(),
            args.fee_percent,
        )?,
    })
}

/// What a person needs to start using the server.
pub fn print_banner(server: &Server, config: &Config, addr: SocketAddr) {
    let creds = &server.credentials;
    eprintln!(
        "berth {} serving the ECS API on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    eprintln!(
        "  region {}, account {}, data dir {}",
        config.region,
        config.account_id,
        config.data_dir.display()
    );
    match &creds.file {
        Some(f) if creds.generated => {
            eprintln!(
                "  generated the root access key {} in {}",
                creds.access_key_id,
                f.display()
            )
        }
        Some(f) => eprintln!(
            "  root access key {} from {}",
            creds.access_key_id,
            f.display()
        ),
        None => eprintln!(
            "  root access key {} from BERTH_ACCESS_KEY_ID",
            creds.access_key_id
        ),
    }
    if let Some(f) = &creds.file {
        eprintln!(
            "  try: AWS_SHARED_CREDENTIALS_FILE={} aws ecs list-clusters --endpoint-url http://{addr} --region {}",
            f.display(),
            config.region
        );
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    let server = Server::bind(&config).await?;
    let addr = server.local_addr()?;
    print_banner(&server, &config, addr);
    server
        .serve(shutdown_signal(), Duration::from_secs(10))
        .await
}

/// mimalloc rather than the system's allocator: the control plane's work is
/// many small documents decoded and dropped, where glibc's malloc and free
/// took a fifth of a simulated month (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // `berth shim …` supervises one container; it parses its own arguments.
    if std::env::args_os().nth(1).is_some_and(|a| a == "shim") {
        return berth_agent::runtime::shim::main();
    }
    let cli = Cli::parse();
    // A simulation's controllers log what they do, thousands of times over:
    // only warnings by default.
    let default_level = match &cli.command {
        Command::Simulate(_) => "warn",
        Command::Bench(b) if b.in_process_controllers() => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let command = match cli.command {
        Command::Exec(args) => {
            // The remote command's status is ours; a blocked read of the terminal must
            // not keep the process alive.
            let code = runtime.block_on(exec::run(args));
            runtime.shutdown_background();
            return std::process::ExitCode::from(code);
        }
        other => other,
    };
    let result = runtime.block_on(async {
        match command {
            Command::Server(args) => server(args).await,
            Command::Up(args) => match config(args.server) {
                Ok(c) => up::up(c, args.local, shutdown_signal()).await,
                Err(e) => Err(e),
            },
            Command::Logs(args) => logs::run(args).await,
            Command::Image(args) => image::run(args).await,
            Command::Agent(args) => agent_cmd::agent(args, shutdown_signal()).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Capacity(args) => capacity::run(args),
            Command::Fleet(args) => fleet::run(args).await,
            Command::User(args) => user::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Cost(args) => cost::run(args).await,
            Command::Exec(_) => Ok(()),
            Command::Simulate(args) => simulate::run(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<capacity::InputError>().is_some()
                || e.downcast_ref::<berth_sim::ScenarioError>().is_some()
            {
                return std::process::ExitCode::from(2);
            }
            // The server refused (2) or failed (3); anything else is 1.
            match e.downcast_ref::<client::ApiError>() {
                Some(api) if api.status < 500 => std::process::ExitCode::from(2),
                Some(_) => std::process::ExitCode::from(3),
                None => std::process::ExitCode::from(1),
            }
        }
    }
}
