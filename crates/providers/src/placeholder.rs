//! A deterministic picture from a prompt: a diagonal gradient between two colours taken from
//! the prompt's SHA-256, with a band pattern whose period also comes from the hash.

use sha2::{Digest, Sha256};

/// The longest side of a placeholder image, in pixels.
const LONG_SIDE: u32 = 512;

/// Width and height for `w:h`, exactly in that ratio, the longer side at most 512.
pub fn dimensions(ratio: &str) -> Option<(u32, u32)> {
    let (a, b) = ratio.split_once(':')?;
    let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
    if a == 0 || b == 0 || a > LONG_SIDE || b > LONG_SIDE {
        return None;
    }
    let k = LONG_SIDE / a.max(b);
    Some((a * k, b * k))
}

/// Encodes the picture for `prompt` as an RGB PNG of `w`×`h`.
pub fn render(prompt: &str, w: u32, h: u32) -> Result<Vec<u8>, png::EncodingError> {
    let d = Sha256::digest(prompt.as_bytes());
    let (c1, c2) = ([d[0], d[1], d[2]], [d[3], d[4], d[5]]);
    let period = 8 + u32::from(d[6] % 56);
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    let span = (w + h).max(2) - 2;
    for y in 0..h {
        for x in 0..w {
            let t = (x + y) * 255 / span.max(1);
            let band = ((x / period) + (y / period)) % 2 == 0;
            for ch in 0..3 {
                let v = (u32::from(c1[ch]) * (255 - t) + u32::from(c2[ch]) * t) / 255;
                let v = if band { v } else { v * 7 / 8 };
                pixels.push(v as u8);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_keep_the_exact_ratio() {
        for (r, (a, b)) in [
            ("1:1", (1, 1)),
            ("16:9", (16, 9)),
            ("21:9", (21, 9)),
            ("2:3", (2, 3)),
            ("9:16", (9, 16)),
        ] {
            let (w, h) = dimensions(r).unwrap();
            assert_eq!(w * b, h * a, "{r}");
            assert!(
                w.max(h) <= LONG_SIDE && w.max(h) > LONG_SIDE - 30,
                "{r}: {w}x{h}"
            );
        }
        assert!(dimensions("0:1").is_none());
        assert!(dimensions("x").is_none());
    }

    #[test]
    fn the_same_prompt_gives_the_same_png() {
        let a = render("a red fox", 64, 36).unwrap();
        assert_eq!(a, render("a red fox", 64, 36).unwrap());
        assert_ne!(a, render("a blue fox", 64, 36).unwrap());
        let dec = png::Decoder::new(std::io::Cursor::new(a))
            .read_info()
            .unwrap();
        assert_eq!((dec.info().width, dec.info().height), (64, 36));
    }
}
