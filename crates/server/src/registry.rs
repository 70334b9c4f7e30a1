//! The built-in image registry: the pull and push subset of the OCI
//! distribution spec under `/v2/`, over a [`berth_image::BlobStore`].
//!
//! # Design
//!
//! One wildcard route takes every `/v2/...` path and parses it from the end,
//! so names with slashes (`library/busybox`) work: `<name>/manifests/<ref>`,
//! `<name>/blobs/<digest>`, `<name>/blobs/uploads/[<id>]`, `<name>/tags/list`,
//! and `_catalog`. Every request needs HTTP Basic credentials (an access key
//! id and its secret) accepted by the `auth` callback; otherwise `401` with
//! `WWW-Authenticate: Basic realm="berth"`. The callback also says whether the
//! key may push: a request that writes (`POST`, `PUT`, `PATCH`, `DELETE`) with
//! a pull-only key is `403 DENIED`.
//!
//! Blob bodies are streamed to disk (never held in memory) and only become
//! blobs once their content hashed to the announced digest; blob answers are
//! streamed from disk. Manifests are held in memory up to 4 MiB.
//!
//! # Limits
//!
//! Blobs are shared by all repositories (knowing a digest is enough to read
//! it, given valid credentials). No deletion, no garbage collection, no
//! `Range` reads, no referrers API. Upload sessions left unfinished stay on
//! disk until removed by hand.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use base64::Engine as _;
use berth_image::spec::AnyManifest;
use berth_image::{BlobStore, Digest, Error as ImageError};
use http_body_util::BodyExt as _;
use std::io::Write as _;
use std::sync::Arc;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Unknown key or wrong secret.
    None,
    Pull,
    PushPull,
}

/// Checks an access key id and secret.
pub type AuthFn = Arc<dyn Fn(&str, &str) -> Access + Send + Sync>;

/// The largest manifest accepted.
const MAX_MANIFEST: usize = 4 << 20;

struct Registry {
    store: Arc<BlobStore>,
    auth: AuthFn,
}

/// The registry's router: `/v2/` and everything under it.
pub fn routes(store: Arc<BlobStore>, auth: AuthFn) -> Router {
    let state = Arc::new(Registry { store, auth });
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*path}", any(dispatch))
        .with_state(state)
}

/// An error in the distribution spec's shape.
#[derive(Debug)]
struct RegError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> RegError {
    RegError {
        status,
        code,
        message: message.into(),
    }
}

impl IntoResponse for RegError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": null }]
        });
        let mut resp = (self.status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        api_version(h);
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"berth\""),
            );
        }
        resp
    }
}

impl From<ImageError> for RegError {
    fn from(e: ImageError) -> Self {
        let m = e.to_string();
        match e {
            ImageError::InvalidName(_) => err(StatusCode::BAD_REQUEST, "NAME_INVALID", m),
            ImageError::InvalidTag(_) => err(StatusCode::BAD_REQUEST, "TAG_INVALID", m),
            ImageError::InvalidDigest(_) | ImageError::DigestMismatch { .. } => {
                err(StatusCode::BAD_REQUEST, "DIGEST_INVALID", m)
            }
            ImageError::SizeMismatch { .. } => err(StatusCode::BAD_REQUEST, "SIZE_INVALID", m),
            ImageError::BlobUnknown(_) => err(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", m),
            ImageError::ManifestUnknown(_) => err(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", m),
            ImageError::UploadUnknown(_) => err(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", m),
            ImageError::ManifestInvalid(_) | ImageError::Unsupported(_) => {
                err(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m)
            }
            _ => {
                tracing::error!(error = %m, "registry storage error");
                err(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", m)
            }
        }
    }
}

type Result<T, E = RegError> = std::result::Result<T, E>;

fn api_version(h: &mut HeaderMap) {
    h.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
}

fn check_auth(reg: &Registry, headers: &HeaderMap, write: bool) -> Result<()> {
    let denied = || {
        err(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required: HTTP Basic with an access key id and secret",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(denied)?;
    let (scheme, b64) = value.split_once(' ').ok_or_else(denied)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(denied());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| denied())?;
    let raw = String::from_utf8(raw).map_err(|_| denied())?;
    let (id, secret) = raw.split_once(':').ok_or_else(denied)?;
    match (reg.auth)(id, secret) {
        Access::None => Err(denied()),
        Access::Pull if write => Err(err(
            StatusCode::FORBIDDEN,
            "DENIED",
            "this key may pull images but not push them",
        )),
        Access::Pull | Access::PushPull => Ok(()),
    }
}

async fn base(State(reg): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_auth(&reg, &headers, false) {
        return e.into_response();
    }
    let mut resp = (StatusCode::OK, "{}").into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    api_version(h);
    resp
}

/// What a `/v2/<path>` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Uploads(&'a str),
    Upload(&'a str, &'a str),
}

fn parse_path(path: &str) -> Option<Target<'_>> {
    if path == "_catalog" {
        return Some(Target::Catalog);
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Target::Tags(name));
    }
    if let Some(name) = path
        .strip_suffix("/blobs/uploads/")
        .or_else(|| path.strip_suffix("/blobs/uploads"))
    {
        return Some(Target::Uploads(name));
    }
    let (head, last) = path.rsplit_once('/')?;
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Some(Target::Upload(name, last));
    }
    if let Some(name) = head.strip_suffix("/manifests") {
        return Some(Target::Manifest(name, last));
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        return Some(Target::Blob(name, last));
    }
    None
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn name_ok(name: &str) -> Result<()> {
    berth_image::reference::validate_name(name)
        .map_err(|e| err(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string()))
}

async fn dispatch(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    match handle(reg, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(reg: Arc<Registry>, req: Request) -> Result<Response> {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    check_auth(&reg, req.headers(), write)?;
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path()
        .strip_prefix("/v2/")
        .unwrap_or_default()
        .to_string();
    let query = parts.uri.query().map(str::to_string);
    let query = query.as_deref();
    let method = parts.method.clone();
    let target = parse_path(&path).ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no route for /v2/{path}"),
        )
    })?;
    let unsupported = || {
        err(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!("{method} is not supported on /v2/{path}"),
        )
    };
    let mut resp = match target {
        Target::Catalog if method == Method::GET => catalog(&reg, query).await?,
        Target::Tags(name) if method == Method::GET => tags(&reg, name, query).await?,
        Target::Manifest(name, reference) if method == Method::GET || method == Method::HEAD => {
            get_manifest(&reg, name, reference).await?
        }
        Target::Manifest(name, reference) if method == Method::PUT => {
            put_manifest(&reg, name, reference, &parts.headers, body).await?
        }
        Target::Blob(name, digest) if method == Method::GET || method == Method::HEAD => {
            get_blob(&reg, name, digest, method == Method::HEAD).await?
        }
        Target::Uploads(name) if method == Method::POST => {
            start_upload(&reg, name, query, body).await?
        }
        Target::Upload(name, id) if method == Method::PATCH => {
            patch_upload(&reg, name, id, &parts.headers, body).await?
        }
        Target::Upload(name, id) if method == Method::PUT => {
            put_upload(&reg, name, id, query, body).await?
        }
        Target::Upload(name, id) if method == Method::GET => upload_status(&reg, name, id)?,
        Target::Upload(name, id) if method == Method::DELETE => {
            name_ok(name)?;
            reg.store.cancel_upload(id)?;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => return Err(unsupported()),
    };
    api_version(resp.headers_mut());
    Ok(resp)
}

fn header_str(h: &mut HeaderMap, k: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(k, v);
    }
}

/// A page of `items` after `last`, at most `n`; the `Link` to the next page.
fn page(items: Vec<String>, query: Option<&str>, base: &str) -> (Vec<String>, Option<String>) {
    let n = query_param(query, "n").and_then(|n| n.parse::<usize>().ok());
    let last = query_param(query, "last");
    let mut items: Vec<String> = match &last {
        Some(l) => items.into_iter().filter(|i| i > l).collect(),
        None => items,
    };
    match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            let link = items
                .last()
                .map(|l| format!("<{base}?n={n}&last={}>; rel=\"next\"", encode_query(l)));
            (items, link)
        }
        _ => (items, None),
    }
}

fn encode_query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn json_response(v: serde_json::Value, link: Option<String>) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(l) = link {
        header_str(h, "link", &l);
    }
    resp
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> berth_image::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()))?
        .map_err(RegError::from)
}

async fn catalog(reg: &Registry, query: Option<&str>) -> Result<Response> {
    let store = reg.store.clone();
    let all = blocking(move || store.repositories()).await?;
    let (repos, link) = page(all, query, "/v2/_catalog");
    Ok(json_response(
        serde_json::json!({ "repositories": repos }),
        link,
    ))
}

async fn tags(reg: &Registry, name: &str, query: Option<&str>) -> Result<Response> {
    name_ok(name)?;
    if !reg.store.has_repository(name) {
        return Err(err(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {name} is not known"),
        ));
    }
    let store = reg.store.clone();
    let n = name.to_string();
    let all = blocking(move || store.tags(&n)).await?;
    let (tags, link) = page(all, query, &format!("/v2/{name}/tags/list"));
    Ok(json_response(
        serde_json::json!({ "name": name, "tags": tags }),
        link,
    ))
}

async fn get_manifest(reg: &Registry, name: &str, reference: &str) -> Result<Response> {
    name_ok(name)?;
    let store = reg.store.clone();
    let (n, r) = (name.to_string(), reference.to_string());
    let m = blocking(move || store.get_manifest(&n, &r)).await?;
    let len = m.bytes.len();
    let mut resp = (StatusCode::OK, m.bytes).into_response();
    let h = resp.headers_mut();
    header_str(h, "content-type", &m.media_type);
    header_str(h, "docker-content-digest", &m.digest.to_string());
    header_str(h, "etag", &format!("\"{}\"", m.digest));
    header_str(h, "content-length", &len.to_string());
    Ok(resp)
}

async fn put_manifest(
    reg: &Registry,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    name_ok(name)?;
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST)
        .await
        .map_err(|_| {
            err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("a manifest may be at most {MAX_MANIFEST} bytes"),
            )
        })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (_, media_type) = AnyManifest::parse(&bytes, content_type.as_deref())?;
    let store = reg.store.clone();
    let (n, r) = (name.to_string(), reference.to_string());
    let digest =
        tokio::task::spawn_blocking(move || store.put_manifest(&n, &r, &bytes, &media_type))
            .await
            .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()))?
            .map_err(|e| match e {
                ImageError::BlobUnknown(d) => err(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_BLOB_UNKNOWN",
                    format!("the manifest refers to {d}, which was not uploaded"),
                ),
                ImageError::SizeMismatch { .. } => {
                    err(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", e.to_string())
                }
                other => RegError::from(other),
            })?;
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    header_str(h, "location", &format!("/v2/{name}/manifests/{digest}"));
    header_str(h, "docker-content-digest", &digest.to_string());
    Ok(resp)
}

fn parse_digest(s: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| err(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string()))
}

async fn get_blob(reg: &Registry, name: &str, digest: &str, head: bool) -> Result<Response> {
    name_ok(name)?;
    let digest = parse_digest(digest)?;
    let size = reg.store.blob_size(&digest)?;
    let body = if head {
        Body::empty()
    } else {
        let file = tokio::fs::File::open(reg.store.blob_path(&digest))
            .await
            .map_err(|_| RegError::from(ImageError::BlobUnknown(digest.clone())))?;
        let stream = futures_util::stream::unfold(file, |mut f| async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
            match f.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok::<_, std::io::Error>(buf.freeze()), f)),
                Err(e) => Some((Err(e), f)),
            }
        });
        Body::from_stream(stream)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    header_str(h, "content-length", &size.to_string());
    header_str(h, "docker-content-digest", &digest.to_string());
    header_str(h, "etag", &format!("\"{digest}\""));
    Ok(resp)
}

/// Streams a request body into `w`; returns the bytes written.
async fn stream_into(body: Body, w: &mut impl std::io::Write) -> Result<u64> {
    let mut body = body;
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                "BLOB_UPLOAD_INVALID",
                format!("reading the body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            w.write_all(&data).map_err(|e| {
                err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    format!("writing an upload: {e}"),
                )
            })?;
            n += data.len() as u64;
        }
    }
    Ok(n)
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    header_str(h, "location", &format!("/v2/{name}/blobs/{digest}"));
    header_str(h, "docker-content-digest", &digest.to_string());
    header_str(h, "content-length", "0");
    resp
}

fn upload_accepted(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    header_str(h, "location", &format!("/v2/{name}/blobs/uploads/{id}"));
    header_str(h, "docker-upload-uuid", id);
    // An empty upload still answers 0-0, as the reference registry does.
    header_str(h, "range", &format!("0-{}", size.saturating_sub(1)));
    header_str(h, "content-length", "0");
    resp
}

async fn start_upload(
    reg: &Registry,
    name: &str,
    query: Option<&str>,
    body: Body,
) -> Result<Response> {
    name_ok(name)?;
    if let Some(d) = query_param(query, "mount") {
        // Blobs are shared by every repository: a mount of a known blob is free.
        let d = parse_digest(&d)?;
        if reg.store.has_blob(&d) {
            return Ok(blob_created(name, &d));
        }
    }
    if let Some(d) = query_param(query, "digest") {
        let digest = parse_digest(&d)?;
        let mut w = reg.store.blob_writer()?;
        stream_into(body, &mut w).await?;
        let expected = digest.clone();
        blocking(move || w.commit(Some(&expected))).await?;
        return Ok(blob_created(name, &digest));
    }
    let id = reg.store.new_upload()?;
    Ok(upload_accepted(StatusCode::ACCEPTED, name, &id, 0))
}

async fn patch_upload(
    reg: &Registry,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    name_ok(name)?;
    let size = reg.store.upload_size(id)?;
    if let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let start = range
            .trim()
            .trim_start_matches("bytes ")
            .split('-')
            .next()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if start != Some(size) {
            let mut resp = err(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                format!("the upload has {size} bytes; the chunk must start there (got {range})"),
            )
            .into_response();
            let h = resp.headers_mut();
            header_str(h, "location", &format!("/v2/{name}/blobs/uploads/{id}"));
            header_str(h, "range", &format!("0-{}", size.saturating_sub(1)));
            return Ok(resp);
        }
    }
    let mut f = reg.store.upload_appender(id)?;
    let n = stream_into(body, &mut f).await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, name, id, size + n))
}

async fn put_upload(
    reg: &Registry,
    name: &str,
    id: &str,
    query: Option<&str>,
    body: Body,
) -> Result<Response> {
    name_ok(name)?;
    let digest = query_param(query, "digest").ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "closing an upload needs ?digest=",
        )
    })?;
    let digest = parse_digest(&digest)?;
    let mut f = reg.store.upload_appender(id)?;
    stream_into(body, &mut f).await?;
    f.flush().ok();
    drop(f);
    let store = reg.store.clone();
    let (i, d) = (id.to_string(), digest.clone());
    blocking(move || store.finish_upload(&i, &d)).await?;
    Ok(blob_created(name, &digest))
}

fn upload_status(reg: &Registry, name: &str, id: &str) -> Result<Response> {
    name_ok(name)?;
    let size = reg.store.upload_size(id)?;
    Ok(upload_accepted(StatusCode::NO_CONTENT, name, id, size))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("_catalog"), Some(Target::Catalog));
        assert_eq!(
            parse_path("library/busybox/tags/list"),
            Some(Target::Tags("library/busybox"))
        );
        assert_eq!(
            parse_path("library/busybox/manifests/latest"),
            Some(Target::Manifest("library/busybox", "latest"))
        );
        assert_eq!(
            parse_path("a/blobs/sha256:00"),
            Some(Target::Blob("a", "sha256:00"))
        );
        assert_eq!(
            parse_path("a/b/blobs/uploads/"),
            Some(Target::Uploads("a/b"))
        );
        assert_eq!(
            parse_path("a/blobs/uploads/xyz"),
            Some(Target::Upload("a", "xyz"))
        );
        assert_eq!(
            parse_path("a/manifests/manifests/x"),
            Some(Target::Manifest("a/manifests", "x"))
        );
        assert_eq!(parse_path("nothing"), None);
    }
}
