//! The registry client against a small fake registry served here with axum:
//! anonymous and Bearer-token pulls, index platform selection, digest
//! verification, and no second fetch of cached blobs (requests counted).

#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use base64::Engine as _;
use berth_image::client::{Client, PullOptions, PullPolicy};
use berth_image::import::{import_rootfs, RootfsOptions};
use berth_image::spec::{media_types, Platform};
use berth_image::unpack::LayerCache;
use berth_image::{BlobStore, Digest, Error};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Fake {
    /// Require `Authorization: Bearer <TOKEN>` (Docker token flow).
    bearer: bool,
    /// Serve this blob with a flipped byte.
    corrupt: Mutex<Option<Digest>>,
    log: Mutex<Vec<String>>,
    addr: Mutex<String>,
}

const TOKEN: &str = "tok-123";

struct App {
    fake: Arc<Fake>,
    store: BlobStore,
}

async fn token(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> Response {
    app.fake
        .log
        .lock()
        .unwrap()
        .push(format!("TOKEN {}", req.uri().query().unwrap_or("")));
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:pass")
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    axum::Json(serde_json::json!({ "token": TOKEN })).into_response()
}

async fn v2(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().trim_start_matches("/v2/").to_string();
    if app.fake.bearer {
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if !ok {
            app.fake.log.lock().unwrap().push(format!("401 {path}"));
            let realm = format!("http://{}/token", app.fake.addr.lock().unwrap());
            let name = path
                .split("/manifests/")
                .next()
                .unwrap_or("")
                .split("/blobs/")
                .next()
                .unwrap_or("");
            let challenge = format!(
                "Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:{name}:pull\""
            );
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "",
            )
                .into_response();
        }
    }
    app.fake.log.lock().unwrap().push(format!("GET {path}"));
    if let Some((name, reference)) = path.rsplit_once("/manifests/") {
        return match app.store.get_manifest(name, reference) {
            Ok(m) => (
                [
                    ("content-type", m.media_type.clone()),
                    ("docker-content-digest", m.digest.to_string()),
                ],
                m.bytes,
            )
                .into_response(),
            Err(_) => (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}"#,
            )
                .into_response(),
        };
    }
    if let Some((_, digest)) = path.rsplit_once("/blobs/") {
        let d = Digest::parse(digest).unwrap();
        return match app.store.read_blob(&d) {
            Ok(mut b) => {
                if app.fake.corrupt.lock().unwrap().as_ref() == Some(&d) {
                    b[0] ^= 0xff;
                }
                b.into_response()
            }
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        };
    }
    StatusCode::NOT_FOUND.into_response()
}

/// Serves `store` on a loopback port; returns the base URL.
async fn serve(store: BlobStore, fake: Arc<Fake>) -> String {
    let app = Arc::new(App {
        fake: fake.clone(),
        store,
    });
    let router = Router::new()
        .route("/token", get(token))
        .route("/v2/{*path}", any(v2))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    *fake.addr.lock().unwrap() = addr.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn count(fake: &Fake, prefix: &str) -> usize {
    fake.log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

struct Source {
    _tmp: tempfile::TempDir,
    rootfs: std::path::PathBuf,
    store: BlobStore,
}

fn source() -> Source {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    common::busybox_rootfs(&rootfs);
    let store = BlobStore::open(tmp.path().join("registry")).unwrap();
    import_rootfs(
        &store,
        &rootfs,
        &RootfsOptions::default(),
        "library/busybox",
        "latest",
        &mut |_, _| {},
    )
    .unwrap();
    Source {
        _tmp: tmp,
        rootfs,
        store,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_verify_and_never_refetch_cached_blobs() {
    let src = source();
    let fake = Arc::new(Fake::default());
    let base = serve(src.store.clone(), fake.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let local = BlobStore::open(tmp.path().join("local")).unwrap();
    let client = Client::new(&base).unwrap();

    let pulled = client
        .pull(&local, "library/busybox", &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.blobs_fetched, 2, "config and one layer");
    assert_eq!(pulled.local_name, "library/busybox");
    assert_eq!(pulled.config.cmd, Some(vec!["sh".to_string()]));
    assert_eq!(count(&fake, "GET library/busybox/manifests/"), 1);
    assert_eq!(count(&fake, "GET library/busybox/blobs/"), 2);
    let source_img = src.store.image("library/busybox", "latest").unwrap();
    assert_eq!(pulled.digest, source_img.digest);

    // The layer unpacks to exactly the original tree.
    let cache = LayerCache::open(tmp.path().join("layers")).unwrap();
    let dirs = cache.layer_dirs(&local, &pulled.manifest).unwrap();
    assert_eq!(common::snapshot(&dirs[0]), common::snapshot(&src.rootfs));

    // Again by tag: the manifest is checked, no blob is fetched.
    let again = client
        .pull(&local, "library/busybox:latest", &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(again.blobs_fetched, 0);
    assert_eq!(again.digest, pulled.digest);
    assert_eq!(count(&fake, "GET library/busybox/manifests/"), 2);
    assert_eq!(count(&fake, "GET library/busybox/blobs/"), 2);

    // By digest, or with IfNotPresent: no request at all.
    let before = fake.log.lock().unwrap().len();
    let by_digest = client
        .pull(
            &local,
            &format!("library/busybox@{}", pulled.digest),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(by_digest.layers, pulled.layers);
    let cached = client
        .pull(
            &local,
            "library/busybox",
            &PullOptions {
                policy: PullPolicy::IfNotPresent,
                platform: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(cached.digest, pulled.digest);
    assert_eq!(fake.log.lock().unwrap().len(), before);

    // A full reference to the same (loopback) registry: stored under host/name.
    let host = base.trim_start_matches("http://");
    let full = client
        .pull(
            &local,
            &format!("{host}/library/busybox:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(full.local_name, format!("{host}/library/busybox"));
    assert_eq!(full.blobs_fetched, 0, "blobs are shared by all names");
    assert_eq!(local.tags(&full.local_name).unwrap(), vec!["latest"]);

    // Unknown things.
    let e = client
        .pull(&local, "library/nothing:latest", &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ManifestUnknown(_)), "{e}");
    // https forced for this plain-http registry: the handshake fails, as TLS.
    let e = Client::new(&base)
        .unwrap()
        .with_secure_registry(host)
        .pull(
            &local,
            &format!("{host}/library/busybox:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e}");
    assert!(
        e.to_string().contains(&format!("https://{host}/v2/")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blobs_are_refused_and_not_stored() {
    let src = source();
    let img = src.store.image("library/busybox", "latest").unwrap();
    let fake = Arc::new(Fake::default());
    *fake.corrupt.lock().unwrap() = Some(img.manifest.layers[0].digest.clone());
    let base = serve(src.store.clone(), fake.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let local = BlobStore::open(tmp.path().join("local")).unwrap();
    let e = Client::new(&base)
        .unwrap()
        .pull(&local, "library/busybox", &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(!local.has_blob(&img.manifest.layers[0].digest));
    assert!(local.repositories().unwrap().is_empty(), "nothing tagged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow() {
    let src = source();
    let fake = Arc::new(Fake {
        bearer: true,
        ..Fake::default()
    });
    let base = serve(src.store.clone(), fake.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let local = BlobStore::open(tmp.path().join("local")).unwrap();

    // Without credentials the token server says no.
    let e = Client::new(&base)
        .unwrap()
        .pull(&local, "library/busybox", &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");

    let client = Client::new(&base).unwrap().with_credentials("user", "pass");
    let pulled = client
        .pull(&local, "library/busybox", &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.blobs_fetched, 2);
    // One challenge, one token, then the cached token for the rest.
    assert_eq!(count(&fake, "TOKEN"), 2);
    let log = fake.log.lock().unwrap().clone();
    let last_token = log.iter().rposition(|l| l.starts_with("TOKEN")).unwrap();
    assert!(log[last_token].contains("service=fake"));
    assert!(log[last_token].contains("scope=repository%3Alibrary%2Fbusybox%3Apull"));
    assert_eq!(
        log[last_token..]
            .iter()
            .filter(|l| l.starts_with("401"))
            .count(),
        0,
        "{log:?}"
    );
    assert_eq!(count(&fake, "GET library/busybox/blobs/"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_pick_the_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = BlobStore::open(tmp.path().join("registry")).unwrap();
    let mut entries = Vec::new();
    for arch in ["arm64", "amd64"] {
        let dir = tmp.path().join(arch);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("arch"), arch).unwrap();
        let opts = RootfsOptions {
            platform: Platform::parse(&format!("linux/{arch}")).unwrap(),
            ..RootfsOptions::default()
        };
        let imp = import_rootfs(&registry, &dir, &opts, "multi", arch, &mut |_, _| {}).unwrap();
        let size = registry.blob_size(&imp.digest).unwrap();
        entries.push(serde_json::json!({
            "mediaType": media_types::DOCKER_MANIFEST,
            "digest": imp.digest.to_string(),
            "size": size,
            "platform": {"os": "linux", "architecture": arch}
        }));
    }
    // A Docker manifest list (its entries' media types are only labels here).
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::DOCKER_MANIFEST_LIST,
        "manifests": entries
    })
    .to_string();
    registry
        .put_manifest(
            "multi",
            "latest",
            list.as_bytes(),
            media_types::DOCKER_MANIFEST_LIST,
        )
        .unwrap();
    let fake = Arc::new(Fake::default());
    let base = serve(registry.clone(), fake.clone()).await;
    for arch in ["amd64", "arm64"] {
        let local = BlobStore::open(tmp.path().join(format!("local-{arch}"))).unwrap();
        let client = Client::new(&base)
            .unwrap()
            .with_platform(Platform::parse(&format!("linux/{arch}")).unwrap());
        let pulled = client
            .pull(&local, "multi:latest", &PullOptions::default())
            .await
            .unwrap();
        assert_eq!(pulled.digest, registry.resolve("multi", arch).unwrap());
        let img = local.image("multi", "latest").unwrap();
        assert_eq!(img.config_file.architecture, arch);
        let root = tmp.path().join(format!("root-{arch}"));
        berth_image::unpack::flatten(&local, &img.manifest, &root).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("arch")).unwrap(), arch);
    }
    let e = Client::new(&base)
        .unwrap()
        .pull(
            &BlobStore::open(tmp.path().join("x")).unwrap(),
            "multi",
            &PullOptions {
                policy: PullPolicy::Always,
                platform: Some(Platform::parse("linux/s390x").unwrap()),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PlatformNotFound(_)), "{e}");
}
