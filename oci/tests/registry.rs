//! Root-tier tests against a REAL registry (Debian's docker-registry, distribution 2.8) on
//! 127.0.0.1, with a fault proxy in between. Run: `cargo test -p kiln-oci -- --ignored root_`.

use std::io::Read;
use std::process::Command;

use kiln_oci::format::{Filesystem, Layer0Form, Platform, RootPartition};
use kiln_oci::reference::Reference;
use kiln_oci::registry::Client;
use kiln_testsupport::forward_proxy::HttpProxy;
use kiln_testsupport::free_port;
use kiln_testsupport::image::{TestImage, test_image};
use kiln_testsupport::pki::make_pki;
use kiln_testsupport::proxy::{FaultPlan, FaultProxy};
use kiln_testsupport::registry::{Auth, Registry, client_for};
use kiln_testsupport::token::TokenServer;

fn reference(host: &str, repo_tag: &str) -> Reference {
    format!("{host}/{repo_tag}").parse().unwrap()
}

/// Pulls every layer and checks each is byte-identical to the built blob; returns resumes.
fn pull_and_compare(client: &Client, r: &Reference, img: &TestImage) -> u32 {
    let resolved = client.resolve(r, &Platform::current()).expect("resolve");
    assert_eq!(resolved.layers.len(), img.image.layers.len());
    assert_eq!(
        resolved.settings.root_partition,
        RootPartition::Name("root".into())
    );
    assert_eq!(resolved.settings.filesystem, Filesystem::Ext4);
    assert_eq!(
        resolved.settings.kernel_args.as_deref(),
        Some("console=ttyS0")
    );
    let mut resumes = 0;
    for (layer, built) in resolved.layers.iter().zip(&img.image.layers) {
        let blob = client
            .open_blob(&resolved.reference, &layer.digest, layer.size)
            .expect("open blob");
        let progress = blob.progress();
        let mut got = Vec::new();
        let mut blob = blob;
        blob.read_to_end(&mut got).expect("verified pull");
        assert!(
            got == std::fs::read(&built.path).unwrap(),
            "layer {} differs",
            layer.digest
        );
        let snap = progress.snapshot();
        assert_eq!((snap.done, snap.total), (layer.size, layer.size));
        resumes += snap.resumes;
    }
    // Layer 0 streams back to the original disk bytes.
    let l0 = &resolved.layers[0];
    let blob = client
        .open_blob(&resolved.reference, &l0.digest, l0.size)
        .unwrap();
    let mut disk = Vec::new();
    resolved
        .layer0
        .disk_stream(blob)
        .unwrap()
        .read_to_end(&mut disk)
        .unwrap();
    assert!(disk == img.disk, "layer 0 does not decompress to the disk");
    resumes
}

#[test]
#[ignore = "root: starts docker-registry on 127.0.0.1"]
fn root_push_and_pull_anonymous_both_layer0_forms() {
    let reg = Registry::start(Auth::None);
    let client = client_for(&[&reg.host()], None);
    for (form, tag) in [
        (Layer0Form::RawDisk, "raw"),
        (Layer0Form::TarWithOneFile, "tar"),
    ] {
        let img = test_image(4 << 20, form);
        let r = reference(&reg.host(), &format!("kiln/test:{tag}"));
        let digest = img.image.push(&client, &r).expect("push");
        // Pushing again skips existing blobs and yields the same manifest digest.
        assert_eq!(img.image.push(&client, &r).unwrap(), digest);
        let resolved = client.resolve(&r, &Platform::current()).unwrap();
        assert_eq!(resolved.layer0, form);
        assert_eq!(resolved.reference.digest(), Some(&digest));
        assert_eq!(pull_and_compare(&client, &r, &img), 0);
        // Digest-pinned pulls work too.
        pull_and_compare(&client, &r.with_digest(digest), &img);
    }
}

#[test]
#[ignore = "root: starts docker-registry on 127.0.0.1"]
fn root_fault_proxy_three_cuts_503_429_and_truncation_resume_byte_identical() {
    let reg = Registry::start(Auth::None);
    let img = test_image(8 << 20, Layer0Form::RawDisk);
    img.image
        .push(
            &client_for(&[&reg.host()], None),
            &reference(&reg.host(), "kiln/test:v1"),
        )
        .unwrap();
    let proxy = FaultProxy::start(
        reg.port,
        FaultPlan {
            cuts_per_blob: 3,
            clean_truncations_per_blob: 1,
            statuses: vec![503, 429],
            ..Default::default()
        },
    );
    let client = client_for(&[&proxy.host()], None);
    let resumes = pull_and_compare(&client, &reference(&proxy.host(), "kiln/test:v1"), &img);
    let blobs = img.image.layers.len() as u32;
    assert!(
        resumes >= 4 * blobs,
        "expected >= 4 resumes per layer (3 cuts + 1 truncation), got {resumes}"
    );
    proxy.stats(|s| {
        assert!(
            s.cuts >= 3 * blobs && s.truncations >= blobs && s.statuses >= 2,
            "{} cuts {} truncations {} statuses",
            s.cuts,
            s.truncations,
            s.statuses
        );
    });
}

#[test]
#[ignore = "root: starts docker-registry on 127.0.0.1"]
fn root_flipped_byte_is_reported_with_reference_and_both_digests() {
    let reg = Registry::start(Auth::None);
    let img = test_image(6 << 20, Layer0Form::RawDisk);
    img.image
        .push(
            &client_for(&[&reg.host()], None),
            &reference(&reg.host(), "kiln/test:v1"),
        )
        .unwrap();
    let target = img.image.layers[0].digest.clone();
    let proxy = FaultProxy::start(
        reg.port,
        FaultPlan {
            flip: Some(target.to_string()),
            cuts_per_blob: 1,
            ..Default::default()
        },
    );
    let client = client_for(&[&proxy.host()], None);
    let r = reference(&proxy.host(), "kiln/test:v1");
    let resolved = client.resolve(&r, &Platform::current()).unwrap();
    let l0 = &resolved.layers[0];
    let mut blob = client
        .open_blob(&resolved.reference, &l0.digest, l0.size)
        .unwrap();
    let mut sink = Vec::new();
    let err = blob.read_to_end(&mut sink).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/kiln/test", proxy.host())),
        "names the reference: {msg}"
    );
    assert!(
        msg.contains(&format!("expected {target}")),
        "names the expected digest: {msg}"
    );
    assert!(msg.contains("seen sha256:"), "names the seen digest: {msg}");
    // The error sticks: a consumer retrying read never gets Ok(0).
    assert!(blob.read(&mut [0u8; 16]).is_err());
    // Through the layer-0 decompressor the verdict still arrives before EOF.
    let blob = client
        .open_blob(&resolved.reference, &l0.digest, l0.size)
        .unwrap();
    let err = resolved
        .layer0
        .disk_stream(blob)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(
        err.to_string().contains("digest mismatch")
            || err.to_string().contains("zstd")
            || err.kind() != std::io::ErrorKind::Other,
        "{err}"
    );
    assert!(proxy.stats(|s| s.flips) >= 2);
}

#[test]
#[ignore = "root: starts docker-registry on 127.0.0.1"]
fn root_truncated_body_is_never_success() {
    let reg = Registry::start(Auth::None);
    let img = test_image(1 << 20, Layer0Form::RawDisk);
    img.image
        .push(
            &client_for(&[&reg.host()], None),
            &reference(&reg.host(), "kiln/test:v1"),
        )
        .unwrap();
    let proxy = FaultProxy::start(
        reg.port,
        FaultPlan {
            always_truncate: true,
            ..Default::default()
        },
    );
    let client = client_for(&[&proxy.host()], None);
    let r = reference(&proxy.host(), "kiln/test:v1");
    // Config blobs are truncated too: resolve itself must fail, never succeed on a short body.
    let err = format!(
        "{:#}",
        client.resolve(&r, &Platform::current()).unwrap_err()
    );
    assert!(err.contains("config"), "{err}");
    // Layer blobs: each resume gets half of the rest, so the stream advances then fails closed
    // (or completes if halving reaches the end); it is never accepted short.
    let direct = client_for(&[&reg.host()], None);
    let resolved = direct
        .resolve(
            &reference(&reg.host(), "kiln/test:v1"),
            &Platform::current(),
        )
        .unwrap();
    for l in &resolved.layers {
        let res = client
            .open_blob(
                &r.with_digest(resolved.reference.digest().unwrap().clone()),
                &l.digest,
                l.size,
            )
            .and_then(|mut b| Ok(b.read_to_end(&mut Vec::new())?));
        match res {
            Ok(n) => assert_eq!(n as u64, l.size, "a short body was reported as success"),
            Err(e) => {
                let m = format!("{e:#}");
                assert!(
                    m.contains(&l.digest.to_string()) && m.contains("kiln/test"),
                    "{m}"
                );
            }
        }
    }
}

#[test]
#[ignore = "root: starts docker-registry on 127.0.0.1 with htpasswd"]
fn root_basic_auth_push_pull_and_refusals() {
    let reg = Registry::start(Auth::Htpasswd {
        user: "kiln".into(),
        password: "s3cret-pw".into(),
    });
    let img = test_image(1 << 20, Layer0Form::RawDisk);
    let r = reference(&reg.host(), "kiln/private:v1");
    let good = client_for(&[&reg.host()], Some(("kiln", "s3cret-pw")));
    img.image.push(&good, &r).expect("push with basic auth");
    pull_and_compare(&good, &r, &img);
    let anon = client_for(&[&reg.host()], None);
    let err = format!("{:#}", anon.resolve(&r, &Platform::current()).unwrap_err());
    assert!(err.contains("requires credentials"), "{err}");
    let bad = client_for(&[&reg.host()], Some(("kiln", "wrong-pw")));
    let err = format!("{:#}", bad.resolve(&r, &Platform::current()).unwrap_err());
    assert!(err.contains("401") && !err.contains("wrong-pw"), "{err}");
    assert!(!format!("{bad:?}").contains("wrong-pw"));
}

#[test]
#[ignore = "root: starts docker-registry on 127.0.0.1; runs skopeo"]
fn root_skopeo_interop_both_directions() {
    let reg = Registry::start(Auth::None);
    let img = test_image(2 << 20, Layer0Form::RawDisk);
    let layout = img.dir.path().join("layout");
    img.image.write_layout(&layout, "v1").unwrap();
    // skopeo pushes our OCI layout; we pull it.
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/kiln/skopeo:v1", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = client_for(&[&reg.host()], None);
    pull_and_compare(&client, &reference(&reg.host(), "kiln/skopeo:v1"), &img);
    // We push; skopeo pulls and verifies.
    img.image
        .push(&client, &reference(&reg.host(), "kiln/ours:v1"))
        .unwrap();
    let dest = img.dir.path().join("skopeo-out");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/kiln/ours:v1", reg.host()))
        .arg(format!("oci:{}:v1", dest.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for l in &img.image.layers {
        let got = std::fs::read(dest.join("blobs/sha256").join(l.digest.hex())).unwrap();
        assert!(got == std::fs::read(&l.path).unwrap());
    }
}

#[test]
#[ignore = "root: starts docker-registry on 127.0.0.1"]
fn root_mirror_dead_falls_back_and_live_mirror_serves() {
    let upstream = Registry::start(Auth::None);
    let img = test_image(1 << 20, Layer0Form::RawDisk);
    let r = reference(&upstream.host(), "kiln/test:v1");
    img.image
        .push(&client_for(&[&upstream.host()], None), &r)
        .unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = FaultProxy::start(upstream.port, FaultPlan::default());
    for mirrors in [vec![dead.clone()], vec![format!("http://{}", proxy.host())]] {
        let mut client = client_for(&[&upstream.host()], None);
        let mut config = client.config().clone();
        config.hosts.get_mut(&upstream.host()).unwrap().mirrors = mirrors;
        config.retry.max_attempts = 2;
        client = Client::new(config);
        pull_and_compare(&client, &r, &img);
    }
    assert!(
        proxy.stats(|s| s.requests) >= 3,
        "the live mirror served the pull"
    );
}

#[test]
#[ignore = "root: starts docker-registry with token auth and a token server on 127.0.0.1"]
fn root_bearer_token_auth_push_pull() {
    let tokens = TokenServer::start("kiln", "tok-pw", 3600);
    let reg = Registry::start(tokens.auth());
    let img = test_image(1 << 20, Layer0Form::RawDisk);
    let r = reference(&reg.host(), "kiln/tok:v1");
    let client = client_for(&[&reg.host()], Some(("kiln", "tok-pw")));
    img.image
        .push(&client, &r)
        .expect("push with a bearer token");
    pull_and_compare(&client, &r, &img);
    let issued = tokens.issued.lock().unwrap().clone();
    assert!(
        // The registry lists the actions in either order.
        issued.iter().any(|s| {
            let mut actions: Vec<&str> = s
                .strip_prefix("repository:kiln/tok:")
                .unwrap_or("")
                .split(',')
                .collect();
            actions.sort();
            actions == ["pull", "push"]
        }),
        "{issued:?}"
    );
    assert!(
        issued.iter().any(|s| s == "repository:kiln/tok:pull"),
        "{issued:?}"
    );
    // Tokens are cached: far fewer token requests than registry requests.
    assert!(issued.len() <= 4, "{issued:?}");
    let err = format!(
        "{:#}",
        client_for(&[&reg.host()], Some(("kiln", "bad")))
            .resolve(&r, &Platform::current())
            .unwrap_err()
    );
    assert!(
        err.contains("token server") && err.contains("refused") && !err.contains("bad\""),
        "{err}"
    );
}

#[test]
#[ignore = "root: starts docker-registry with token auth, a token server and a fault proxy"]
fn root_bearer_token_expiring_mid_pull_reauthenticates_on_resume() {
    // Tokens expire 2 s after issue (the registry adds 60 s of leeway to `exp`).
    let tokens = TokenServer::start("kiln", "tok-pw", -58);
    let reg = Registry::start(tokens.auth());
    let img = test_image(4 << 20, Layer0Form::RawDisk);
    let direct = client_for(&[&reg.host()], Some(("kiln", "tok-pw")));
    img.image
        .push(&direct, &reference(&reg.host(), "kiln/tok:v1"))
        .unwrap();
    let proxy = FaultProxy::start(
        reg.port,
        FaultPlan {
            cuts_per_blob: 1,
            ..Default::default()
        },
    );
    let client = client_for(&[&proxy.host()], Some(("kiln", "tok-pw")));
    let r = reference(&proxy.host(), "kiln/tok:v1");
    let resolved = client.resolve(&r, &Platform::current()).unwrap();
    let before = tokens.issued.lock().unwrap().len();
    let l0 = &resolved.layers[0];
    let mut blob = client
        .open_blob(&resolved.reference, &l0.digest, l0.size)
        .unwrap();
    let mut got = vec![0u8; 64 * 1024];
    blob.read_exact(&mut got).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4)); // the token expires
    blob.read_to_end(&mut got)
        .expect("resume after re-authentication");
    assert!(got == std::fs::read(&img.image.layers[0].path).unwrap());
    assert_eq!(blob.progress().snapshot().resumes, 1);
    assert!(
        tokens.issued.lock().unwrap().len() > before,
        "a new token was fetched mid-pull"
    );
}

#[test]
#[ignore = "root: starts docker-registry on 127.0.0.1"]
fn root_index_platform_selection_and_docker_v2_types() {
    use kiln_oci::push::push_manifest;
    let reg = Registry::start(Auth::None);
    let client = client_for(&[&reg.host()], None);
    let raw = test_image(1 << 20, Layer0Form::RawDisk);
    let tar = test_image(1 << 20, Layer0Form::TarWithOneFile);
    let d_raw = raw
        .image
        .push(&client, &reference(&reg.host(), "kiln/multi:raw"))
        .unwrap();
    let d_tar = tar
        .image
        .push(&client, &reference(&reg.host(), "kiln/multi:tar"))
        .unwrap();
    let entry = |d: &kiln_oci::digest::Digest, len: usize, os: &str, arch: &str| {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d.as_str(), "size": len,
            "platform": {"os": os, "architecture": arch}})
    };
    let (lr, lt) = (raw.image.manifest.len(), tar.image.manifest.len());
    for index_type in [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ] {
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": index_type, "manifests": [
            entry(&d_tar, lt, "unknown", "unknown"), entry(&d_tar, lt, "linux", "arm64"), entry(&d_raw, lr, "linux", "amd64")]});
        let r = reference(&reg.host(), "kiln/multi:index");
        push_manifest(&client, &r, index.to_string().as_bytes(), index_type).unwrap();
        let amd = client.resolve(&r, &Platform::current()).unwrap();
        assert_eq!(
            (amd.layer0, amd.reference.digest()),
            (Layer0Form::RawDisk, Some(&d_raw)),
            "{index_type}"
        );
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        assert_eq!(
            client.resolve(&r, &arm).unwrap().layer0,
            Layer0Form::TarWithOneFile,
            "{index_type}"
        );
        let s390 = Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        };
        let err = format!("{:#}", client.resolve(&r, &s390).unwrap_err());
        assert!(
            err.contains("linux/s390x") && err.contains("linux/arm64, linux/amd64"),
            "{err}"
        );
    }
    // The tar-form image as a Docker v2 schema 2 manifest with Docker media types.
    let desc = |b: &kiln_oci::builder::BlobFile, mt: &str| serde_json::json!({"mediaType": mt, "digest": b.digest.as_str(), "size": b.size});
    let v2 = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": desc(&tar.image.config, "application/vnd.docker.container.image.v1+json"),
        "layers": [desc(&tar.image.layers[0], "application/vnd.docker.image.rootfs.diff.tar"),
                   desc(&tar.image.layers[1], "application/vnd.docker.image.rootfs.diff.tar.gzip")],
    });
    let r = reference(&reg.host(), "kiln/multi:docker-v2");
    push_manifest(
        &client,
        &r,
        v2.to_string().as_bytes(),
        "application/vnd.docker.distribution.manifest.v2+json",
    )
    .unwrap();
    pull_and_compare(&client, &r, &tar);
}

#[test]
#[ignore = "root: starts docker-registry with TLS on 127.0.0.1"]
fn root_custom_ca_tls_registry() {
    use kiln_oci::registry::{ClientConfig, HostConfig};
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    let reg = Registry::start_with(Auth::None, Some((&pki.cert, &pki.key)));
    let img = test_image(1 << 20, Layer0Form::RawDisk);
    let r = reference(&reg.host(), "kiln/tls:v1");
    let with_ca = |ca: Option<std::path::PathBuf>| {
        let mut config = ClientConfig::default();
        config.retry.max_attempts = 2;
        config.hosts.insert(
            reg.host(),
            HostConfig {
                ca_file: ca,
                ..Default::default()
            },
        );
        Client::new(config)
    };
    let client = with_ca(Some(pki.ca.clone()));
    img.image
        .push(&client, &r)
        .expect("push over TLS with the custom CA");
    pull_and_compare(&client, &r, &img);
    let err = format!(
        "{:#}",
        with_ca(None).resolve(&r, &Platform::current()).unwrap_err()
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
#[ignore = "root: starts docker-registry with TLS and token auth, and a token server"]
fn root_https_registry_never_sends_credentials_to_a_plain_http_realm() {
    use kiln_oci::registry::{ClientConfig, Credentials, HostConfig, Secret};
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    // The token server's realm is http://127.0.0.1:PORT/token; the registry is HTTPS.
    let tokens = TokenServer::start("kiln", "tok-pw", 3600);
    let reg = Registry::start_with(tokens.auth(), Some((&pki.cert, &pki.key)));
    let r = reference(&reg.host(), "kiln/realm:v1");
    let mut config = ClientConfig::default();
    config.retry.max_attempts = 2;
    config.hosts.insert(
        reg.host(),
        HostConfig {
            ca_file: Some(pki.ca.clone()),
            credentials: Some(Credentials {
                username: "kiln".into(),
                password: Secret::new("tok-pw"),
            }),
            ..Default::default()
        },
    );
    let err = format!(
        "{:#}",
        Client::new(config)
            .resolve(&r, &Platform::current())
            .unwrap_err()
    );
    assert!(err.contains("in clear text"), "{err}");
    assert!(!err.contains("tok-pw"), "{err}");
    let issued = tokens.issued.lock().unwrap().clone();
    assert!(
        issued.is_empty(),
        "the plain-HTTP token server received the credentials: {issued:?}"
    );
}

#[test]
#[ignore = "root: starts docker-registry and two proxies on 127.0.0.1"]
fn root_blob_redirect_to_storage_with_cuts_resumes_through_the_redirect() {
    let reg = Registry::start(Auth::None);
    let img = test_image(4 << 20, Layer0Form::RawDisk);
    img.image
        .push(
            &client_for(&[&reg.host()], None),
            &reference(&reg.host(), "kiln/test:v1"),
        )
        .unwrap();
    // "Blob storage" that cuts every blob 3 times; the registry front redirects blobs there.
    let storage = FaultProxy::start(
        reg.port,
        FaultPlan {
            cuts_per_blob: 3,
            ..Default::default()
        },
    );
    let front = FaultProxy::start(
        reg.port,
        FaultPlan {
            redirect_blobs_to: Some(storage.port),
            ..Default::default()
        },
    );
    let client = client_for(&[&front.host()], None);
    let resumes = pull_and_compare(&client, &reference(&front.host(), "kiln/test:v1"), &img);
    assert!(resumes >= 3 * img.image.layers.len() as u32, "{resumes}");
    assert!(storage.stats(|s| s.cuts) >= 3 * img.image.layers.len() as u32);
}

#[test]
#[ignore = "root: starts docker-registry and a fault proxy on 127.0.0.1"]
fn root_layer_streams_prefetch_next_layer_through_faults() {
    use kiln_oci::pull::LayerStreams;
    let reg = Registry::start(Auth::None);
    let img = test_image(6 << 20, Layer0Form::RawDisk);
    img.image
        .push(
            &client_for(&[&reg.host()], None),
            &reference(&reg.host(), "kiln/test:v1"),
        )
        .unwrap();
    let proxy = FaultProxy::start(
        reg.port,
        FaultPlan {
            cuts_per_blob: 3,
            ..Default::default()
        },
    );
    let client = client_for(&[&proxy.host()], None);
    let resolved = client
        .resolve(
            &reference(&proxy.host(), "kiln/test:v1"),
            &Platform::current(),
        )
        .unwrap();
    let mut seen = 0;
    for (i, item) in LayerStreams::new(&client, &resolved, 2 << 20).enumerate() {
        let (layer, mut stream, progress) = item.unwrap();
        if i == 0 {
            std::thread::sleep(std::time::Duration::from_millis(500)); // layer 1 prefetches meanwhile
        }
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert!(
            got == std::fs::read(&img.image.layers[i].path).unwrap(),
            "layer {i}"
        );
        assert_eq!(progress.snapshot().done, layer.size);
        seen += 1;
    }
    assert_eq!(seen, img.image.layers.len());
}

#[test]
#[ignore = "root: starts docker-registry and a fault proxy on 127.0.0.1"]
fn root_chunked_push_patch_content_range_and_recovery_from_faults() {
    use kiln_oci::push::{UploadMode, push_blob_with, push_manifest};
    let reg = Registry::start(Auth::None);
    // An odd size: the last chunk is short.
    let img = test_image((5 << 20) + 12_345, Layer0Form::RawDisk);
    let chunk = 1u64 << 20;
    let push_via = |proxy: &FaultProxy, repo: &str| {
        let client = client_for(&[&proxy.host()], None);
        let r = reference(&proxy.host(), &format!("{repo}:v1"));
        for b in img.image.layers.iter().chain([&img.image.config]) {
            push_blob_with(&client, &r, &b.path, &b.digest, UploadMode::Chunked(chunk))
                .expect("chunked push");
        }
        push_manifest(
            &client,
            &r,
            &img.image.manifest,
            kiln_oci::builder::MANIFEST_MEDIA_TYPE,
        )
        .unwrap();
    };
    let blobs: Vec<u64> = img
        .image
        .layers
        .iter()
        .chain([&img.image.config])
        .map(|b| b.size)
        .collect();
    let chunks: u32 = blobs.iter().map(|s| s.div_ceil(chunk) as u32).sum();

    // Clean: exactly one PATCH per chunk, one final PUT per blob.
    let clean = FaultProxy::start(reg.port, FaultPlan::default());
    push_via(&clean, "kiln/chunked");
    clean.stats(|s| {
        assert_eq!(
            (s.patches, s.final_puts),
            (chunks, blobs.len() as u32),
            "PATCH per chunk, PUT per blob"
        )
    });
    let direct = client_for(&[&reg.host()], None);
    pull_and_compare(&direct, &reference(&reg.host(), "kiln/chunked:v1"), &img);

    // Faults: 503 then 429 on the first request of every path (POST, each PATCH URL, PUT),
    // and the first PATCH cut after half its body reached the registry.
    let faulty = FaultProxy::start(
        reg.port,
        FaultPlan {
            statuses: vec![503, 429],
            cut_patches: 1,
            ..Default::default()
        },
    );
    push_via(&faulty, "kiln/chunked-faults");
    faulty.stats(|s| {
        assert_eq!(s.patches_cut, 1);
        assert!(s.statuses >= 4, "{} statuses", s.statuses);
        assert!(s.patches > chunks, "{} patches", s.patches);
    });
    pull_and_compare(
        &direct,
        &reference(&reg.host(), "kiln/chunked-faults:v1"),
        &img,
    );
}

#[test]
#[ignore = "root: starts docker-registry (TLS and plain HTTP) and an HTTP proxy on 127.0.0.1"]
fn root_http_proxy_connect_tunnel_absolute_form_no_proxy_and_credentials() {
    use kiln_oci::proxy::ProxyConfig;
    use kiln_oci::registry::{ClientConfig, HostConfig};
    const AUTH: (&str, &str) = ("kiln", "proxy-pw");
    let proxy = HttpProxy::start(Some(AUTH));
    let img = test_image(2 << 20, Layer0Form::RawDisk);

    // HTTPS registry through a CONNECT tunnel (TLS end to end, checked with the custom CA).
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    let tls = Registry::start_with(Auth::None, Some((&pki.cert, &pki.key)));
    let tls_client = |proxy_config: ProxyConfig| {
        let mut config = ClientConfig::default();
        config.retry.max_attempts = 2;
        config.proxy = proxy_config;
        config.hosts.insert(
            tls.host(),
            HostConfig {
                ca_file: Some(pki.ca.clone()),
                ..Default::default()
            },
        );
        Client::new(config)
    };
    let via_proxy = ProxyConfig {
        https: Some(proxy.url(Some(AUTH))),
        http: Some(proxy.url(Some(AUTH))),
        no_proxy: vec![],
    };
    let client = tls_client(via_proxy.clone());
    assert!(!format!("{client:?}").contains("proxy-pw"));
    let r = reference(&tls.host(), "kiln/proxied:v1");
    img.image.push(&client, &r).expect("push through CONNECT");
    pull_and_compare(&client, &r, &img);
    assert!(
        proxy
            .tunnels
            .lock()
            .unwrap()
            .iter()
            .all(|t| *t == tls.host())
            && !proxy.tunnels.lock().unwrap().is_empty(),
        "{:?}",
        proxy.tunnels.lock().unwrap()
    );

    // Plain-HTTP registry through absolute-form requests.
    let plain = Registry::start(Auth::None);
    let mut config = client_for(&[&plain.host()], None).config().clone();
    config.proxy = via_proxy.clone();
    let client = Client::new(config.clone());
    let r = reference(&plain.host(), "kiln/proxied:v1");
    img.image.push(&client, &r).expect("push through the proxy");
    pull_and_compare(&client, &r, &img);
    let forwards = proxy.forwards.lock().unwrap().clone();
    assert!(
        forwards.iter().any(|f| f.starts_with(&format!(
            "GET http://{}/v2/kiln/proxied/blobs/",
            plain.host()
        ))),
        "{forwards:?}"
    );

    // NO_PROXY: straight to the registry, the proxy sees nothing.
    let (t0, f0) = (
        proxy.tunnels.lock().unwrap().len(),
        proxy.forwards.lock().unwrap().len(),
    );
    config.proxy.no_proxy = vec!["127.0.0.1".into()];
    pull_and_compare(&Client::new(config), &r, &img);
    let direct = tls_client(ProxyConfig {
        no_proxy: vec![tls.host()],
        ..via_proxy.clone()
    });
    pull_and_compare(&direct, &reference(&tls.host(), "kiln/proxied:v1"), &img);
    assert_eq!(
        (
            proxy.tunnels.lock().unwrap().len(),
            proxy.forwards.lock().unwrap().len()
        ),
        (t0, f0)
    );

    // Wrong proxy credentials: refused by the proxy, never printed.
    let bad = tls_client(ProxyConfig {
        https: Some(proxy.url(Some(("kiln", "wrong-pw")))),
        ..Default::default()
    });
    let err = format!(
        "{:#}",
        bad.resolve(
            &reference(&tls.host(), "kiln/proxied:v1"),
            &Platform::current()
        )
        .unwrap_err()
    );
    assert!(!err.contains("wrong-pw"), "{err}");
    assert!(err.to_lowercase().contains("proxy"), "{err}");
    assert!(*proxy.refused.lock().unwrap() >= 1);
}
