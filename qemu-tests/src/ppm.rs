//! Reading the binary PPM (P6) screendumps QEMU writes, to tell a blank screen from one
//! with something on it.

use anyhow::{Result, bail};

/// Width, height and RGB pixels of a P6 image.
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Parses a P6 PPM with maxval 255.
pub fn parse(data: &[u8]) -> Result<Image> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < data.len() && data[i].is_ascii_whitespace() {
            i += 1;
        }
        if data.get(i) == Some(&b'#') {
            while i < data.len() && data[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < data.len() && !data[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            bail!("truncated PPM header");
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).into_owned());
    }
    i += 1; // the single whitespace after maxval
    if fields[0] != "P6" || fields[3] != "255" {
        bail!("not a P6/255 PPM: {fields:?}");
    }
    let width: usize = fields[1].parse()?;
    let height: usize = fields[2].parse()?;
    let rgb = data.get(i..i + width * height * 3).map(<[u8]>::to_vec);
    let Some(rgb) = rgb else {
        bail!("PPM pixel data shorter than {width}x{height}");
    };
    Ok(Image { width, height, rgb })
}

impl Image {
    /// Number of pixels that differ from the most common (background) colour.
    pub fn non_background_pixels(&self) -> usize {
        let mut counts = std::collections::HashMap::new();
        for px in self.rgb.chunks_exact(3) {
            *counts.entry(px).or_insert(0usize) += 1;
        }
        let background = counts.values().copied().max().unwrap_or(0);
        self.width * self.height - background
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(w: usize, h: usize, px: &[[u8; 3]]) -> Vec<u8> {
        let mut v = format!("P6\n# by test\n{w} {h}\n255\n").into_bytes();
        for p in px {
            v.extend_from_slice(p);
        }
        v
    }

    #[test]
    fn blank_and_not_blank() {
        let blank = parse(&ppm(2, 2, &[[0, 0, 0]; 4])).unwrap();
        assert_eq!(blank.non_background_pixels(), 0);
        let text = parse(&ppm(
            2,
            2,
            &[[0, 0, 0], [170, 170, 170], [0, 0, 0], [0, 0, 0]],
        ))
        .unwrap();
        assert_eq!(text.non_background_pixels(), 1);
    }

    #[test]
    fn bad_input() {
        assert!(parse(b"P3\n1 1\n255\n000").is_err());
        assert!(parse(&ppm(2, 2, &[[0, 0, 0]; 3])).is_err());
        assert!(parse(b"P6\n").is_err());
    }
}
