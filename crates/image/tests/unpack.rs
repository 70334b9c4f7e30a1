//! Whiteouts (flatten and overlay encodings), hostile layers, digest checks.

#![allow(clippy::unwrap_used)]

mod common;

use berth_image::unpack::{apply_layer, flatten, LayerCache, WhiteoutMode};
use berth_image::{BlobStore, Digest, Error};
use common::{gzip, raw_entry, tar_of};
use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};

fn lower() -> Vec<u8> {
    tar_of(&[
        ("a", None),
        ("a/file", Some(b"gone")),
        ("a/keep", Some(b"keep")),
        ("d", None),
        ("d/x", Some(b"x")),
        ("d/sub", None),
        ("d/sub/y", Some(b"y")),
        ("gone", None),
        ("gone/dir", None),
        ("gone/dir/z", Some(b"z")),
    ])
}

fn upper() -> Vec<u8> {
    tar_of(&[
        ("a", None),
        ("a/.wh.file", Some(b"")),
        ("d", None),
        ("d/.wh..wh..opq", Some(b"")),
        ("d/new", Some(b"new")),
        ("d/sub", None),
        ("d/sub/n", Some(b"n")),
        (".wh.gone", Some(b"")),
        (".wh..wh.plnk", None),
    ])
}

#[test]
fn flatten_applies_whiteouts_by_deletion() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    apply_layer(lower().as_slice(), &root, WhiteoutMode::Flatten).unwrap();
    apply_layer(gzip(&upper()).as_slice(), &root, WhiteoutMode::Flatten).unwrap();
    assert!(!root.join("a/file").exists());
    assert_eq!(fs::read(root.join("a/keep")).unwrap(), b"keep");
    assert!(!root.join("d/x").exists(), "hidden by the opaque dir");
    assert!(!root.join("d/sub/y").exists(), "hidden by the opaque dir");
    assert_eq!(fs::read(root.join("d/new")).unwrap(), b"new");
    assert_eq!(fs::read(root.join("d/sub/n")).unwrap(), b"n");
    assert!(!root.join("gone").exists());
    for e in walk(&root) {
        assert!(!e.contains(".wh."), "a whiteout file leaked: {e}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.display().to_string());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn overlay_mode_encodes_whiteouts_for_overlayfs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("layer");
    fs::create_dir(&root).unwrap();
    apply_layer(upper().as_slice(), &root, WhiteoutMode::Overlay).unwrap();
    for name in ["a/file", "gone"] {
        let m = fs::symlink_metadata(root.join(name)).unwrap();
        assert!(
            m.file_type().is_char_device(),
            "{name} is a whiteout device"
        );
        assert_eq!(m.rdev(), 0, "{name} is 0/0");
    }
    let attr = if common::is_root() {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    };
    assert_eq!(
        xattr::get(root.join("d"), attr).unwrap().as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr::get(root.join("a"), attr).unwrap(), None);
    assert_eq!(fs::read(root.join("d/new")).unwrap(), b"new");
    for e in walk(&root) {
        assert!(!e.contains(".wh."), "a whiteout file leaked: {e}");
    }
}

fn hostile(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

#[test]
fn paths_that_escape_the_root_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            hostile(|b| {
                raw_entry(
                    b,
                    "a/../../outside/pwned",
                    tar::EntryType::Regular,
                    None,
                    b"x",
                )
            }),
        ),
        (
            "absolute symlink",
            hostile(|b| {
                raw_entry(
                    b,
                    "link",
                    tar::EntryType::Symlink,
                    Some(outside.to_str().unwrap()),
                    b"",
                );
                raw_entry(b, "link/pwned", tar::EntryType::Regular, None, b"x");
            }),
        ),
        (
            "relative symlink",
            hostile(|b| {
                raw_entry(b, "up", tar::EntryType::Symlink, Some("../outside"), b"");
                raw_entry(b, "up/pwned", tar::EntryType::Regular, None, b"x");
            }),
        ),
        (
            "hard link out",
            hostile(|b| raw_entry(b, "h", tar::EntryType::Link, Some("../outside/target"), b"")),
        ),
        (
            "whiteout through a symlink",
            hostile(|b| {
                raw_entry(
                    b,
                    "link",
                    tar::EntryType::Symlink,
                    Some(outside.to_str().unwrap()),
                    b"",
                );
                raw_entry(b, "link/.wh.keep", tar::EntryType::Regular, None, b"");
            }),
        ),
    ];
    fs::write(outside.join("target"), "t").unwrap();
    fs::write(outside.join("keep"), "k").unwrap();
    for mode in [WhiteoutMode::Overlay, WhiteoutMode::Flatten] {
        for (what, layer) in &cases {
            let root = tmp.path().join(format!("root-{what}-{mode:?}"));
            fs::create_dir(&root).unwrap();
            let e = apply_layer(layer.as_slice(), &root, mode).unwrap_err();
            assert!(matches!(e, Error::PathEscapes(_)), "{what}: {e}");
        }
    }
    assert!(!outside.join("pwned").exists());
    assert!(!tmp.path().join("pwned").exists());
    assert!(outside.join("keep").exists());
}

#[test]
fn leading_slashes_stay_inside_and_symlinks_are_replaced_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    fs::write(&victim, "untouched").unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let l1 = hostile(|b| {
        raw_entry(b, "/abs/file", tar::EntryType::Regular, None, b"inside");
        raw_entry(
            b,
            "f",
            tar::EntryType::Symlink,
            Some(victim.to_str().unwrap()),
            b"",
        );
    });
    apply_layer(l1.as_slice(), &root, WhiteoutMode::Flatten).unwrap();
    assert_eq!(fs::read(root.join("abs/file")).unwrap(), b"inside");
    let l2 = hostile(|b| raw_entry(b, "f", tar::EntryType::Regular, None, b"replaced"));
    apply_layer(l2.as_slice(), &root, WhiteoutMode::Flatten).unwrap();
    assert_eq!(fs::read(root.join("f")).unwrap(), b"replaced");
    assert!(!fs::symlink_metadata(root.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    // A hard link inside the root is fine.
    let l3 = hostile(|b| raw_entry(b, "h", tar::EntryType::Link, Some("abs/file"), b""));
    apply_layer(l3.as_slice(), &root, WhiteoutMode::Flatten).unwrap();
    assert_eq!(
        fs::metadata(root.join("h")).unwrap().ino(),
        fs::metadata(root.join("abs/file")).unwrap().ino()
    );
}

#[test]
fn digest_mismatches_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let wrong = Digest::of(b"something else");
    let e = store
        .put_blob_verified(&b"content"[..], &wrong)
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(!store.has_blob(&Digest::of(b"content")));
    assert_eq!(
        fs::read_dir(store.tmp_dir()).unwrap().count(),
        0,
        "no temp file left"
    );

    // A layer whose content does not match its diff id.
    let layer = gzip(&tar_of(&[("f", Some(b"f"))]));
    let digest = store.put_blob(layer.as_slice()).unwrap();
    let cache = LayerCache::open(tmp.path().join("layers")).unwrap();
    let e = cache.unpack(&store, &digest, Some(&wrong)).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_eq!(fs::read_dir(tmp.path().join("layers")).unwrap().count(), 0);
    let ok = cache
        .unpack(
            &store,
            &digest,
            Some(&Digest::of(&tar_of(&[("f", Some(b"f"))]))),
        )
        .unwrap();
    assert_eq!(fs::read(ok.join("f")).unwrap(), b"f");

    // An upload session whose content is not the announced digest.
    let id = store.new_upload().unwrap();
    use std::io::Write as _;
    store
        .upload_appender(&id)
        .unwrap()
        .write_all(b"abc")
        .unwrap();
    assert_eq!(store.upload_size(&id).unwrap(), 3);
    let e = store.finish_upload(&id, &wrong).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(store.upload_size(&id).is_err(), "the session is discarded");
    assert!(store.upload_size("../../etc/passwd").is_err());
}

#[test]
fn manifests_must_refer_to_stored_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = Digest::of(config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": []
    })
    .to_string();
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let e = store
        .put_manifest("a", "t", manifest.as_bytes(), mt)
        .unwrap_err();
    assert!(matches!(e, Error::BlobUnknown(_)), "{e}");
    store.put_blob(&config[..]).unwrap();
    let d = store
        .put_manifest("a", "t", manifest.as_bytes(), mt)
        .unwrap();
    assert_eq!(store.get_manifest("a", "t").unwrap().digest, d);
    assert_eq!(
        store.get_manifest("a", &d.to_string()).unwrap().bytes,
        manifest.as_bytes()
    );
    assert!(matches!(
        store.get_manifest("b", &d.to_string()).unwrap_err(),
        Error::ManifestUnknown(_)
    ));
    assert!(matches!(
        store.put_manifest("a", &Digest::of(b"x").to_string(), manifest.as_bytes(), mt),
        Err(Error::DigestMismatch { .. })
    ));
    assert!(matches!(
        store.put_manifest("../a", "t", manifest.as_bytes(), mt),
        Err(Error::InvalidName(_))
    ));
    // An empty image flattens to an empty dir.
    let img = store.image("a", "t").unwrap();
    flatten(&store, &img.manifest, &tmp.path().join("empty")).unwrap();
    assert_eq!(fs::read_dir(tmp.path().join("empty")).unwrap().count(), 0);
}

#[test]
fn zstd_layers_are_reported_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let zstd_magic = [0x28u8, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    let e = apply_layer(&zstd_magic[..], tmp.path(), WhiteoutMode::Flatten).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}
