//! The client side of the CLI's commands: where the server is, which key
//! signs, and one signed JSON call.
//!
//! Endpoint: `--endpoint`, else `BERTH_ENDPOINT`, else `http://127.0.0.1:7700`.
//! Credentials: the standard AWS chain (`AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`, then `AWS_PROFILE` (default `default`) in
//! `AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`), falling back to the
//! credentials file berth writes in its default data dir. Region:
//! `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.

use anyhow::Context as _;
use berth_server::credentials::parse_credentials_file;
use berth_server::sigv4::{self, Credentials, Scope};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use std::path::PathBuf;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7700";

/// Where to reach the server, shared by every client command.
#[derive(clap::Args, Clone, Debug)]
pub struct EndpointArgs {
    /// The berth server, http://HOST:PORT (else $BERTH_ENDPOINT, else http://127.0.0.1:7700).
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
}

impl EndpointArgs {
    pub fn url(&self) -> String {
        self.endpoint
            .clone()
            .or_else(|| {
                std::env::var("BERTH_ENDPOINT")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The region requests are signed for.
pub fn region() -> String {
    env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into())
}

fn berth_data_dir() -> Option<PathBuf> {
    if let Some(x) = env("BERTH_DATA_DIR") {
        return Some(PathBuf::from(x));
    }
    if let Some(x) = env("XDG_DATA_HOME") {
        return Some(PathBuf::from(x).join("berth"));
    }
    env("HOME").map(|h| PathBuf::from(h).join(".local/share/berth"))
}

/// The signing key, from the AWS chain or berth's own credentials file.
pub fn credentials() -> anyhow::Result<Credentials> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
        });
    }
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let mut files = vec![];
    if let Some(f) = env("AWS_SHARED_CREDENTIALS_FILE") {
        files.push(PathBuf::from(f));
    } else if let Some(h) = env("HOME") {
        files.push(PathBuf::from(h).join(".aws/credentials"));
    }
    if let Some(d) = berth_data_dir() {
        files.push(d.join("credentials"));
    }
    for f in &files {
        if let Ok(text) = std::fs::read_to_string(f) {
            if let Some((id, secret)) = parse_credentials_file(&text, &profile) {
                return Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: secret,
                });
            }
        }
    }
    anyhow::bail!(
        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE to berth's credentials file (looked in {})",
        files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// An error answer in the ECS shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A signed JSON client for one server.
pub struct Client {
    endpoint: String,
    creds: Credentials,
    region: String,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl Client {
    pub fn new(endpoint: &EndpointArgs) -> anyhow::Result<Self> {
        let endpoint = endpoint.url();
        if !endpoint.starts_with("http://") {
            anyhow::bail!("the endpoint must be http://HOST:PORT; {endpoint} is not");
        }
        Ok(Self {
            endpoint,
            creds: credentials()?,
            region: region(),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        })
    }

    /// The server's URL, `http://host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls `target` (for example `AmazonEC2ContainerServiceV20141113.ListClusters`)
    /// with a JSON body and returns the JSON answer.
    pub async fn call(
        &self,
        target: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let bytes = serde_json::to_vec(body)?;
        let uri: http::Uri = format!("{}/", self.endpoint)
            .parse()
            .context("bad endpoint")?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut headers = http::HeaderMap::new();
        headers.insert("host", host.parse()?);
        headers.insert("content-type", "application/x-amz-json-1.1".parse()?);
        headers.insert("x-amz-target", target.parse()?);
        let now = time::OffsetDateTime::now_utc();
        sigv4::sign(
            &http::Method::POST,
            &uri,
            &mut headers,
            &bytes,
            &self.creds,
            Scope {
                region: &self.region,
                service: "ecs",
            },
            now,
        );
        let mut req = http::Request::builder().method(http::Method::POST).uri(uri);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(bytes)))?;
        let resp = self.http.request(req).await.with_context(|| {
            format!(
                "cannot reach berth at {}: is `berth up` running?",
                self.endpoint
            )
        })?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        let value: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if status != 200 {
            return Err(ApiError {
                status,
                kind: value["__type"].as_str().unwrap_or("Error").to_string(),
                message: value["message"].as_str().unwrap_or("").to_string(),
            }
            .into());
        }
        Ok(value)
    }

    /// Calls an ECS operation.
    pub async fn ecs(
        &self,
        operation: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.call(
            &format!("AmazonEC2ContainerServiceV20141113.{operation}"),
            body,
        )
        .await
    }

    /// Calls a berth operation (beyond the ECS API).
    pub async fn berth(
        &self,
        operation: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.call(
            &format!("{}.{operation}", berth_server::api::BERTH_TARGET_PREFIX),
            body,
        )
        .await
    }
}

/// Parses a human duration: `90s`, `5m`, `2h`, `14d`, or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let secs = berth_control::lifecycle::parse_duration(s).map_err(anyhow::Error::msg)?;
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90s").ok(),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("5m").ok(),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("14d").ok(),
            Some(std::time::Duration::from_secs(14 * 86400))
        );
        assert_eq!(
            parse_duration("7").ok(),
            Some(std::time::Duration::from_secs(7))
        );
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("m").is_err());
    }
}
