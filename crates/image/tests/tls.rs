//! The registry client over TLS, against registries served here on
//! 127.0.0.1 with a CA and a `localhost` certificate made at test time:
//! pulls with the CA trusted (given to the client, or through
//! `SSL_CERT_FILE`), refusal without it, the Bearer-token flow with the token
//! server on https, and blob redirects from https to http and back.

#![allow(clippy::unwrap_used)]

use berth_image::client::{Client, PullOptions};
use berth_image::import::{import_rootfs, RootfsOptions};
use berth_image::{BlobStore, Digest, Error};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "tls-token-42";
const REPO: &str = "team/app";
const TAG: &str = "v1";

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "berth test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

/// A minimal registry: manifests and blobs of `store` by GET, a token
/// endpoint, and `/cdn/<digest>` for redirected blob downloads.
struct Registry {
    store: BlobStore,
    /// Require `Authorization: Bearer TOKEN` on `/v2/` (token from `/token`
    /// with Basic `user:pass`).
    bearer: bool,
    /// Answer blob GETs with a redirect to `<this>/cdn/<digest>`.
    redirect_blobs: Option<String>,
    /// `scheme://localhost:port`, set once listening.
    base: Mutex<String>,
    /// `METHOD path auth=<scheme or none>` per request, `HANDSHAKE <error>`
    /// per refused TLS handshake.
    log: Mutex<Vec<String>>,
}

impl Registry {
    fn new(store: &BlobStore) -> Self {
        Self {
            store: store.clone(),
            bearer: false,
            redirect_blobs: None,
            base: Mutex::default(),
            log: Mutex::default(),
        }
    }

    fn base(&self) -> String {
        self.base.lock().unwrap().clone()
    }

    /// `localhost:port`.
    fn host(&self) -> String {
        self.base().split("://").nth(1).unwrap().to_string()
    }

    fn count(&self, prefix: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let scheme = auth.split(' ').next().filter(|s| !s.is_empty());
        self.log.lock().unwrap().push(format!(
            "{} {path} auth={}",
            req.method(),
            scheme.unwrap_or("none")
        ));
        let reply = |status: StatusCode, body: Vec<u8>| {
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        if path == "/token" {
            let want = format!(
                "Basic {}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "user:pass")
            );
            if auth != want {
                return reply(StatusCode::UNAUTHORIZED, b"bad credentials".to_vec());
            }
            let body = serde_json::json!({ "token": TOKEN }).to_string();
            return reply(StatusCode::OK, body.into_bytes());
        }
        if let Some(digest) = path.strip_prefix("/cdn/") {
            return match self.store.read_blob(&Digest::parse(digest).unwrap()) {
                Ok(b) => reply(StatusCode::OK, b),
                Err(_) => reply(StatusCode::NOT_FOUND, Vec::new()),
            };
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return reply(StatusCode::NOT_FOUND, Vec::new());
        };
        if self.bearer && auth != format!("Bearer {TOKEN}") {
            let challenge = format!(
                "Bearer realm=\"{}/token\",service=\"tls-fake\",scope=\"repository:{REPO}:pull\"",
                self.base()
            );
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", challenge)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        if rest.is_empty() {
            return reply(StatusCode::OK, b"{}".to_vec());
        }
        if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            return match self.store.get_manifest(name, reference) {
                Ok(m) => Response::builder()
                    .header("content-type", m.media_type.clone())
                    .header("docker-content-digest", m.digest.to_string())
                    .body(Full::new(Bytes::from(m.bytes)))
                    .unwrap(),
                Err(_) => reply(StatusCode::NOT_FOUND, Vec::new()),
            };
        }
        if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
            if let Some(cdn) = &self.redirect_blobs {
                return Response::builder()
                    .status(StatusCode::TEMPORARY_REDIRECT)
                    .header("location", format!("{cdn}/cdn/{digest}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            return match self.store.read_blob(&Digest::parse(digest).unwrap()) {
                Ok(b) => reply(StatusCode::OK, b),
                Err(_) => reply(StatusCode::NOT_FOUND, Vec::new()),
            };
        }
        reply(StatusCode::NOT_FOUND, Vec::new())
    }
}

/// Serves `reg` on 127.0.0.1 (over TLS with `tls`), as `localhost:port`.
async fn serve(reg: Registry, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<Registry> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let scheme = if tls.is_some() { "https" } else { "http" };
    *reg.base.lock().unwrap() = format!("{scheme}://localhost:{port}");
    let reg = Arc::new(reg);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let served = reg.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let reg = served.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc_reg = reg.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let reg = svc_reg.clone();
                    async move { Ok::<_, std::convert::Infallible>(reg.answer(&req)) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Err(e) => reg.log.lock().unwrap().push(format!("HANDSHAKE {e}")),
                    },
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    reg
}

/// A store holding `team/app:v1`: one layer of a few files (one of 300 kB).
fn source(dir: &std::path::Path) -> BlobStore {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), "over tls\n").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(rootfs.join("big"), big).unwrap();
    let store = BlobStore::open(dir.join("source")).unwrap();
    import_rootfs(
        &store,
        &rootfs,
        &RootfsOptions::default(),
        REPO,
        TAG,
        &mut |_, _| {},
    )
    .unwrap();
    store
}

/// A client whose default registry (never contacted) is a closed loopback port.
fn client() -> Client {
    Client::new("http://127.0.0.1:9").unwrap()
}

/// The pull's manifest, config and layers are byte for byte the source's.
fn assert_same_blobs(src: &BlobStore, local: &BlobStore, digest: &Digest) {
    let img = src.image(REPO, TAG).unwrap();
    assert_eq!(&img.digest, digest);
    assert_eq!(
        local.read_blob(digest).unwrap(),
        src.read_blob(digest).unwrap()
    );
    for d in std::iter::once(&img.manifest.config).chain(&img.manifest.layers) {
        assert_eq!(
            local.read_blob(&d.digest).unwrap(),
            src.read_blob(&d.digest).unwrap(),
            "{}",
            d.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_pull_needs_a_trusted_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let pki = pki();
    let reg = serve(Registry::new(&src), Some(pki.server.clone())).await;
    let host = reg.host();
    let reference = format!("{host}/{REPO}:{TAG}");

    // Not trusted: a certificate error, nothing stored.
    let local = BlobStore::open(tmp.path().join("untrusted")).unwrap();
    let e = client()
        .with_secure_registry(&host)
        .pull(&local, &reference, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("certificate"), "{msg}");
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(msg.contains(&format!("https://{host}/v2/")), "{msg}");
    assert!(local.repositories().unwrap().is_empty());
    assert_eq!(reg.count("GET"), 0, "no request got through");
    // (The server sees the refused handshake a moment after the client.)
    for _ in 0..100 {
        if reg.count("HANDSHAKE") > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        reg.count("HANDSHAKE") >= 1,
        "the client gave up in the handshake"
    );

    // Loopback without with_secure_registry is http: a TLS server refuses it.
    let e = client()
        .with_root_certificates(pki.ca_pem.as_bytes())
        .unwrap()
        .pull(&local, &reference, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Http(_)), "{e}");

    // Trusted: the pull works and yields the very same bytes.
    let trusted = client()
        .with_secure_registry(&host)
        .with_root_certificates(pki.ca_pem.as_bytes())
        .unwrap();
    let local = BlobStore::open(tmp.path().join("trusted")).unwrap();
    let pulled = trusted
        .pull(&local, &reference, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.blobs_fetched, 2, "config and one layer");
    assert_eq!(pulled.local_name, format!("{host}/{REPO}"));
    assert_same_blobs(&src, &local, &pulled.digest);
    assert_eq!(reg.count(&format!("GET /v2/{REPO}/manifests/{TAG}")), 1);
    assert_eq!(reg.count(&format!("GET /v2/{REPO}/blobs/")), 2);

    // The same registry as the default one, by its https URL: bare names work.
    let by_default = Client::new(&reg.base())
        .unwrap()
        .with_root_certificates(pki.ca_pem.as_bytes())
        .unwrap();
    by_default.ping().await.unwrap();
    let local = BlobStore::open(tmp.path().join("default")).unwrap();
    let pulled = by_default
        .pull(&local, &format!("{REPO}:{TAG}"), &PullOptions::default())
        .await
        .unwrap();
    assert_same_blobs(&src, &local, &pulled.digest);

    // Roots that are not PEM certificates are refused up front.
    let e = client().with_root_certificates(b"not a pem").unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let pki = pki();
    let reg = serve(
        Registry {
            bearer: true,
            ..Registry::new(&src)
        },
        Some(pki.server.clone()),
    )
    .await;
    let host = reg.host();
    let reference = format!("{host}/{REPO}:{TAG}");
    let trusted = || {
        client()
            .with_secure_registry(&host)
            .with_root_certificates(pki.ca_pem.as_bytes())
            .unwrap()
    };

    // Anonymous: the https token server refuses.
    let local = BlobStore::open(tmp.path().join("local")).unwrap();
    let e = trusted()
        .pull(&local, &reference, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");
    assert!(e.to_string().contains("https://localhost"), "{e}");

    let pulled = trusted()
        .with_registry_credentials(&host, "user", "pass")
        .pull(&local, &reference, &PullOptions::default())
        .await
        .unwrap();
    assert_same_blobs(&src, &local, &pulled.digest);
    // One challenge, one token (Basic over TLS), then the token for the rest.
    let log = reg.log.lock().unwrap().clone();
    let first = log
        .iter()
        .rposition(|l| l.starts_with("GET /token"))
        .unwrap();
    assert_eq!(log[first], "GET /token auth=Basic", "{log:?}");
    let after = &log[first + 1..];
    assert_eq!(after.len(), 3, "{log:?}");
    assert!(after.iter().all(|l| l.ends_with("auth=Bearer")), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirects_cross_schemes_without_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let pki = pki();
    let https_cdn = serve(Registry::new(&src), Some(pki.server.clone())).await;
    let http_cdn = serve(Registry::new(&src), None).await;

    // An https registry (with tokens) sending blobs to a plain-http CDN.
    let reg = serve(
        Registry {
            bearer: true,
            redirect_blobs: Some(http_cdn.base()),
            ..Registry::new(&src)
        },
        Some(pki.server.clone()),
    )
    .await;
    let host = reg.host();
    let local = BlobStore::open(tmp.path().join("a")).unwrap();
    let pulled = client()
        .with_secure_registry(&host)
        .with_root_certificates(pki.ca_pem.as_bytes())
        .unwrap()
        .with_registry_credentials(&host, "user", "pass")
        .pull(
            &local,
            &format!("{host}/{REPO}:{TAG}"),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_same_blobs(&src, &local, &pulled.digest);
    assert_eq!(reg.count(&format!("GET /v2/{REPO}/blobs/")), 2);
    assert_eq!(http_cdn.count("GET /cdn/sha256:"), 2);
    let log = http_cdn.log.lock().unwrap().clone();
    assert!(log.iter().all(|l| l.ends_with("auth=none")), "{log:?}");

    // A plain-http (loopback) registry sending blobs to an https CDN.
    let reg = serve(
        Registry {
            redirect_blobs: Some(https_cdn.base()),
            ..Registry::new(&src)
        },
        None,
    )
    .await;
    let host = reg.host();
    let local = BlobStore::open(tmp.path().join("b")).unwrap();
    let reference = format!("{host}/{REPO}:{TAG}");
    let pulled = client()
        .with_root_certificates(pki.ca_pem.as_bytes())
        .unwrap()
        .with_registry_credentials(&host, "user", "pass")
        .pull(&local, &reference, &PullOptions::default())
        .await
        .unwrap();
    assert_same_blobs(&src, &local, &pulled.digest);
    assert_eq!(https_cdn.count("GET /cdn/sha256:"), 2);
    let log = https_cdn.log.lock().unwrap().clone();
    assert!(log.iter().all(|l| l.ends_with("auth=none")), "{log:?}");
    // The registry itself got the Basic credentials.
    assert_eq!(
        reg.count(&format!("GET /v2/{REPO}/manifests/{TAG} auth=Basic")),
        1
    );

    // The CDN's certificate is checked like any other.
    let e = client()
        .pull(
            &BlobStore::open(tmp.path().join("c")).unwrap(),
            &reference,
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e}");
    assert!(e.to_string().contains("/cdn/sha256:"), "{e}");
}

/// The env var checked by [`ssl_cert_file_child`]: the registry to pull from.
const CHILD_REGISTRY: &str = "BERTH_TLS_TEST_REGISTRY";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_cert_file_is_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let pki = pki();
    let reg = serve(Registry::new(&src), Some(pki.server.clone())).await;
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    // Environment changes stay out of this (threaded) process: a child runs
    // the pull, with SSL_CERT_FILE set from its start.
    let host = reg.host();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ssl_cert_file_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env("SSL_CERT_FILE", &ca_file)
            .env(CHILD_REGISTRY, &host)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    assert_eq!(reg.count(&format!("GET /v2/{REPO}/blobs/")), 2, "{text}");
}

/// Run by [`ssl_cert_file_is_trusted`] (does nothing when run alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in a child process of ssl_cert_file_is_trusted"]
async fn ssl_cert_file_child() {
    let Ok(host) = std::env::var(CHILD_REGISTRY) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let local = BlobStore::open(tmp.path().join("local")).unwrap();
    let pulled = client()
        .with_secure_registry(&host)
        .pull(
            &local,
            &format!("{host}/{REPO}:{TAG}"),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(pulled.blobs_fetched, 2);
}
