//! A busybox root filesystem imported, unpacked (overlay and flatten) and
//! compared entry by entry with the original.

#![allow(clippy::unwrap_used)]

mod common;

use berth_image::import::{import_rootfs, RootfsOptions};
use berth_image::unpack::{flatten, LayerCache};
use berth_image::BlobStore;
use common::{busybox_rootfs, snapshot};

#[test]
fn rootfs_import_then_unpack_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    busybox_rootfs(&src);
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let (mut calls, mut last) = (0, (0, 0));
    let imported = import_rootfs(
        &store,
        &src,
        &RootfsOptions::default(),
        "busybox",
        "latest",
        &mut |d, t| {
            calls += 1;
            last = (d, t);
        },
    )
    .unwrap();
    assert!(calls > 0);
    assert_eq!(last.0, last.1, "progress ends at the total");
    assert!(last.1 > 1_000_000, "busybox counted: {last:?}");
    assert_eq!(imported.config.cmd, Some(vec!["sh".to_string()]));
    assert!(imported.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(imported.layers.len(), 1);

    assert_eq!(store.repositories().unwrap(), vec!["busybox"]);
    assert_eq!(store.tags("busybox").unwrap(), vec!["latest"]);
    let img = store.image("busybox", "latest").unwrap();
    assert_eq!(img.digest, imported.digest);
    assert_eq!(img.config_file.os, "linux");
    assert_eq!(img.config_file.rootfs.diff_ids.len(), 1);
    let m = store
        .get_manifest("busybox", &imported.digest.to_string())
        .unwrap();
    assert_eq!(m.media_type, berth_image::spec::media_types::OCI_MANIFEST);

    let want = snapshot(&src);
    assert!(want.len() > 10);

    let cache = LayerCache::open(tmp.path().join("layers")).unwrap();
    let dirs = cache.layer_dirs(&store, &img.manifest).unwrap();
    assert_eq!(dirs.len(), 1);
    assert_eq!(snapshot(&dirs[0]), want);
    // Unpacked once: a second call finds it and does not redo it.
    std::fs::write(dirs[0].join("marker"), "x").unwrap();
    let again = cache.layer_dirs(&store, &img.manifest).unwrap();
    assert_eq!(again, dirs);
    assert!(again[0].join("marker").exists());
    // No temp dirs left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    let flat = tmp.path().join("flat");
    flatten(&store, &img.manifest, &flat).unwrap();
    assert_eq!(snapshot(&flat), want);

    // And it runs.
    let out = std::process::Command::new(flat.join("bin/sh"))
        .args(["-c", "echo hello from busybox"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from busybox\n");
}

#[test]
fn rootfs_layers_are_deterministic_with_a_fixed_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    busybox_rootfs(&src);
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let opts = RootfsOptions {
        mtime: Some(0),
        cmd: Some(vec!["/bin/sleep".into(), "1".into()]),
        entrypoint: Some(vec!["/bin/env".into()]),
        working_dir: Some("/tmp".into()),
        user: Some("1000".into()),
        ..RootfsOptions::default()
    };
    let a = import_rootfs(&store, &src, &opts, "bb", "a", &mut |_, _| {}).unwrap();
    filetime::set_file_mtime(
        src.join("etc/passwd"),
        filetime::FileTime::from_unix_time(5, 0),
    )
    .unwrap();
    let b = import_rootfs(&store, &src, &opts, "bb", "b", &mut |_, _| {}).unwrap();
    assert_eq!(a.digest, b.digest, "mtimes do not count with a fixed mtime");
    std::fs::write(src.join("etc/passwd"), "changed\n").unwrap();
    let c = import_rootfs(&store, &src, &opts, "bb", "c", &mut |_, _| {}).unwrap();
    assert_ne!(a.layers, c.layers);
    assert_eq!(store.tags("bb").unwrap(), vec!["a", "b", "c"]);
    let img = store.image("bb", "a").unwrap();
    let cfg = img.config();
    assert_eq!(cfg.entrypoint, Some(vec!["/bin/env".to_string()]));
    assert_eq!(
        cfg.cmd,
        Some(vec!["/bin/sleep".to_string(), "1".to_string()])
    );
    assert_eq!(cfg.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(cfg.user.as_deref(), Some("1000"));
}

#[test]
fn bad_names_and_tags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let opts = RootfsOptions::default();
    for (name, tag) in [("../x", "t"), ("Upper", "t"), ("a", "../t"), ("a", "")] {
        let e = import_rootfs(&store, &src, &opts, name, tag, &mut |_, _| {});
        assert!(e.is_err(), "{name}:{tag}");
    }
    assert!(store.repositories().unwrap().is_empty());
}
