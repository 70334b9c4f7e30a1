//! `berth bench`: API throughput and latency against a running server.

#[derive(clap::Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("berth bench is not built yet")
}
