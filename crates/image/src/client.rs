//! A registry client (OCI distribution spec, Docker registry v2): pull
//! images into a [`BlobStore`], push them from one, list repositories and tags.
//!
//! # Transport
//!
//! HTTP/1.1 over plain TCP or TLS (rustls with the `ring` provider), both
//! through one connection pool. Which scheme a registry gets:
//!
//! * the default registry: the scheme of the base URL given to
//!   [`Client::new`] (berth's built-in registry is `http://host:port`; any
//!   `https://` registry works as well); a full reference naming the same
//!   `host[:port]` gets that scheme too;
//! * a `host[:port]` named with [`Client::with_insecure_registry`]: `http`;
//!   one named with [`Client::with_secure_registry`]: `https` (the last call
//!   for a host wins);
//! * otherwise a loopback host (`localhost`, `127.0.0.0/8`, `::1`) is `http`
//!   and every other host is `https`, so `registry-1.docker.io/library/busybox`,
//!   `ghcr.io/...` or `<account>.dkr.ecr.<region>.amazonaws.com/...` work as
//!   they are (Docker Hub must be named `registry-1.docker.io/library/NAME`:
//!   there is no `docker.io` alias and no implicit `library/`).
//!
//! Server certificates are verified against Mozilla's root CAs (compiled in,
//! so no CA bundle is needed on the host), plus the PEM certificates of the
//! file named by `SSL_CERT_FILE` when it is set (read by [`Client::new`];
//! an unreadable file is logged and skipped), plus any given to
//! [`Client::with_root_certificates`]. There is no option to skip
//! verification: trust the registry's CA, or use plain http for it. A
//! certificate that does not verify fails with [`Error::Tls`], saying why.
//! No client certificates, no HTTP/2.
//!
//! Redirects (registries send blob downloads to a CDN, often on another host
//! and scheme) are followed for blob GETs, across http and https alike.
//! Credentials and tokens are only ever sent to the registry's own
//! `scheme://host[:port]`, never to a redirect target elsewhere and never
//! over plain http for an https registry.
//!
//! Authentication: anonymous, HTTP Basic (sent up front to registries with
//! credentials), and the Docker token flow: a `401` with
//! `WWW-Authenticate: Bearer realm=..,service=..,scope=..` makes the client
//! fetch a token from the realm (with the Basic credentials if it has any)
//! and retry with `Authorization: Bearer`; tokens are cached per scope. The
//! token server may be on https or http, but Basic credentials for an https
//! registry are never sent to a plain-http token server (other than on a
//! loopback host).

use crate::import::Progress;
use crate::reference::{ImageRef, Reference};
use crate::spec::{media_types, AnyManifest, ImageConfig, Manifest, Platform};
use crate::store::BlobStore;
use crate::{Digest, Error, Result};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

/// The largest manifest, token or listing answer read into memory.
const MAX_SMALL_BODY: usize = 8 << 20;
/// Blob uploads larger than this go in PATCH chunks of this size.
const CHUNK: usize = 8 << 20;

/// Username and password (for berth: access key id and secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// When to ask the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Fetch the manifest every time (a tag may have moved); blobs already
    /// in the store are never fetched again.
    #[default]
    Always,
    /// Use a complete local image under the same name and tag (or digest)
    /// without any request.
    IfNotPresent,
}

/// Options of [`Client::pull`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub policy: PullPolicy,
    /// The platform to pick from an index; default: the client's.
    pub platform: Option<Platform>,
}

/// A pulled (or already present) image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub reference: ImageRef,
    /// The name of the image in the local store.
    pub local_name: String,
    /// The image manifest's digest (the platform's, when the reference is an index).
    pub digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// Layer blob digests, lowest first.
    pub layers: Vec<Digest>,
    /// Blobs fetched over the network by this pull (0: all were cached).
    pub blobs_fetched: usize,
}

/// Where a registry is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registry {
    https: bool,
    authority: String,
}

impl Registry {
    fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.authority)
    }
}

fn is_loopback(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Splits `http://authority/rest` into scheme flag, authority and rest.
fn split_url(url: &str) -> Option<(bool, &str, &str)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return None;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        None
    } else {
        Some((https, authority, path))
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

/// Parses `Scheme k="v", k2=v2` (quoted values may hold commas).
fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = match h.find(' ') {
        Some(i) => (&h[..i], &h[i + 1..]),
        None => (h, ""),
    };
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// The `message`s of a registry's JSON error body, or the raw text.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Es {
        errors: Vec<E>,
    }
    if let Ok(es) = serde_json::from_slice::<Es>(body) {
        let parts: Vec<String> = es
            .errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.code.as_deref().unwrap_or("UNKNOWN"),
                    e.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.chars().take(500).collect()
    }
}

type HttpClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Mozilla's roots, plus the certificates of `SSL_CERT_FILE` when it is set.
fn default_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) else {
        return roots;
    };
    let path = std::path::PathBuf::from(path);
    match std::fs::read(&path) {
        Ok(pem) => {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(std::result::Result::ok)
                .collect();
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                tracing::warn!(path = %path.display(), ignored, "SSL_CERT_FILE holds no usable CA certificate");
            } else {
                tracing::debug!(path = %path.display(), added, ignored, "trusting the CAs of SSL_CERT_FILE");
            }
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read SSL_CERT_FILE; ignoring it");
        }
    }
    roots
}

/// One pooled client for http and https URLs, verifying servers against `roots`.
fn http_client(roots: rustls::RootCertStore) -> Result<HttpClient> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// `e` and its sources, joined by `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// The TLS error somewhere in the sources of `e` (rustls's errors reach hyper
/// wrapped in `io::Error`s, whose `source()` skips what they wrap).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(s) = next {
        let mut inner = s;
        while let Some(i) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            inner = i;
        }
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        next = s.source();
    }
    None
}

/// The error of a failed exchange: [`Error::Tls`] for a TLS failure (with a
/// hint for an untrusted certificate), [`Error::Http`] otherwise.
fn exchange_error(method: &Method, url: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    let what = format!("{method} {url}: {}", error_chain(e));
    match tls_error(e) {
        Some(rustls::Error::InvalidCertificate(_)) => Error::Tls(format!(
            "{what} (the server's certificate does not verify; for a private CA, \
             add its certificate to the client's trusted roots, e.g. with SSL_CERT_FILE)"
        )),
        Some(_) => Error::Tls(what),
        None => Error::Http(what),
    }
}

/// A registry client; cheap to share behind an `Arc`.
pub struct Client {
    http: HttpClient,
    /// The CAs `http` trusts (kept to add more).
    roots: rustls::RootCertStore,
    default_registry: Registry,
    credentials: HashMap<String, Credentials>,
    /// Explicit schemes by `host[:port]`: `true` for https.
    schemes: HashMap<String, bool>,
    platform: Platform,
    /// Bearer tokens by `authority scope`.
    tokens: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("default_registry", &self.default_registry)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// A response whose body is read.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Client {
    /// A client whose bare image names go to the registry at `default_registry`
    /// (`http://host[:port]` or `https://host[:port]`, a path after it is
    /// ignored). Trusts Mozilla's roots and those of `SSL_CERT_FILE`.
    pub fn new(default_registry: &str) -> Result<Self> {
        let (https, authority, _) = split_url(default_registry.trim_end_matches('/'))
            .ok_or_else(|| Error::InvalidReference(default_registry.to_string()))?;
        let roots = default_roots();
        Ok(Self {
            http: http_client(roots.clone())?,
            roots,
            default_registry: Registry {
                https,
                authority: authority.to_string(),
            },
            credentials: HashMap::new(),
            schemes: HashMap::new(),
            platform: Platform::host(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Credentials for the default registry.
    pub fn with_credentials(mut self, username: &str, password: &str) -> Self {
        let authority = self.default_registry.authority.clone();
        self.credentials.insert(
            authority,
            Credentials {
                username: username.to_string(),
                password: password.to_string(),
            },
        );
        self
    }

    /// Credentials for another registry (`host[:port]`).
    pub fn with_registry_credentials(
        mut self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Self {
        self.credentials.insert(
            registry.to_string(),
            Credentials {
                username: username.to_string(),
                password: password.to_string(),
            },
        );
        self
    }

    /// Talk plain http to `registry` (`host[:port]`) although it is not loopback.
    pub fn with_insecure_registry(mut self, registry: &str) -> Self {
        self.schemes.insert(registry.to_string(), false);
        self
    }

    /// Talk https to `registry` (`host[:port]`) although it is loopback.
    pub fn with_secure_registry(mut self, registry: &str) -> Self {
        self.schemes.insert(registry.to_string(), true);
        self
    }

    /// Also trust the CA certificates in `pem` (one or more PEM
    /// `CERTIFICATE` blocks) for every https connection: registries, token
    /// servers and redirect targets. Fails with [`Error::Tls`] when `pem`
    /// holds no certificate or one that is not a usable CA certificate.
    pub fn with_root_certificates(mut self, pem: &[u8]) -> Result<Self> {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::Tls(format!("a PEM certificate: {e}")))?;
            self.roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("a CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::Tls("no PEM certificate given to trust".into()));
        }
        self.http = http_client(self.roots.clone())?;
        Ok(self)
    }

    /// The platform picked from indexes (default: linux on this machine's architecture).
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    fn registry_of(&self, r: &ImageRef) -> Registry {
        match &r.registry {
            None => self.default_registry.clone(),
            Some(a) => Registry {
                https: self.uses_https(a),
                authority: a.clone(),
            },
        }
    }

    /// The scheme of the registry at `authority`: explicit, then the default
    /// registry's, then http for loopback and https for the rest.
    fn uses_https(&self, authority: &str) -> bool {
        if let Some(&https) = self.schemes.get(authority) {
            https
        } else if authority == self.default_registry.authority {
            self.default_registry.https
        } else {
            !is_loopback(authority)
        }
    }

    fn cached_token(&self, key: &str) -> Option<String> {
        self.tokens.lock().ok()?.get(key).cloned()
    }

    fn basic(&self, authority: &str) -> Option<HeaderValue> {
        let c = self.credentials.get(authority)?;
        let raw = format!("{}:{}", c.username, c.password);
        HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
        .ok()
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        auth: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Error::Http(format!("{url}: {e}")))?;
        self.http
            .request(req)
            .await
            .map_err(|e| exchange_error(method, url, &e))
    }

    /// Sends a request to `reg`, going through the auth dance on a 401.
    async fn send(
        &self,
        reg: &Registry,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Bytes,
        scope: &str,
    ) -> Result<Response<Incoming>> {
        // Authorization only goes to the registry itself (same scheme, host
        // and port), never to another host nor over a downgraded scheme.
        let same_host =
            split_url(url).is_some_and(|(https, a, _)| a == reg.authority && https == reg.https);
        let key = format!("{} {scope}", reg.authority);
        let auth = if !same_host {
            None
        } else if let Some(t) = self.cached_token(&key) {
            HeaderValue::from_str(&format!("Bearer {t}")).ok()
        } else {
            self.basic(&reg.authority)
        };
        let resp = self
            .send_once(&method, url, headers, auth.clone(), body.clone())
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED || !same_host {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .find(|c| c.scheme == "bearer" || c.scheme == "basic");
        match challenge {
            Some(c) if c.scheme == "bearer" => {
                let token = self.fetch_token(reg, &c, scope).await?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(key, token.clone());
                }
                let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    Error::Unauthorized("the token server sent an unusable token".into())
                })?;
                let resp = self
                    .send_once(&method, url, headers, Some(auth), body)
                    .await?;
                if resp.status() == StatusCode::UNAUTHORIZED {
                    return Err(Error::Unauthorized(format!(
                        "{} refused the token for {scope}",
                        reg.authority
                    )));
                }
                Ok(resp)
            }
            _ => {
                let why = if self.credentials.contains_key(&reg.authority) {
                    "the credentials were refused"
                } else {
                    "credentials are needed"
                };
                Err(Error::Unauthorized(format!("{}: {why}", reg.authority)))
            }
        }
    }

    async fn fetch_token(&self, reg: &Registry, c: &Challenge, scope: &str) -> Result<String> {
        let realm = c
            .params
            .get("realm")
            .ok_or_else(|| Error::Unauthorized("a Bearer challenge without a realm".into()))?;
        let (https, authority, _) = split_url(realm).ok_or_else(|| {
            Error::Unauthorized(format!("a Bearer realm that is not a URL: {realm}"))
        })?;
        // Basic credentials for an https registry never travel in clear text.
        let auth = self.basic(&reg.authority);
        if auth.is_some() && reg.https && !https && !is_loopback(authority) {
            return Err(Error::Unauthorized(format!(
                "the token server {realm} of the https registry {} is plain http: \
                 refusing to send the credentials there",
                reg.authority
            )));
        }
        let mut url = realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = c.params.get("service") {
            url.push_str(&format!("{sep}service={}", encode(s)));
            sep = '&';
        }
        let scope = c.params.get("scope").map_or(scope, String::as_str);
        url.push_str(&format!("{sep}scope={}", encode(scope)));
        // Basic credentials go to the token server of the registry they are for.
        tracing::debug!(%url, %authority, "fetching a registry token");
        let resp = self
            .send_once(&Method::GET, &url, &[], auth, Bytes::new())
            .await?;
        let a = read_small(resp).await?;
        if !a.status.is_success() {
            return Err(Error::Unauthorized(format!(
                "the token server {realm} answered {}: {}",
                a.status,
                error_message(a.status, &a.body)
            )));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&a.body)
            .map_err(|e| Error::Unauthorized(format!("the token server's answer: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthorized("the token server sent no token".into()))
    }

    /// Fetches a manifest by tag or digest; verifies its digest.
    async fn fetch_manifest(
        &self,
        reg: &Registry,
        repo: &str,
        reference: &str,
        scope: &str,
    ) -> Result<(Bytes, String, Digest)> {
        let url = reg.url(&format!("/v2/{repo}/manifests/{reference}"));
        let accept = HeaderValue::from_static(media_types::MANIFEST_ACCEPT);
        let resp = self
            .send(
                reg,
                Method::GET,
                &url,
                &[(header::ACCEPT, accept)],
                Bytes::new(),
                scope,
            )
            .await?;
        let a = read_small(resp).await?;
        if a.status == StatusCode::NOT_FOUND {
            return Err(Error::ManifestUnknown(format!(
                "{}/{repo}:{reference}",
                reg.authority
            )));
        }
        if !a.status.is_success() {
            return Err(Error::Registry {
                status: a.status.as_u16(),
                message: error_message(a.status, &a.body),
            });
        }
        let actual = Digest::of(&a.body);
        if let Ok(expected) = Digest::parse(reference) {
            if expected != actual {
                return Err(Error::DigestMismatch { expected, actual });
            }
        } else if let Some(h) = a
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if let Ok(expected) = Digest::parse(h) {
                if expected != actual {
                    return Err(Error::DigestMismatch { expected, actual });
                }
            }
        }
        let content_type = a
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (_, media_type) = AnyManifest::parse(&a.body, content_type.as_deref())?;
        Ok((a.body, media_type, actual))
    }

    /// Fetches blob `d` into the store, following redirects; verifies size and digest.
    async fn fetch_blob(
        &self,
        store: &BlobStore,
        reg: &Registry,
        repo: &str,
        d: &crate::spec::Descriptor,
        scope: &str,
    ) -> Result<()> {
        let mut url = reg.url(&format!("/v2/{repo}/blobs/{}", d.digest));
        let mut resp = None;
        for _ in 0..6 {
            let r = self
                .send(reg, Method::GET, &url, &[], Bytes::new(), scope)
                .await?;
            if r.status().is_redirection() {
                let loc = r
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Error::Http(format!("{url}: a redirect without Location")))?;
                url = absolute(&url, loc)?;
                continue;
            }
            resp = Some(r);
            break;
        }
        let resp = resp.ok_or_else(|| Error::Http(format!("{url}: too many redirects")))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::BlobUnknown(d.digest.clone()));
        }
        if !status.is_success() {
            let a = read_small(resp).await?;
            return Err(Error::Registry {
                status: status.as_u16(),
                message: error_message(status, &a.body),
            });
        }
        let mut writer = store.blob_writer()?;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| exchange_error(&Method::GET, &url, &e))?;
            if let Ok(data) = frame.into_data() {
                if writer.len() + data.len() as u64 > d.size {
                    return Err(Error::SizeMismatch {
                        digest: d.digest.clone(),
                        expected: d.size,
                        actual: writer.len() + data.len() as u64,
                    });
                }
                writer.write_all(&data).map_err(|e| Error::Io {
                    context: format!("cannot write blob {}", d.digest),
                    source: e,
                })?;
            }
        }
        if writer.len() != d.size {
            return Err(Error::SizeMismatch {
                digest: d.digest.clone(),
                expected: d.size,
                actual: writer.len(),
            });
        }
        let expected = d.digest.clone();
        tokio::task::spawn_blocking(move || writer.commit(Some(&expected)))
            .await
            .map_err(|e| Error::Http(format!("blob commit task: {e}")))??;
        Ok(())
    }

    /// Pulls `reference` (`name[:tag|@digest]` from the default registry, or
    /// `host[:port]/path[:tag|@digest]`) into `store`, under
    /// [`ImageRef::local_name`] and the tag (or digest). Picks the platform
    /// from an index; verifies every digest; fetches only blobs the store lacks.
    pub async fn pull(
        &self,
        store: &BlobStore,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<Pulled> {
        let r = ImageRef::parse(reference)?;
        let local_name = r.local_name();
        let reference_str = r.reference.to_string();
        let done = |img: crate::store::LocalImage, blobs_fetched: usize| Pulled {
            reference: r.clone(),
            local_name: local_name.clone(),
            digest: img.digest.clone(),
            config: img.config(),
            layers: img.layers(),
            manifest: img.manifest,
            blobs_fetched,
        };
        // A digest names immutable content: if it is here in full, no request at all.
        if let Reference::Digest(d) = &r.reference {
            if let Ok(bytes) = store.read_blob(d) {
                if let Ok(img) = store.image_by_manifest(d.clone(), &bytes, None) {
                    return Ok(done(img, 0));
                }
            }
        }
        if opts.policy == PullPolicy::IfNotPresent {
            if let Ok(img) = store.image(&local_name, &reference_str) {
                return Ok(done(img, 0));
            }
        }
        let reg = self.registry_of(&r);
        let scope = format!("repository:{}:pull", r.repository);
        let platform = opts
            .platform
            .clone()
            .unwrap_or_else(|| self.platform.clone());
        let (mut bytes, mut media_type, mut digest) = self
            .fetch_manifest(&reg, &r.repository, &reference_str, &scope)
            .await?;
        for _ in 0..4 {
            match AnyManifest::parse(&bytes, Some(&media_type))?.0 {
                AnyManifest::Image(_) => break,
                AnyManifest::Index(i) => {
                    let d = i.select(&platform)?.clone();
                    let (b, mt, dg) = self
                        .fetch_manifest(&reg, &r.repository, &d.digest.to_string(), &scope)
                        .await?;
                    if dg != d.digest {
                        return Err(Error::DigestMismatch {
                            expected: d.digest,
                            actual: dg,
                        });
                    }
                    (bytes, media_type, digest) = (b, mt, dg);
                }
            }
        }
        let manifest = match AnyManifest::parse(&bytes, Some(&media_type))?.0 {
            AnyManifest::Image(m) => m,
            AnyManifest::Index(_) => {
                return Err(Error::ManifestInvalid("indexes nested too deep".into()))
            }
        };
        let mut fetched = 0;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if store.has_blob(&d.digest) {
                continue;
            }
            if d.media_type.ends_with("+zstd") {
                return Err(Error::Unsupported(format!("zstd layers ({})", d.digest)));
            }
            self.fetch_blob(store, &reg, &r.repository, d, &scope)
                .await?;
            fetched += 1;
        }
        let tag_or_digest = match &r.reference {
            Reference::Tag(t) => t.clone(),
            Reference::Digest(_) => digest.to_string(),
        };
        // (Stored under a tag, it is recorded by its own digest as well.)
        let stored = store.put_manifest(&local_name, &tag_or_digest, &bytes, &media_type)?;
        let img = store.image_by_manifest(stored, &bytes, Some(&media_type))?;
        Ok(done(img, fetched))
    }

    /// Pushes the image `local_name:local_reference` of `store` to `target`:
    /// blobs the registry lacks (checked with HEAD), then the manifest.
    /// `progress` sees the bytes uploaded. Returns the manifest digest.
    pub async fn push(
        &self,
        store: &BlobStore,
        local_name: &str,
        local_reference: &str,
        target: &ImageRef,
        progress: Progress<'_>,
    ) -> Result<Digest> {
        let m = store.get_manifest(local_name, local_reference)?;
        let manifest = match AnyManifest::parse(&m.bytes, Some(&m.media_type))?.0 {
            AnyManifest::Image(x) => x,
            AnyManifest::Index(_) => {
                return Err(Error::Unsupported("pushing an index".into()));
            }
        };
        let reg = self.registry_of(target);
        let repo = &target.repository;
        let scope = format!("repository:{repo}:pull,push");
        let mut missing = Vec::new();
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if missing
                .iter()
                .any(|x: &&crate::spec::Descriptor| x.digest == d.digest)
            {
                continue;
            }
            let url = reg.url(&format!("/v2/{repo}/blobs/{}", d.digest));
            let resp = self
                .send(&reg, Method::HEAD, &url, &[], Bytes::new(), &scope)
                .await?;
            let status = resp.status();
            drop(resp);
            if status == StatusCode::NOT_FOUND {
                missing.push(d);
            } else if !status.is_success() {
                return Err(Error::Registry {
                    status: status.as_u16(),
                    message: format!("HEAD {url}"),
                });
            }
        }
        let total: u64 = missing.iter().map(|d| d.size).sum();
        let mut done = 0u64;
        progress(0, total);
        for d in missing {
            self.upload_blob(
                store,
                &reg,
                repo,
                &d.digest,
                &scope,
                &mut done,
                total,
                &mut *progress,
            )
            .await?;
        }
        let url = reg.url(&format!("/v2/{repo}/manifests/{}", target.reference));
        let ct = HeaderValue::from_str(&m.media_type)
            .map_err(|_| Error::ManifestInvalid(format!("media type {}", m.media_type)))?;
        let resp = self
            .send(
                &reg,
                Method::PUT,
                &url,
                &[(header::CONTENT_TYPE, ct)],
                Bytes::from(m.bytes.clone()),
                &scope,
            )
            .await?;
        let a = read_small(resp).await?;
        if !a.status.is_success() {
            return Err(Error::Registry {
                status: a.status.as_u16(),
                message: error_message(a.status, &a.body),
            });
        }
        Ok(m.digest)
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_blob(
        &self,
        store: &BlobStore,
        reg: &Registry,
        repo: &str,
        digest: &Digest,
        scope: &str,
        done: &mut u64,
        total: u64,
        progress: Progress<'_>,
    ) -> Result<()> {
        use tokio::io::AsyncReadExt as _;
        let start = reg.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self
            .send(reg, Method::POST, &start, &[], Bytes::new(), scope)
            .await?;
        let a = read_small(resp).await?;
        if a.status != StatusCode::ACCEPTED {
            return Err(Error::Registry {
                status: a.status.as_u16(),
                message: error_message(a.status, &a.body),
            });
        }
        let mut location = location(&start, &a.headers)?;
        let path = store.blob_path(digest);
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| Error::Io {
            context: format!("cannot open {}", path.display()),
            source: e,
        })?;
        let size = store.blob_size(digest)?;
        let mut offset = 0u64;
        loop {
            let want = usize::try_from((size - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf).await.map_err(|e| Error::Io {
                context: format!("cannot read {}", path.display()),
                source: e,
            })?;
            let last = offset + want as u64 == size;
            let octet = HeaderValue::from_static("application/octet-stream");
            if last {
                let sep = if location.contains('?') { '&' } else { '?' };
                let url = format!("{location}{sep}digest={}", encode(&digest.to_string()));
                let resp = self
                    .send(
                        reg,
                        Method::PUT,
                        &url,
                        &[(header::CONTENT_TYPE, octet)],
                        Bytes::from(buf),
                        scope,
                    )
                    .await?;
                let a = read_small(resp).await?;
                if a.status != StatusCode::CREATED {
                    return Err(Error::Registry {
                        status: a.status.as_u16(),
                        message: error_message(a.status, &a.body),
                    });
                }
            } else {
                let range =
                    HeaderValue::from_str(&format!("{offset}-{}", offset + want as u64 - 1))
                        .map_err(|e| Error::Http(e.to_string()))?;
                let resp = self
                    .send(
                        reg,
                        Method::PATCH,
                        &location,
                        &[
                            (header::CONTENT_TYPE, octet),
                            (header::CONTENT_RANGE, range),
                        ],
                        Bytes::from(buf),
                        scope,
                    )
                    .await?;
                let a = read_small(resp).await?;
                if a.status != StatusCode::ACCEPTED {
                    return Err(Error::Registry {
                        status: a.status.as_u16(),
                        message: error_message(a.status, &a.body),
                    });
                }
                location = self::location(&location, &a.headers)?;
            }
            offset += want as u64;
            *done += want as u64;
            progress(*done, total);
            if last {
                return Ok(());
            }
        }
    }

    /// Checks the default registry answers `/v2/` (with the credentials).
    pub async fn ping(&self) -> Result<()> {
        let reg = self.default_registry.clone();
        let url = reg.url("/v2/");
        let resp = self
            .send(
                &reg,
                Method::GET,
                &url,
                &[],
                Bytes::new(),
                "registry:catalog:*",
            )
            .await?;
        let a = read_small(resp).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(Error::Registry {
                status: a.status.as_u16(),
                message: error_message(a.status, &a.body),
            })
        }
    }

    /// Follows `Link: <...>; rel="next"` pages of a listing, collecting `key`.
    async fn list(
        &self,
        reg: &Registry,
        first: &str,
        key: &str,
        scope: &str,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut url = reg.url(first);
        for _ in 0..10_000 {
            let resp = self
                .send(reg, Method::GET, &url, &[], Bytes::new(), scope)
                .await?;
            let a = read_small(resp).await?;
            if a.status == StatusCode::NOT_FOUND && key == "tags" {
                return Ok(out);
            }
            if !a.status.is_success() {
                return Err(Error::Registry {
                    status: a.status.as_u16(),
                    message: error_message(a.status, &a.body),
                });
            }
            let v: serde_json::Value =
                serde_json::from_slice(&a.body).map_err(|e| Error::Http(format!("{url}: {e}")))?;
            if let Some(items) = v.get(key).and_then(|x| x.as_array()) {
                out.extend(items.iter().filter_map(|x| x.as_str().map(str::to_string)));
            }
            let next = a
                .headers
                .get(header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| {
                    let (target, params) = l.split_once(';')?;
                    params.contains("rel=\"next\"").then(|| {
                        target
                            .trim()
                            .trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_string()
                    })
                });
            match next {
                Some(n) => url = absolute(&url, &n)?,
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    /// Every repository of the default registry (`/v2/_catalog`).
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let reg = self.default_registry.clone();
        self.list(
            &reg,
            "/v2/_catalog?n=1000",
            "repositories",
            "registry:catalog:*",
        )
        .await
    }

    /// The tags of `repository` in the default registry (`/v2/<name>/tags/list`).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>> {
        crate::reference::validate_name(repository)?;
        let reg = self.default_registry.clone();
        self.list(
            &reg,
            &format!("/v2/{repository}/tags/list?n=1000"),
            "tags",
            &format!("repository:{repository}:pull"),
        )
        .await
    }
}

async fn read_small(resp: Response<Incoming>) -> Result<Answer> {
    let (parts, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, MAX_SMALL_BODY)
        .collect()
        .await
        .map_err(|e| Error::Http(format!("reading an answer: {e}")))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// The `Location` of an answer, made absolute against `base`.
fn location(base: &str, headers: &HeaderMap) -> Result<String> {
    let loc = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Http(format!("{base}: no Location in the answer")))?;
    absolute(base, loc)
}

/// `loc` (absolute, or a path) resolved against the URL `base`.
fn absolute(base: &str, loc: &str) -> Result<String> {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Ok(loc.to_string());
    }
    let (https, authority, _) =
        split_url(base).ok_or_else(|| Error::Http(format!("not a URL: {base}")))?;
    let scheme = if https { "https" } else { "http" };
    if loc.starts_with('/') {
        Ok(format!("{scheme}://{authority}{loc}"))
    } else {
        Err(Error::Http(format!(
            "a relative Location is not supported: {loc}"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        let c = c.unwrap_or_else(|| panic!("no challenge"));
        assert_eq!(c.scheme, "bearer");
        assert_eq!(
            c.params.get("realm").map(String::as_str),
            Some("http://127.0.0.1:1/token")
        );
        assert_eq!(
            c.params.get("scope").map(String::as_str),
            Some("repository:a/b:pull,push")
        );
        let c = parse_challenge(r#"Basic realm="berth""#).unwrap_or_else(|| panic!("none"));
        assert_eq!(c.scheme, "basic");
    }

    #[test]
    fn urls() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:80"));
        assert!(!is_loopback("example.com:5000"));
        assert_eq!(
            absolute("http://a:1/v2/x", "/v2/y?z=1").ok().as_deref(),
            Some("http://a:1/v2/y?z=1")
        );
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
    }

    #[test]
    fn schemes() {
        let url = |c: &Client, r: &str| c.registry_of(&ImageRef::parse(r).unwrap()).url("/v2/");
        let c = Client::new("http://10.1.2.3:5000")
            .unwrap()
            .with_secure_registry("localhost:5443")
            .with_insecure_registry("reg.lan:5000")
            .with_secure_registry("127.0.0.1:7000")
            .with_insecure_registry("127.0.0.1:7000");
        assert_eq!(url(&c, "app"), "http://10.1.2.3:5000/v2/");
        assert_eq!(url(&c, "10.1.2.3:5000/app"), "http://10.1.2.3:5000/v2/");
        assert_eq!(
            url(&c, "registry-1.docker.io/library/busybox:latest"),
            "https://registry-1.docker.io/v2/"
        );
        assert_eq!(url(&c, "ghcr.io/o/app"), "https://ghcr.io/v2/");
        assert_eq!(url(&c, "localhost:5000/app"), "http://localhost:5000/v2/");
        assert_eq!(url(&c, "localhost:5443/app"), "https://localhost:5443/v2/");
        assert_eq!(url(&c, "reg.lan:5000/app"), "http://reg.lan:5000/v2/");
        assert_eq!(url(&c, "127.0.0.1:7000/app"), "http://127.0.0.1:7000/v2/");
        let c = Client::new("https://registry.example.com").unwrap();
        assert_eq!(url(&c, "app"), "https://registry.example.com/v2/");
        assert!(c.with_root_certificates(b"").is_err());
    }
}
