//! `berth image`: build images locally and push them to the server's
//! built-in registry; list what the registry holds.

use anyhow::{bail, Context as _};
use berth_image::client::Client;
use berth_image::import::{import_archive, import_rootfs, RootfsOptions};
use berth_image::reference::{ImageRef, Reference};
use berth_image::BlobStore;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand)]
enum ImageCommand {
    /// Build an image from a root filesystem directory or an image archive
    /// (`docker save`, or an OCI image layout tar) and push it to the server's
    /// registry. Task definitions then name it as NAME:TAG.
    Import(ImportArgs),
    /// List the repositories and tags in the server's registry.
    Ls(LsArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["rootfs", "archive"])))]
struct ImportArgs {
    /// A directory holding the image's root filesystem (one layer).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// A `docker save` archive or an OCI image layout tar (gzipped or not).
    #[arg(value_name = "FILE.tar")]
    archive: Option<PathBuf>,
    /// The name and tag to push as, e.g. busybox:latest (tag default: latest).
    #[arg(long, value_name = "NAME:TAG")]
    tag: String,
    /// The server's root URL.
    #[arg(long, env = "BERTH_ENDPOINT", default_value = "http://127.0.0.1:7700")]
    endpoint: String,
    /// With --rootfs: the image's command (default: sh).
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "ARG")]
    cmd: Option<Vec<String>>,
    /// With --rootfs: the image's entrypoint.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "ARG")]
    entrypoint: Option<Vec<String>>,
    /// With --rootfs: an environment variable, KEY=VALUE (repeatable; default: a standard PATH).
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// With --rootfs: the working directory.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// With --rootfs: the user to run as (name, uid or uid:gid).
    #[arg(long)]
    user: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Output {
    /// A table, for people.
    Table,
    /// One JSON document, for programs.
    Json,
}

#[derive(clap::Args)]
struct LsArgs {
    /// The server's root URL.
    #[arg(long, env = "BERTH_ENDPOINT", default_value = "http://127.0.0.1:7700")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

/// Runs `berth image ...`.
pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Import(a) => import(a).await,
        ImageCommand::Ls(a) => ls(a).await,
    }
}

/// The access key: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, else the
/// `[default]` profile of AWS_SHARED_CREDENTIALS_FILE, else the file the
/// server writes in its default data dir.
fn credentials() -> anyhow::Result<(String, String)> {
    if let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        if !id.is_empty() && !secret.is_empty() {
            return Ok((id, secret));
        }
    }
    let file = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").filter(|v| !v.is_empty()) {
        Some(f) => PathBuf::from(f),
        None => {
            let data =
                match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
                    Some(x) => PathBuf::from(x),
                    None => PathBuf::from(std::env::var_os("HOME").context(
                        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    )?)
                    .join(".local/share"),
                };
            data.join("berth/credentials")
        }
    };
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or AWS_SHARED_CREDENTIALS_FILE (cannot read {})",
            file.display()
        )
    })?;
    berth_server::credentials::parse_credentials_file(&text, "default").with_context(|| {
        format!(
            "{} has no [default] aws_access_key_id and aws_secret_access_key",
            file.display()
        )
    })
}

fn client(endpoint: &str) -> anyhow::Result<Client> {
    let endpoint = endpoint.trim_end_matches('/');
    if !endpoint.starts_with("http://") {
        bail!(
            "--endpoint must be a plain http:// URL, like http://127.0.0.1:7700 (got {endpoint})"
        );
    }
    let (id, secret) = credentials()?;
    Ok(Client::new(endpoint)
        .with_context(|| format!("bad --endpoint {endpoint}"))?
        .with_credentials(&id, &secret))
}

/// A temp dir removed on drop (the local build store).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("berth-image-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>10} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// `NAME[:TAG]` without a registry host or digest.
fn parse_tag(tag: &str) -> anyhow::Result<ImageRef> {
    let r = ImageRef::parse(tag).with_context(|| {
        format!("--tag {tag:?} is not NAME[:TAG] (lowercase name components separated by /)")
    })?;
    if r.registry.is_some() {
        bail!("--tag {tag:?} names a registry host: give NAME[:TAG]; the registry is --endpoint");
    }
    if matches!(r.reference, Reference::Digest(_)) {
        bail!("--tag {tag:?} has a digest: give NAME[:TAG]");
    }
    Ok(r)
}

async fn import(a: ImportArgs) -> anyhow::Result<()> {
    let target = parse_tag(&a.tag)?;
    let tag = target.reference.to_string();
    let name = target.repository.clone();
    let rootfs_only = a.cmd.is_some()
        || a.entrypoint.is_some()
        || !a.env.is_empty()
        || a.workdir.is_some()
        || a.user.is_some();
    if rootfs_only && a.rootfs.is_none() {
        bail!("--cmd, --entrypoint, --env, --workdir and --user only go with --rootfs: an archive carries its own config");
    }
    let client = client(&a.endpoint)?;
    client
        .ping()
        .await
        .with_context(|| format!("cannot reach the registry at {}/v2/", a.endpoint))?;

    let tmp = TempDir::new()?;
    let store = BlobStore::open(tmp.0.join("store"))?;
    let progress = bar("build");
    let imported = {
        let (store, progress, name, tag) =
            (store.clone(), progress.clone(), name.clone(), tag.clone());
        let rootfs = a.rootfs.clone();
        let archive = a.archive.clone();
        let mut opts = RootfsOptions::default();
        if let Some(c) = a.cmd {
            opts.cmd = Some(c);
        }
        opts.entrypoint = a.entrypoint;
        if !a.env.is_empty() {
            opts.env = a.env;
        }
        opts.working_dir = a.workdir;
        opts.user = a.user;
        tokio::task::spawn_blocking(move || {
            let mut cb = |done: u64, total: u64| {
                progress.set_length(total);
                progress.set_position(done);
            };
            match (rootfs, archive) {
                (Some(dir), _) => import_rootfs(&store, &dir, &opts, &name, &tag, &mut cb)
                    .with_context(|| format!("cannot build an image from {}", dir.display())),
                (None, Some(file)) => import_archive(&store, &file, &name, &tag, &mut cb)
                    .with_context(|| format!("cannot import {}", file.display())),
                (None, None) => bail!("give --rootfs DIR or FILE.tar"),
            }
        })
        .await
        .context("the build task failed")??
    };
    progress.finish_and_clear();

    let progress = bar("push");
    let mut cb = |done: u64, total: u64| {
        progress.set_length(total);
        progress.set_position(done);
    };
    let digest = client
        .push(&store, &name, &tag, &target, &mut cb)
        .await
        .with_context(|| format!("cannot push {name}:{tag} to {}", a.endpoint))?;
    progress.finish_and_clear();
    let size: u64 = imported.manifest.layers.iter().map(|l| l.size).sum();
    println!("{name}:{tag} {digest}");
    eprintln!(
        "pushed {name}:{tag}: {} layer(s), {}",
        imported.layers.len(),
        human(size)
    );
    Ok(())
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

async fn ls(a: LsArgs) -> anyhow::Result<()> {
    let client = client(&a.endpoint)?;
    let repos = client
        .catalog()
        .await
        .with_context(|| format!("cannot list the registry at {}", a.endpoint))?;
    let mut rows = Vec::new();
    for r in repos {
        let tags = client
            .tags(&r)
            .await
            .with_context(|| format!("cannot list the tags of {r}"))?;
        rows.push((r, tags));
    }
    match a.output {
        Output::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|(r, t)| serde_json::json!({ "repository": r, "tags": t }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(vec!["repository", "tag"]);
            for (r, tags) in &rows {
                if tags.is_empty() {
                    t.add_row(vec![r.as_str(), ""]);
                }
                for tag in tags {
                    t.add_row(vec![r.as_str(), tag.as_str()]);
                }
            }
            println!("{t}");
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let r = parse_tag("busybox").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.reference.to_string().as_str()),
            ("busybox", "latest")
        );
        let r = parse_tag("library/busybox:1.36").unwrap();
        assert_eq!(r.reference.to_string(), "1.36");
        assert!(parse_tag("localhost:7700/busybox:1").is_err());
        assert!(parse_tag("Busybox").is_err());
        assert_eq!(human(1536), "1.5 KiB");
    }
}
