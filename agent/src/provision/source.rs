//! Layers from a registry: resolve an image reference for this machine's platform with
//! kiln-oci, turn the image's Kiln settings (annotations / config labels, see
//! docs/image-format.md) into the engine's types, and hand the engine kiln-oci's verified,
//! resumable, prefetching layer streams.
//!
//! Every stream is a [`kiln_oci::blob::BlobReader`] behind kiln-oci's prefetch thread: EOF
//! only after the sha256 matched, so the engine's "EOF == verified" contract holds. Each
//! stream is wrapped in [`Announce`], which reports the verified pull (bytes, rate,
//! resumes) as a typed [`Event`] when EOF arrives.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

use anyhow::{Context, Result};
use kiln_oci::format::{Filesystem, Platform, RootPartition};
use kiln_oci::progress::Progress as PullProgress;
use kiln_oci::pull::LayerStreams;
use kiln_oci::reference::Reference;
use kiln_oci::registry::{Client, ClientConfig, HostConfig, ResolvedImage};

use super::events::{Event, Phase, human_bytes};
use super::gpt::RootChoice;
use super::rootfs::FsType;
use super::run::LayerInput;

/// Bytes read ahead for the next layer while the current one is consumed.
pub const PREFETCH_BYTES: usize = 16 << 20;

/// A thread-safe event sink (the verified-pull reports come from reader threads).
pub type Sink = Arc<dyn Fn(Event) + Send + Sync>;

/// A registry client; `insecure` lists `host:port` registries spoken to over plain HTTP.
pub fn client(insecure: &[String]) -> Client {
    let hosts: HashMap<String, HostConfig> = insecure
        .iter()
        .map(|h| {
            (
                h.clone(),
                HostConfig {
                    plain_http: true,
                    ..HostConfig::default()
                },
            )
        })
        .collect();
    Client::new(ClientConfig {
        hosts,
        ..ClientConfig::default()
    })
}

/// Resolves `reference` (through an index if needed) for this machine's platform.
pub fn resolve(client: &Client, reference: &str) -> Result<ResolvedImage> {
    let r: Reference = reference
        .parse()
        .with_context(|| format!("image reference {reference:?}"))?;
    let platform = Platform::current();
    client
        .resolve(&r, &platform)
        .with_context(|| format!("resolving {r} for {platform}"))
}

/// The engine's root choice for the image's setting.
pub fn root_choice(p: &RootPartition) -> RootChoice {
    match p {
        RootPartition::Default => RootChoice::Default,
        RootPartition::Number(n) => RootChoice::Number(*n),
        RootPartition::Name(n) => RootChoice::Name(n.clone()),
    }
}

/// The engine's filesystem type for the image's setting.
pub fn fs_type(f: Filesystem) -> FsType {
    match f {
        Filesystem::Ext4 => FsType::Ext4,
        Filesystem::Xfs => FsType::Xfs,
        Filesystem::Btrfs => FsType::Btrfs,
    }
}

/// A second, throw-away stream of layer 0 from its first byte, for peeking at its GPT
/// before the disk is chosen (only the first blocks are read; dropping it closes it).
pub fn peek_layer0(client: &Client, image: &ResolvedImage) -> Result<Box<dyn Read + Send>> {
    let l = image.layers.first().context("the image has no layers")?;
    let blob = client
        .open_blob(&image.reference, &l.digest, l.size)
        .with_context(|| format!("opening layer 0 {} of {}", l.digest, image.reference))?;
    Ok(Box::new(blob))
}

/// Layer 0 and an iterator over layers 1+, as verified streams; the next layer downloads
/// (up to [`PREFETCH_BYTES`]) while the current one is consumed.
pub fn layers(
    client: &Client,
    image: &ResolvedImage,
    sink: Sink,
) -> Result<(LayerInput, impl Iterator<Item = Result<LayerInput>> + use<>)> {
    let count = image.layers.len();
    let mut streams = LayerStreams::new(client, image, PREFETCH_BYTES)
        .enumerate()
        .map(move |(i, s)| {
            let (layer, reader, progress) = s?;
            let phase = if i == 0 {
                Phase::Layer0
            } else {
                Phase::Extract
            };
            sink(Event {
                phase,
                done: 0,
                total: Some(layer.size),
                rate: None,
                message: format!("pulling layer {}/{count} {}", i + 1, layer.digest),
            });
            let label = layer.digest.to_string();
            Ok(LayerInput {
                reader: Box::new(Announce {
                    inner: reader,
                    progress,
                    phase,
                    label: label.clone(),
                    sink: sink.clone(),
                    done: false,
                }),
                size: Some(layer.size),
                label,
            })
        });
    let first = streams
        .next()
        .context("the image has no layers")?
        .with_context(|| format!("opening layer 0 of {}", image.reference))?;
    Ok((first, streams))
}

/// Reports a stream's verified end (bytes, rate, resumes) once, when EOF arrives.
pub struct Announce<R> {
    inner: R,
    progress: PullProgress,
    phase: Phase,
    label: String,
    sink: Sink,
    done: bool,
}

impl<R: Read> Read for Announce<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let s = self.progress.snapshot();
            (self.sink)(Event {
                phase: self.phase,
                done: s.done,
                total: Some(s.total),
                rate: Some(s.rate),
                message: format!(
                    "{} pulled and verified ({}, {} resume{})",
                    self.label,
                    human_bytes(s.done),
                    s.resumes,
                    if s.resumes == 1 { "" } else { "s" }
                ),
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn settings_map_onto_engine_types() {
        assert_eq!(root_choice(&RootPartition::Default), RootChoice::Default);
        assert_eq!(
            root_choice(&RootPartition::Number(3)),
            RootChoice::Number(3)
        );
        assert_eq!(
            root_choice(&RootPartition::Name("root".into())),
            RootChoice::Name("root".into())
        );
        for (f, want) in [
            (Filesystem::Ext4, "ext4"),
            (Filesystem::Xfs, "xfs"),
            (Filesystem::Btrfs, "btrfs"),
        ] {
            assert_eq!(fs_type(f).name(), want);
            assert_eq!(f.to_string(), want);
        }
    }

    #[test]
    fn plain_http_only_for_named_hosts() {
        let c = client(&["10.0.2.100:5000".into()]);
        let ep = |r: &str| c.endpoints(&r.parse().unwrap())[0].scheme;
        assert_eq!(ep("10.0.2.100:5000/kiln/test:latest"), "http");
        assert_eq!(ep("10.0.2.100:5001/kiln/test:latest"), "https");
        assert_eq!(ep("ghcr.io/kiln/test:latest"), "https");
    }

    #[test]
    fn announce_reports_once_at_eof_and_passes_errors() {
        let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
        let s = seen.clone();
        let sink: Sink = Arc::new(move |e| s.lock().unwrap().push(e));
        let progress = PullProgress::new(5);
        progress.add(5);
        let mut a = Announce {
            inner: io::Cursor::new(b"hello".to_vec()),
            progress,
            phase: Phase::Extract,
            label: "sha256:ab".into(),
            sink: sink.clone(),
            done: false,
        };
        let mut out = Vec::new();
        a.read_to_end(&mut out).unwrap();
        assert_eq!(a.read(&mut [0u8; 4]).unwrap(), 0);
        assert_eq!(out, b"hello");
        let seen_now = seen.lock().unwrap().clone();
        assert_eq!(seen_now.len(), 1, "{seen_now:?}");
        assert_eq!(seen_now[0].done, 5);
        assert!(
            seen_now[0]
                .to_string()
                .contains("sha256:ab pulled and verified (5 B, 0 resumes)"),
            "{}",
            seen_now[0]
        );

        // A failing stream (digest mismatch) is an error, never reported as verified.
        struct Bad;
        impl Read for Bad {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "digest mismatch",
                ))
            }
        }
        let mut b = Announce {
            inner: Bad,
            progress: PullProgress::new(1),
            phase: Phase::Layer0,
            label: "x".into(),
            sink,
            done: false,
        };
        assert!(b.read_to_end(&mut Vec::new()).is_err());
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
