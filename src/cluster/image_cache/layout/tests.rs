use super::*;

/// A tiny image in `layout`: config + one layer + manifest; returns its entry.
fn put_image(layout: &Layout, reference: &str, layer: &[u8]) -> Entry {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","x":"{reference}"}}"#);
    let config_d = sha256_digest(config.as_bytes());
    let layer_d = sha256_digest(layer);
    layout.write_blob(&config_d, config.as_bytes()).unwrap();
    layout.write_blob(&layer_d, layer).unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d, "size": layer.len()}],
    }))
    .unwrap();
    let d = sha256_digest(&manifest);
    layout.write_blob(&d, &manifest).unwrap();
    let e = Entry {
        reference: reference.into(),
        digest: d,
        media_type: MEDIA_OCI_MANIFEST.into(),
        size: manifest.len() as u64,
        platform: Some(Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
        }),
    };
    layout.set_entry(e.clone()).unwrap();
    e
}

#[test]
fn references_are_fully_qualified() {
    assert_eq!(
        normalize_reference("alpine:3.22"),
        "docker.io/library/alpine:3.22"
    );
    assert_eq!(
        normalize_reference("nginx/nginx-ingress:5.5.4"),
        "docker.io/nginx/nginx-ingress:5.5.4"
    );
    assert_eq!(
        normalize_reference("docker.io/alpine:1"),
        "docker.io/library/alpine:1"
    );
    assert_eq!(
        normalize_reference("index.docker.io/library/alpine:1"),
        "docker.io/library/alpine:1"
    );
    assert_eq!(
        normalize_reference("quay.io/jetstack/cert-manager-controller:v1.19.1"),
        "quay.io/jetstack/cert-manager-controller:v1.19.1"
    );
    assert_eq!(
        normalize_reference("127.0.0.1:5000/x/y:1"),
        "127.0.0.1:5000/x/y:1"
    );
    assert_eq!(normalize_reference("localhost/x:1"), "localhost/x:1");
    assert_eq!(
        normalize_reference("ghcr.io/a/b@sha256:abc"),
        "ghcr.io/a/b@sha256:abc"
    );
}

#[test]
fn create_then_open_and_open_refuses_a_plain_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    assert!(matches!(
        Layout::open(&dir),
        Err(LayoutError::NotALayout(_))
    ));
    let l = Layout::create(&dir).unwrap();
    assert!(dir.join("oci-layout").is_file());
    assert!(l.entries().unwrap().is_empty());
    let again = Layout::open(&dir).unwrap();
    assert_eq!(again.dir(), dir);
    let v: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(v["schemaVersion"], 2);
}

#[test]
fn a_blob_is_stored_only_under_its_own_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::create(tmp.path()).unwrap();
    let d = sha256_digest(b"hello");
    assert!(!l.has_blob(&d));
    assert_eq!(l.verify_blob(&d).unwrap(), BlobState::Missing);
    l.write_blob(&d, b"hello").unwrap();
    assert!(l.has_blob(&d));
    assert_eq!(l.verify_blob(&d).unwrap(), BlobState::Valid);
    assert_eq!(l.read_blob(&d).unwrap(), b"hello");

    let other = sha256_digest(b"other");
    let err = l.write_blob(&other, b"not other").unwrap_err();
    assert!(matches!(err, LayoutError::Mismatch { .. }), "{err}");
    assert!(!l.has_blob(&other));
    // No temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![d["sha256:".len()..].to_string()]);

    let n = l.write_blob_from(&other, &b"other"[..]).unwrap();
    assert_eq!(n, 5);
}

#[test]
fn a_corrupt_blob_is_seen_and_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::create(tmp.path()).unwrap();
    let d = sha256_digest(b"hello");
    l.write_blob(&d, b"hello").unwrap();
    std::fs::write(l.blob_path(&d).unwrap(), b"jello").unwrap();
    assert_eq!(
        l.verify_blob(&d).unwrap(),
        BlobState::Corrupt {
            actual: sha256_digest(b"jello")
        }
    );
    assert!(matches!(l.read_blob(&d), Err(LayoutError::Mismatch { .. })));
    l.remove_blob(&d).unwrap();
    assert_eq!(l.verify_blob(&d).unwrap(), BlobState::Missing);
}

#[test]
fn digests_that_are_not_sha256_are_refused_before_any_path_is_built() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::create(tmp.path()).unwrap();
    for bad in [
        "sha256:../../etc/passwd",
        "sha512:00",
        "sha256:ABC",
        &format!("sha256:{}", "A".repeat(64)),
    ] {
        assert!(
            matches!(l.blob_path(bad), Err(LayoutError::BadDigest(_))),
            "{bad}"
        );
        assert!(!l.has_blob(bad));
    }
}

#[test]
fn entries_are_named_by_reference_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::create(tmp.path()).unwrap();
    let a = put_image(&l, "alpine:3.22", b"layer-a");
    let b = put_image(&l, "ghcr.io/x/y:1", b"layer-b");
    assert_eq!(a.reference, "alpine:3.22");
    let entries = l.entries().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e.reference.as_str())
            .collect::<Vec<_>>(),
        vec!["docker.io/library/alpine:3.22", "ghcr.io/x/y:1"]
    );
    assert_eq!(l.entry("alpine:3.22").unwrap().unwrap().digest, a.digest);
    assert_eq!(l.entry("ghcr.io/x/y:1").unwrap().unwrap().digest, b.digest);
    assert!(l.entry("ghcr.io/x/y:2").unwrap().is_none());
    // Both annotations name the reference (ctr import reads `io.containerd.image.name`).
    let v: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
    let first = &v["manifests"][0];
    assert_eq!(
        first["annotations"][ANNOTATION_REF_NAME],
        "docker.io/library/alpine:3.22"
    );
    assert_eq!(
        first["annotations"][ANNOTATION_CONTAINERD_NAME],
        "docker.io/library/alpine:3.22"
    );
    assert_eq!(first["platform"]["architecture"], "amd64");

    let a2 = put_image(&l, "docker.io/library/alpine:3.22", b"layer-a2");
    assert_eq!(l.entries().unwrap().len(), 2);
    assert_eq!(l.entry("alpine:3.22").unwrap().unwrap().digest, a2.digest);
}

#[test]
fn image_blobs_are_manifest_config_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::create(tmp.path()).unwrap();
    let e = put_image(&l, "alpine:3.22", b"layer-a");
    let blobs = l.image_blobs(&e).unwrap();
    assert_eq!(blobs.len(), 3);
    assert_eq!(blobs[0], e.digest);
    assert_eq!(blobs[2], sha256_digest(b"layer-a"));
}

#[test]
fn the_archive_is_a_layout_with_only_the_asked_images() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::create(tmp.path()).unwrap();
    let a = put_image(&l, "alpine:3.22", b"layer-a");
    let _b = put_image(&l, "ghcr.io/x/y:1", b"layer-b");
    let mut out = Vec::new();
    l.export_archive(&["docker.io/library/alpine:3.22"], &mut out)
        .unwrap();
    let mut files = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(&out[..]);
    for f in ar.entries().unwrap() {
        let mut f = f.unwrap();
        let name = f.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    let mut expected: Vec<String> = l
        .image_blobs(&a)
        .unwrap()
        .iter()
        .map(|d| format!("blobs/sha256/{}", &d[7..]))
        .collect();
    expected.push("index.json".into());
    expected.push("oci-layout".into());
    expected.sort();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), expected);
    for (name, bytes) in &files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256_digest(bytes), format!("sha256:{hex}"));
        }
    }
    let inner = parse_index(&files["index.json"]).unwrap();
    assert_eq!(inner.len(), 1);
    assert_eq!(inner[0].digest, a.digest);
    assert_eq!(inner[0].reference, "docker.io/library/alpine:3.22");

    let err = l
        .export_archive(&["ghcr.io/x/z:9"], Vec::new())
        .unwrap_err();
    assert!(matches!(err, LayoutError::MissingImage(_)), "{err}");
}

#[test]
fn the_archive_refuses_a_corrupt_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::create(tmp.path()).unwrap();
    put_image(&l, "alpine:3.22", b"layer-a");
    let layer = sha256_digest(b"layer-a");
    std::fs::write(l.blob_path(&layer).unwrap(), b"layer-b").unwrap();
    let err = l.export_archive(&["alpine:3.22"], Vec::new()).unwrap_err();
    assert!(matches!(err, LayoutError::Mismatch { .. }), "{err}");
}

#[test]
fn concurrent_writers_of_the_index_lose_no_entry() {
    // Two `prepare`s sharing one cache each add their images to `index.json`: the read, change
    // and write happen under `index.json.lock`, so every entry of every writer is there after.
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::create(tmp.path().join("images")).unwrap();
    let writers = 6;
    let each = 15;
    std::thread::scope(|s| {
        for w in 0..writers {
            let layout = layout.clone();
            s.spawn(move || {
                for i in 0..each {
                    let e = Entry {
                        reference: format!("example.test/w{w}/img{i}:1"),
                        digest: sha256_digest(format!("{w}-{i}").as_bytes()),
                        media_type: MEDIA_OCI_MANIFEST.into(),
                        size: 1,
                        platform: None,
                    };
                    layout.set_entry(e).unwrap();
                }
            });
        }
    });
    assert_eq!(layout.entries().unwrap().len(), writers * each);
}
