//! `docker save` archives (legacy and OCI flavour) and OCI image layouts,
//! built here with the tar crate, imported with their config.

#![allow(clippy::unwrap_used)]

mod common;

use berth_image::import::import_archive;
use berth_image::spec::media_types;
use berth_image::unpack::flatten;
use berth_image::{BlobStore, Error};
use common::{add_file, gzip, sha256_hex, tar_of};
use serde_json::json;
use std::path::Path;

fn config_json(diff_ids: &[String], arch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/hello"],
            "Cmd": ["--flag"],
            "Env": ["A=1", "PATH=/bin"],
            "WorkingDir": "/work",
            "User": "1000:1000",
            "Labels": {"x": "y"}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()},
        "history": [{"created_by": "test"}]
    }))
    .unwrap()
}

fn layers() -> (Vec<u8>, Vec<u8>) {
    let l1 = tar_of(&[("bin", None), ("bin/hello", Some(b"hello"))]);
    let l2 = tar_of(&[("etc", None), ("etc/conf", Some(b"conf"))]);
    (l1, l2)
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

fn check_config(c: &berth_image::spec::ImageConfig) {
    assert_eq!(c.entrypoint, Some(vec!["/bin/hello".to_string()]));
    assert_eq!(c.cmd, Some(vec!["--flag".to_string()]));
    assert_eq!(c.env, vec!["A=1".to_string(), "PATH=/bin".to_string()]);
    assert_eq!(c.working_dir.as_deref(), Some("/work"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
}

/// The legacy layout: `<id>/layer.tar`, `<hex>.json`, a symlinked duplicate layer.
fn legacy_docker_save(diff_ok: bool) -> Vec<u8> {
    let (l1, l2) = layers();
    let mut ids = vec![sha256_hex(&l1), sha256_hex(&l2), sha256_hex(&l1)];
    if !diff_ok {
        ids[1] = sha256_hex(b"wrong");
    }
    let config = config_json(&ids, "amd64");
    let config_name = format!("{}.json", sha256_hex(&config));
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": ["app:v1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"]
    }]);
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, "aaa/layer.tar", &l1);
    add_file(&mut b, "bbb/layer.tar", &l2);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "ccc/layer.tar", "../aaa/layer.tar")
        .unwrap();
    add_file(&mut b, &config_name, &config);
    add_file(&mut b, "repositories", br#"{"app":{"v1":"x"}}"#);
    add_file(&mut b, "manifest.json", manifest.to_string().as_bytes());
    b.into_inner().unwrap()
}

#[test]
fn legacy_docker_save_imports_with_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let archive = tmp.path().join("save.tar");
    write(&archive, &legacy_docker_save(true));
    let mut last = (0, 0);
    let imp = import_archive(&store, &archive, "app", "v1", &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(last.0, last.1);
    check_config(&imp.config);
    assert_eq!(imp.layers.len(), 3);
    assert_eq!(imp.layers[0], imp.layers[2], "the same layer twice");
    for l in &imp.manifest.layers {
        assert_eq!(l.media_type, media_types::OCI_LAYER_GZIP);
    }
    let img = store.image("app", "v1").unwrap();
    assert_eq!(img.config_file.config.as_ref(), Some(&imp.config));
    // The config is kept byte for byte (its digest is the docker image id).
    let (l1, l2) = layers();
    let cfg = store.read_blob(&img.manifest.config.digest).unwrap();
    assert_eq!(
        cfg,
        config_json(
            &[sha256_hex(&l1), sha256_hex(&l2), sha256_hex(&l1)],
            "amd64"
        )
    );
    let root = tmp.path().join("root");
    flatten(&store, &img.manifest, &root).unwrap();
    assert_eq!(std::fs::read(root.join("bin/hello")).unwrap(), b"hello");
    assert_eq!(std::fs::read(root.join("etc/conf")).unwrap(), b"conf");

    // `docker save | gzip` works the same.
    let gz = tmp.path().join("save.tar.gz");
    write(&gz, &gzip(&legacy_docker_save(true)));
    let again = import_archive(&store, &gz, "app", "v2", &mut |_, _| {}).unwrap();
    assert_eq!(again.digest, imp.digest);
}

#[test]
fn docker_save_with_a_wrong_diff_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let archive = tmp.path().join("save.tar");
    write(&archive, &legacy_docker_save(false));
    let e = import_archive(&store, &archive, "app", "v1", &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(store.tags("app").unwrap().is_empty());
}

/// Docker 25+: an OCI layout plus `manifest.json`, uncompressed layers in blobs/.
#[test]
fn oci_flavoured_docker_save_imports() {
    let (l1, l2) = layers();
    // One layer is gzipped already (containerd image store).
    let l2gz = gzip(&l2);
    let config = config_json(&[sha256_hex(&l1), sha256_hex(&l2)], "amd64");
    let blob = |d: &[u8]| format!("blobs/sha256/{}", sha256_hex(d));
    let oci_manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::OCI_CONFIG, "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [
            {"mediaType": media_types::OCI_LAYER_TAR, "digest": format!("sha256:{}", sha256_hex(&l1)), "size": l1.len()},
            {"mediaType": media_types::OCI_LAYER_GZIP, "digest": format!("sha256:{}", sha256_hex(&l2gz)), "size": l2gz.len()}
        ]
    })
    .to_string()
    .into_bytes();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_types::OCI_MANIFEST, "digest": format!("sha256:{}", sha256_hex(&oci_manifest)), "size": oci_manifest.len()}]
    });
    let manifest = json!([{"Config": blob(&config), "RepoTags": ["app:v1"], "Layers": [blob(&l1), blob(&l2gz)]}]);
    let mut b2 = tar::Builder::new(Vec::new());
    for (p, d) in [
        (blob(&l1), l1.clone()),
        (blob(&l2gz), l2gz.clone()),
        (blob(&config), config.clone()),
        (blob(&oci_manifest), oci_manifest.clone()),
    ] {
        add_file(&mut b2, &p, &d);
    }
    add_file(&mut b2, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add_file(&mut b2, "index.json", index.to_string().as_bytes());
    add_file(&mut b2, "manifest.json", manifest.to_string().as_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("save.tar");
    write(&archive, &b2.into_inner().unwrap());
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let imp = import_archive(&store, &archive, "library/app", "v1", &mut |_, _| {}).unwrap();
    check_config(&imp.config);
    // The already-gzipped layer is kept as is; the plain one is gzipped.
    assert_eq!(imp.layers[1].hex(), sha256_hex(&l2gz));
    assert_ne!(imp.layers[0].hex(), sha256_hex(&l1));
    let root = tmp.path().join("root");
    let img = store.image("library/app", "v1").unwrap();
    flatten(&store, &img.manifest, &root).unwrap();
    assert_eq!(std::fs::read(root.join("etc/conf")).unwrap(), b"conf");
}

struct Layout {
    tar: Vec<u8>,
    manifest_digest: String,
}

/// An OCI image layout: index.json → (optionally) a nested index with two
/// platforms → image manifests with gzip layers.
fn oci_layout(nested: bool, corrupt: bool) -> Layout {
    let mut b = tar::Builder::new(Vec::new());
    let blob = |b: &mut tar::Builder<Vec<u8>>, d: &[u8]| {
        let hex = sha256_hex(d);
        let mut content = d.to_vec();
        if corrupt && content.len() > 100 {
            content[50] ^= 0xff;
        }
        add_file(b, &format!("blobs/sha256/{hex}"), &content);
        format!("sha256:{hex}")
    };
    let mut manifests = Vec::new();
    for (arch, file) in [("arm64", "arm"), ("amd64", "amd")] {
        let layer = gzip(&tar_of(&[
            ("bin", None),
            ("bin/which", Some(file.as_bytes())),
        ]));
        let raw = tar_of(&[("bin", None), ("bin/which", Some(file.as_bytes()))]);
        let config = config_json(&[sha256_hex(&raw)], arch);
        let m = json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": {"mediaType": media_types::OCI_CONFIG, "digest": blob(&mut b, &config), "size": config.len()},
            "layers": [{"mediaType": media_types::OCI_LAYER_GZIP, "digest": blob(&mut b, &layer), "size": layer.len()}]
        })
        .to_string()
        .into_bytes();
        manifests.push((arch, blob(&mut b, &m), m.len()));
    }
    let (_, amd_digest, amd_len) = manifests[1].clone();
    let index = if nested {
        let inner = json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": manifests.iter().map(|(arch, d, len)| json!({
                "mediaType": media_types::OCI_MANIFEST, "digest": d, "size": len,
                "platform": {"os": "linux", "architecture": arch}
            })).collect::<Vec<_>>()
        })
        .to_string()
        .into_bytes();
        json!({"schemaVersion": 2, "manifests": [{
            "mediaType": media_types::OCI_INDEX, "digest": blob(&mut b, &inner), "size": inner.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v2"}
        }]})
    } else {
        json!({"schemaVersion": 2, "manifests": [{
            "mediaType": media_types::OCI_MANIFEST, "digest": amd_digest, "size": amd_len,
            "annotations": {"org.opencontainers.image.ref.name": "v2"}
        }]})
    };
    add_file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add_file(&mut b, "index.json", index.to_string().as_bytes());
    Layout {
        tar: b.into_inner().unwrap(),
        manifest_digest: amd_digest,
    }
}

#[test]
fn oci_layout_imports_preserving_the_manifest_digest() {
    for nested in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path().join("store")).unwrap();
        let layout = oci_layout(nested, false);
        let archive = tmp.path().join("oci.tar");
        write(&archive, &layout.tar);
        let imp = import_archive(&store, &archive, "oci/app", "v2", &mut |_, _| {}).unwrap();
        check_config(&imp.config);
        // The host platform's (amd64 here) manifest, byte for byte.
        if berth_image::spec::Platform::host().architecture == "amd64" {
            assert_eq!(imp.digest.to_string(), layout.manifest_digest);
            let root = tmp.path().join("root");
            flatten(
                &store,
                &store.image("oci/app", "v2").unwrap().manifest,
                &root,
            )
            .unwrap();
            assert_eq!(std::fs::read(root.join("bin/which")).unwrap(), b"amd");
        }
    }
}

#[test]
fn oci_layout_with_a_corrupt_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let archive = tmp.path().join("oci.tar");
    write(&archive, &oci_layout(false, true).tar);
    let e = import_archive(&store, &archive, "oci/app", "v2", &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(store.repositories().unwrap().is_empty());
}

#[test]
fn hostile_or_unknown_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    common::raw_entry(&mut b, "../escape", tar::EntryType::Regular, None, b"x");
    let archive = tmp.path().join("evil.tar");
    write(&archive, &b.into_inner().unwrap());
    let e = import_archive(&store, &archive, "a", "b", &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::PathEscapes(_)), "{e}");
    assert!(!tmp.path().join("store/escape").exists());

    let plain = tmp.path().join("plain.tar");
    write(&plain, &tar_of(&[("hello", Some(b"x"))]));
    let e = import_archive(&store, &plain, "a", "b", &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::Archive(_)), "{e}");
}
