//! Layers of a resolved image as a sequence of verified streams, the next one downloading on
//! its own thread (bounded buffer) while the current one is consumed. An idle prefetch
//! connection that times out simply resumes with a Range request when reading continues.

use anyhow::Result;

use crate::blob::BlobReader;
use crate::prefetch::{Prefetched, prefetch};
use crate::progress::Progress;
use crate::registry::{Client, Layer, ResolvedImage};

/// Bytes per prefetch chunk.
pub const CHUNK: usize = 1 << 20;

/// Iterator over `(layer, stream, progress)`; see the module docs.
pub struct LayerStreams {
    client: Client,
    image: crate::reference::Reference,
    layers: std::vec::IntoIter<Layer>,
    next: Option<(Layer, Prefetched, Progress)>,
    chunks: usize,
    started: bool,
}

impl LayerStreams {
    /// Streams of `image`'s layers with up to `buffer_bytes` read ahead for the next layer.
    pub fn new(client: &Client, image: &ResolvedImage, buffer_bytes: usize) -> Self {
        Self {
            client: client.clone(),
            image: image.reference.clone(),
            layers: image.layers.clone().into_iter(),
            next: None,
            chunks: (buffer_bytes / CHUNK).max(1),
            started: false,
        }
    }

    fn open(&mut self) -> Result<Option<(Layer, Prefetched, Progress)>> {
        let Some(layer) = self.layers.next() else {
            return Ok(None);
        };
        let blob: BlobReader = self
            .client
            .open_blob(&self.image, &layer.digest, layer.size)?;
        let progress = blob.progress();
        Ok(Some((layer, prefetch(blob, CHUNK, self.chunks), progress)))
    }
}

impl Iterator for LayerStreams {
    type Item = Result<(Layer, Prefetched, Progress)>;

    fn next(&mut self) -> Option<Self::Item> {
        let current = if self.started {
            self.next.take()
        } else {
            self.started = true;
            match self.open() {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            }
        };
        let current = current?;
        // Start the following layer now, so it downloads while this one is consumed.
        match self.open() {
            Ok(n) => self.next = n,
            Err(e) => {
                self.layers = Vec::new().into_iter();
                return Some(Err(e));
            }
        }
        Some(Ok(current))
    }
}
