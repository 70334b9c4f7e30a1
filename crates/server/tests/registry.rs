//! The built-in registry: a busybox image imported, pushed over HTTP with
//! Basic auth, pulled back into another store, unpacked byte-identical; and
//! the distribution spec's statuses, headers and error shapes.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use base64::Engine as _;
use berth_image::client::{Client, PullOptions};
use berth_image::import::{import_rootfs, RootfsOptions};
use berth_image::reference::ImageRef;
use berth_image::unpack::LayerCache;
use berth_image::{BlobStore, Digest, Error};
use berth_server::registry::Access;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt as _;

const ID: &str = "AKIAREGISTRYTEST";
const SECRET: &str = "registry-secret";
/// A key that may pull but not push (a viewer's, or an instance's).
const PULLER: &str = "AKIAREGISTRYPULLER";

fn router(store: Arc<BlobStore>) -> axum::Router {
    berth_server::registry::routes(
        store,
        Arc::new(|id, secret| {
            if id == ID && secret == SECRET {
                Access::PushPull
            } else if id == PULLER && secret == SECRET {
                Access::Pull
            } else {
                Access::None
            }
        }),
    )
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/motd"), "hello\n").unwrap();
    std::fs::set_permissions(dir.join("etc/motd"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Path → (kind and content, mode).
fn tree(dir: &Path) -> BTreeMap<String, (String, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                Digest::of(&std::fs::read(&p).unwrap()).to_string()
            };
            out.insert(rel, (what, m.permissions().mode() & 0o7777));
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_round_trip_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let server_store = Arc::new(BlobStore::open(tmp.path().join("server")).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(server_store.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let build = BlobStore::open(tmp.path().join("build")).unwrap();
    let imported = import_rootfs(
        &build,
        &rootfs,
        &RootfsOptions::default(),
        "library/busybox",
        "latest",
        &mut |_, _| {},
    )
    .unwrap();

    // No credentials: refused.
    let e = Client::new(&base).unwrap().ping().await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");
    let e = Client::new(&base)
        .unwrap()
        .with_credentials(ID, "wrong")
        .ping()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");

    let client = Client::new(&base).unwrap().with_credentials(ID, SECRET);
    client.ping().await.unwrap();
    let target = ImageRef::parse("library/busybox:latest").unwrap();
    let mut last = (0, 0);
    let pushed = client
        .push(&build, "library/busybox", "latest", &target, &mut |d, t| {
            last = (d, t)
        })
        .await
        .unwrap();
    assert_eq!(pushed, imported.digest);
    assert!(last.1 > 500_000, "busybox uploaded: {last:?}");
    assert_eq!(last.0, last.1);
    assert_eq!(
        server_store.resolve("library/busybox", "latest").unwrap(),
        imported.digest
    );
    // A second push uploads nothing.
    let mut total = u64::MAX;
    client
        .push(
            &build,
            "library/busybox",
            "latest",
            &ImageRef::parse("library/busybox:v2").unwrap(),
            &mut |_, t| total = t,
        )
        .await
        .unwrap();
    assert_eq!(total, 0);

    assert_eq!(client.catalog().await.unwrap(), vec!["library/busybox"]);
    assert_eq!(
        client.tags("library/busybox").await.unwrap(),
        vec!["latest", "v2"]
    );

    let local = BlobStore::open(tmp.path().join("agent")).unwrap();
    let pulled = client
        .pull(&local, "library/busybox", &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.digest, imported.digest);
    assert_eq!(pulled.config.cmd, Some(vec!["sh".to_string()]));
    assert_eq!(pulled.blobs_fetched, 2);
    let again = client
        .pull(&local, "library/busybox:v2", &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(again.blobs_fetched, 0, "cached blobs are not pulled again");

    let cache = LayerCache::open(tmp.path().join("layers")).unwrap();
    let dirs = cache.layer_dirs(&local, &pulled.manifest).unwrap();
    assert_eq!(dirs.len(), 1);
    assert_eq!(tree(&dirs[0]), tree(&rootfs));
    assert_eq!(
        std::fs::read(dirs[0].join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["errors"][0]["code"].as_str().unwrap().to_string()
    }
}

async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    let mut authed = false;
    for (k, v) in headers {
        authed |= k.eq_ignore_ascii_case("authorization");
        req = req.header(*k, *v);
    }
    if !authed {
        req = req.header("authorization", basic(ID, SECRET));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn distribution_spec_statuses_headers_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(BlobStore::open(tmp.path().join("s")).unwrap());
    let app = router(store.clone());

    // Base and auth.
    let a = call(&app, Method::GET, "/v2/", &[], vec![]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    for auth in ["", "Basic !!!", &basic(ID, "nope"), "Bearer x"] {
        let a = call(
            &app,
            Method::GET,
            "/v2/",
            &[("authorization", auth)],
            vec![],
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth}");
        assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"berth\""));
        assert_eq!(a.code(), "UNAUTHORIZED");
        let a = call(
            &app,
            Method::GET,
            "/v2/x/tags/list",
            &[("authorization", auth)],
            vec![],
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth}");
    }

    // A pull-only key reads but never writes.
    let puller = basic(PULLER, SECRET);
    let a = call(
        &app,
        Method::GET,
        "/v2/",
        &[("authorization", puller.as_str())],
        vec![],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    for (method, path) in [
        (Method::POST, "/v2/x/blobs/uploads/"),
        (Method::PUT, "/v2/x/manifests/latest"),
        (Method::DELETE, "/v2/x/blobs/uploads/some-id"),
    ] {
        let a = call(
            &app,
            method.clone(),
            path,
            &[("authorization", puller.as_str())],
            vec![],
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(a.code(), "DENIED");
    }

    // Chunked upload: POST, PATCH, PATCH, PUT ?digest.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&data);
    let a = call(
        &app,
        Method::POST,
        "/v2/team/app/blobs/uploads/",
        &[],
        vec![],
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let loc = a.header("location").unwrap().to_string();
    assert!(loc.starts_with("/v2/team/app/blobs/uploads/"), "{loc}");
    assert!(a.header("docker-upload-uuid").is_some());
    let a = call(
        &app,
        Method::PATCH,
        &loc,
        &[("content-range", "0-99999")],
        data[..100_000].to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(a.header("range"), Some("0-99999"));
    // A chunk that does not start at the end: 416.
    let a = call(
        &app,
        Method::PATCH,
        &loc,
        &[("content-range", "5-10")],
        vec![0; 6],
    )
    .await;
    assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(a.code(), "BLOB_UPLOAD_INVALID");
    let a = call(
        &app,
        Method::PATCH,
        &loc,
        &[],
        data[100_000..250_000].to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(a.header("range"), Some("0-249999"));
    let a = call(&app, Method::GET, &loc, &[], vec![]).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.header("range"), Some("0-249999"));
    let a = call(
        &app,
        Method::PUT,
        &format!("{loc}?digest={digest}"),
        &[],
        data[250_000..].to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        a.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(
        a.header("location"),
        Some(format!("/v2/team/app/blobs/{digest}").as_str())
    );
    let a = call(
        &app,
        Method::GET,
        &format!("/v2/team/app/blobs/{digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, data);
    assert_eq!(a.header("content-length"), Some("300000"));
    let a = call(
        &app,
        Method::HEAD,
        &format!("/v2/team/app/blobs/{digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-length"), Some("300000"));
    assert!(a.body.is_empty());
    // The session is gone.
    let a = call(&app, Method::GET, &loc, &[], vec![]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "BLOB_UPLOAD_UNKNOWN");

    // Monolithic POST ?digest=, right and wrong.
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let cd = Digest::of(&config);
    let wrong = Digest::of(b"other");
    let a = call(
        &app,
        Method::POST,
        &format!("/v2/team/app/blobs/uploads/?digest={wrong}"),
        &[],
        config.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "DIGEST_INVALID");
    assert!(!store.has_blob(&wrong) && !store.has_blob(&cd));
    let a = call(
        &app,
        Method::POST,
        &format!(
            "/v2/team/app/blobs/uploads/?digest={}",
            cd.to_string().replace(':', "%3A")
        ),
        &[],
        config.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(store.has_blob(&cd));

    // Manifests.
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let manifest = |layer: &Digest, size: usize| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": size}]
        })
        .to_string()
        .into_bytes()
    };
    let missing = manifest(&Digest::of(b"missing"), 7);
    let a = call(
        &app,
        Method::PUT,
        "/v2/team/app/manifests/v1",
        &[("content-type", mt)],
        missing,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "MANIFEST_BLOB_UNKNOWN");
    let a = call(
        &app,
        Method::PUT,
        "/v2/team/app/manifests/v1",
        &[("content-type", mt)],
        b"{nope".to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "MANIFEST_INVALID");
    let good = manifest(&digest, data.len());
    let md = Digest::of(&good);
    let a = call(
        &app,
        Method::PUT,
        "/v2/team/app/manifests/v1",
        &[("content-type", mt)],
        good.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        a.header("docker-content-digest"),
        Some(md.to_string().as_str())
    );
    for reference in ["v1".to_string(), md.to_string()] {
        let a = call(
            &app,
            Method::GET,
            &format!("/v2/team/app/manifests/{reference}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("content-type"), Some(mt));
        assert_eq!(
            a.header("docker-content-digest"),
            Some(md.to_string().as_str())
        );
        assert_eq!(a.body, good);
        let a = call(
            &app,
            Method::HEAD,
            &format!("/v2/team/app/manifests/{reference}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            a.header("content-length"),
            Some(good.len().to_string().as_str())
        );
        assert!(a.body.is_empty());
    }
    let a = call(&app, Method::GET, "/v2/team/app/manifests/v9", &[], vec![]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "MANIFEST_UNKNOWN");
    assert_eq!(a.header("content-type"), Some("application/json"));
    let a = call(
        &app,
        Method::GET,
        &format!("/v2/other/manifests/{md}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "a digest is per repository"
    );
    let a = call(
        &app,
        Method::GET,
        &format!("/v2/team/app/blobs/{wrong}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "BLOB_UNKNOWN");
    let a = call(&app, Method::GET, "/v2/Team/manifests/v1", &[], vec![]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "NAME_INVALID");
    let a = call(
        &app,
        Method::GET,
        "/v2/team/app/manifests/..bad",
        &[],
        vec![],
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = call(
        &app,
        Method::DELETE,
        "/v2/team/app/manifests/v1",
        &[],
        vec![],
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.code(), "UNSUPPORTED");

    // Listings, with pagination.
    for (name, tag) in [
        ("team/app", "v2"),
        ("team/app", "a0"),
        ("zeta", "latest"),
        ("alpha", "1"),
    ] {
        let a = call(
            &app,
            Method::PUT,
            &format!("/v2/{name}/manifests/{tag}"),
            &[("content-type", mt)],
            good.clone(),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    let a = call(&app, Method::GET, "/v2/team/app/tags/list", &[], vec![]).await;
    assert_eq!(a.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"name": "team/app", "tags": ["a0", "v1", "v2"]})
    );
    let a = call(&app, Method::GET, "/v2/nothing/tags/list", &[], vec![]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "NAME_UNKNOWN");
    let a = call(&app, Method::GET, "/v2/_catalog", &[], vec![]).await;
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["alpha", "team/app", "zeta"])
    );
    let a = call(&app, Method::GET, "/v2/_catalog?n=2", &[], vec![]).await;
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["alpha", "team/app"]));
    let link = a.header("link").unwrap().to_string();
    assert!(link.contains("rel=\"next\""), "{link}");
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let a = call(&app, Method::GET, &next, &[], vec![]).await;
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["zeta"]));
    assert!(a.header("link").is_none());
}
