//! A tiny MP4 writer for the simulator's videos: H.264 in an ISO BMFF file, made without an
//! encoder library or a new dependency.
//!
//! Every macroblock is coded as I_PCM (`h264.rs`): a 9-bit macroblock type, then the raw
//! samples. That needs no transform, no prediction and no entropy coding, so the encoder stays
//! a few hundred lines, and the stream is lossless: a decoder shows exactly the samples written
//! (the tests rely on that). The price is size, 384 bytes per 16×16 block, which is why the
//! frames are small and few. This file sizes the frames and writes the boxes around them.
//!
//! References: ITU-T H.264 (7.3: parameter sets, slice header, macroblock layer; Annex B:
//! emulation prevention), ISO/IEC 14496-12 (the boxes) and 14496-15 (`avcC`).

mod h264;

use h264::{CONSTRAINT_FLAGS, LEVEL_IDC, PROFILE_IDC};

/// The shorter side of a frame is taken from this range (even, with the exact ratio when one
/// fits): big enough to see, small enough to keep the file a few hundred kB.
const SHORT_MIN: u32 = 144;
const SHORT_MAX: u32 = 240;
/// The longer side never exceeds this; more extreme ratios get a shorter short side.
const LONG_MAX: u32 = 432;

/// Ticks per second of the movie and of the track: milliseconds.
const TIMESCALE: u32 = 1000;

/// Frame size for an aspect ratio `a:b` (e.g. 16, 9): both sides even, the shorter side
/// between 144 and 240 with the exact ratio when one fits (16:9 gives 256×144, 21:9 336×144),
/// the nearest even size otherwise.
pub fn frame_size(a: u32, b: u32) -> (u32, u32) {
    let (a, b) = (a.max(1), b.max(1));
    let g = gcd(a, b);
    let (long, short) = ((a / g).max(b / g), (a / g).min(b / g));
    let exact = (SHORT_MIN..=SHORT_MAX)
        .step_by(2)
        .filter(|s| s.is_multiple_of(short))
        .map(|s| (s / short * long, s))
        .find(|(l, _)| l.is_multiple_of(2) && *l <= LONG_MAX);
    let (l, s) = exact.unwrap_or_else(|| {
        let l = round_even(u64::from(SHORT_MIN) * u64::from(long), u64::from(short));
        if l <= LONG_MAX {
            (l, SHORT_MIN)
        } else {
            let s = round_even(u64::from(LONG_MAX) * u64::from(short), u64::from(long));
            (LONG_MAX, s.max(16))
        }
    });
    if a >= b { (l, s) } else { (s, l) }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `num / den` rounded to the nearest even number.
fn round_even(num: u64, den: u64) -> u32 {
    u32::try_from((num + den) / (2 * den) * 2).unwrap_or(u32::MAX - 1)
}

/// Encodes `frames` pictures of `width`×`height` (rounded down to even sizes, at least 2) into
/// an MP4 lasting `duration_ms`, the frames evenly spread over it. `pixel(frame, x, y)` gives
/// the RGB colour of each pixel.
pub fn encode(
    width: u32,
    height: u32,
    frames: usize,
    duration_ms: u32,
    pixel: impl Fn(usize, u32, u32) -> [u8; 3],
) -> Vec<u8> {
    let (w, h) = (width.max(2) & !1, height.max(2) & !1);
    let frames = frames.max(1);
    let duration_ms = duration_ms.max(1);
    let (sps, pps) = h264::parameter_sets(w, h);
    let samples: Vec<Vec<u8>> = (0..frames)
        .map(|f| {
            let slice = h264::frame(w, h, (f % 2) as u32, |x, y| pixel(f, x, y));
            // In MP4 each NAL unit is prefixed by its length (4 bytes, as `avcC` says).
            let mut sample = (slice.len() as u32).to_be_bytes().to_vec();
            sample.extend_from_slice(&slice);
            sample
        })
        .collect();
    let deltas: Vec<u32> = (0..frames as u64)
        .map(|i| {
            let at = |k: u64| (u64::from(duration_ms) * k / frames as u64) as u32;
            at(i + 1) - at(i)
        })
        .collect();
    let track = Track {
        width: w,
        height: h,
        duration: duration_ms,
        sps,
        pps,
        sizes: samples.iter().map(|s| s.len() as u32).collect(),
        deltas,
    };
    // The moov box goes first ("fast start") so a browser can play while downloading. Its
    // size does not depend on the chunk offset it holds, so build it once to learn the size.
    let ftyp = ftyp();
    let moov_len = moov(&track, 0).len();
    let mdat_payload = ftyp.len() + moov_len + 8;
    let mut out = ftyp;
    out.extend(moov(&track, mdat_payload as u32));
    let mdat: Vec<u8> = samples.concat();
    out.extend(mp4_box(b"mdat", &mdat));
    out
}

/// What the `moov` box describes: one video track whose samples sit in one chunk.
struct Track {
    width: u32,
    height: u32,
    duration: u32,
    sps: Vec<u8>,
    pps: Vec<u8>,
    sizes: Vec<u32>,
    deltas: Vec<u32>,
}

/// Big-endian writing of box fields.
#[derive(Default)]
struct Fields(Vec<u8>);

impl Fields {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    /// The version and flags that start a "full box".
    fn full(version: u8, flags: u32) -> Self {
        Self::default().u32(u32::from(version) << 24 | flags)
    }
    /// The identity transformation matrix of `mvhd` and `tkhd`.
    fn matrix(self) -> Self {
        [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000]
            .iter()
            .fold(self, |f, &v| f.u32(v))
    }
}

/// A box: its size, its four-letter type, its payload.
fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32 + 8).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
    out
}

fn ftyp() -> Vec<u8> {
    let f = Fields::default().bytes(b"isom").u32(0x200);
    mp4_box(b"ftyp", &f.bytes(b"isomiso2avc1mp41").0)
}

fn moov(t: &Track, chunk_offset: u32) -> Vec<u8> {
    let mvhd = Fields::full(0, 0)
        .u32(0) // creation_time
        .u32(0) // modification_time
        .u32(TIMESCALE)
        .u32(t.duration)
        .u32(0x0001_0000) // rate 1.0
        .u16(0x0100) // volume 1.0
        .bytes(&[0; 10])
        .matrix()
        .bytes(&[0; 24]) // pre_defined
        .u32(2); // next_track_ID
    let tkhd = Fields::full(0, 0b11) // enabled, in the movie
        .u32(0)
        .u32(0)
        .u32(1) // track_ID
        .u32(0)
        .u32(t.duration)
        .bytes(&[0; 8])
        .u16(0) // layer
        .u16(0) // alternate_group
        .u16(0) // volume: not audio
        .u16(0)
        .matrix()
        .u32(t.width << 16) // 16.16 fixed point
        .u32(t.height << 16);
    let mdhd = Fields::full(0, 0)
        .u32(0)
        .u32(0)
        .u32(TIMESCALE)
        .u32(t.duration)
        .u16(0x55c4) // language "und", three 5-bit letters
        .u16(0);
    let hdlr = Fields::full(0, 0)
        .u32(0)
        .bytes(b"vide")
        .bytes(&[0; 12])
        .bytes(b"VideoHandler\0");
    let vmhd = Fields::full(0, 1).u16(0).bytes(&[0; 6]);
    let dref = Fields::full(0, 0)
        .u32(1)
        .bytes(&mp4_box(b"url ", &Fields::full(0, 1).0)); // data in this file
    let dinf = mp4_box(b"dinf", &mp4_box(b"dref", &dref.0));
    let stbl = [
        mp4_box(b"stsd", &stsd(t)),
        mp4_box(b"stts", &stts(&t.deltas)),
        mp4_box(b"stss", &stss(t.sizes.len() as u32)),
        mp4_box(b"stsc", &stsc(t.sizes.len() as u32)),
        mp4_box(b"stsz", &stsz(&t.sizes)),
        mp4_box(b"stco", &Fields::full(0, 0).u32(1).u32(chunk_offset).0),
    ]
    .concat();
    let minf = [mp4_box(b"vmhd", &vmhd.0), dinf, mp4_box(b"stbl", &stbl)].concat();
    let mdia = [
        mp4_box(b"mdhd", &mdhd.0),
        mp4_box(b"hdlr", &hdlr.0),
        mp4_box(b"minf", &minf),
    ]
    .concat();
    let trak = [mp4_box(b"tkhd", &tkhd.0), mp4_box(b"mdia", &mdia)].concat();
    mp4_box(
        b"moov",
        &[mp4_box(b"mvhd", &mvhd.0), mp4_box(b"trak", &trak)].concat(),
    )
}

/// The sample description: an `avc1` entry carrying the parameter sets in `avcC`.
fn stsd(t: &Track) -> Vec<u8> {
    let mut name = [0u8; 32]; // compressorname: a length byte, then the name
    let label = b"Runbase test mode";
    name[0] = label.len() as u8;
    name[1..=label.len()].copy_from_slice(label);
    let avcc = Fields::default()
        .u8(1) // configurationVersion
        .u8(PROFILE_IDC)
        .u8(CONSTRAINT_FLAGS)
        .u8(LEVEL_IDC)
        .u8(0xfc | 3) // lengthSizeMinusOne: 4-byte NAL lengths
        .u8(0xe0 | 1) // one SPS
        .u16(t.sps.len() as u16)
        .bytes(&t.sps)
        .u8(1) // one PPS
        .u16(t.pps.len() as u16)
        .bytes(&t.pps);
    let avc1 = Fields::default()
        .bytes(&[0; 6])
        .u16(1) // data_reference_index
        .bytes(&[0; 16])
        .u16(t.width as u16)
        .u16(t.height as u16)
        .u32(0x0048_0000) // 72 dpi
        .u32(0x0048_0000)
        .u32(0)
        .u16(1) // frame_count: one frame per sample
        .bytes(&name)
        .u16(0x0018) // depth: colour
        .u16(0xffff) // pre_defined -1
        .bytes(&mp4_box(b"avcC", &avcc.0));
    Fields::full(0, 0)
        .u32(1)
        .bytes(&mp4_box(b"avc1", &avc1.0))
        .0
}

/// Decoding times: runs of equal sample durations.
fn stts(deltas: &[u32]) -> Vec<u8> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &d in deltas {
        match runs.last_mut() {
            Some((n, last)) if *last == d => *n += 1,
            _ => runs.push((1, d)),
        }
    }
    runs.iter()
        .fold(Fields::full(0, 0).u32(runs.len() as u32), |f, &(n, d)| {
            f.u32(n).u32(d)
        })
        .0
}

/// Sync samples: every frame is an IDR picture, so each one is a seek point.
fn stss(count: u32) -> Vec<u8> {
    (1..=count)
        .fold(Fields::full(0, 0).u32(count), |f, i| f.u32(i))
        .0
}

/// Sample-to-chunk: all samples in chunk 1.
fn stsc(count: u32) -> Vec<u8> {
    Fields::full(0, 0).u32(1).u32(1).u32(count).u32(1).0
}

fn stsz(sizes: &[u32]) -> Vec<u8> {
    sizes
        .iter()
        .fold(
            Fields::full(0, 0).u32(0).u32(sizes.len() as u32),
            |f, &s| f.u32(s),
        )
        .0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::h264::tests::sps_size;
    use super::*;

    /// The ratios the video models take.
    const RATIOS: [(u32, u32); 7] = [(16, 9), (9, 16), (4, 3), (3, 4), (1, 1), (21, 9), (3, 2)];

    fn be16(d: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([d[at], d[at + 1]])
    }

    fn be32(d: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
    }

    /// The boxes in `data`, as (type, payload).
    fn children(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let size = be32(rest, 0) as usize;
            assert!((8..=rest.len()).contains(&size), "a box of {size} bytes");
            out.push(([rest[4], rest[5], rest[6], rest[7]], &rest[8..size]));
            rest = &rest[size..];
        }
        out
    }

    /// The payload of the only box at `path`, e.g. `moov/trak/tkhd`.
    fn find<'a>(data: &'a [u8], path: &str) -> &'a [u8] {
        path.split('/').fold(data, |d, name| {
            let found: Vec<_> = children(d)
                .into_iter()
                .filter(|(k, _)| k == name.as_bytes())
                .collect();
            assert_eq!(found.len(), 1, "{name} in {path}");
            found[0].1
        })
    }

    /// The payload of the `avc1` sample entry.
    fn avc1(mp4: &[u8]) -> &[u8] {
        let stsd = find(mp4, "moov/trak/mdia/minf/stbl/stsd");
        assert_eq!(be32(stsd, 4), 1, "one sample entry");
        let entries = children(&stsd[8..]);
        assert_eq!(&entries[0].0, b"avc1");
        entries[0].1
    }

    /// The size an MP4 made here declares, checking that the track header, the sample entry
    /// and the SPS agree.
    pub(crate) fn declared_size(mp4: &[u8]) -> (u32, u32) {
        let tkhd = find(mp4, "moov/trak/tkhd");
        let size = (be32(tkhd, 76) >> 16, be32(tkhd, 80) >> 16);
        let avc1 = avc1(mp4);
        let entry = (u32::from(be16(avc1, 24)), u32::from(be16(avc1, 26)));
        let avcc = find(&avc1[78..], "avcC");
        assert_eq!(avcc[5] & 0x1f, 1, "one SPS");
        let sps = &avcc[8..8 + usize::from(be16(avcc, 6))];
        assert_eq!((entry, sps_size(sps)), (size, size), "tkhd, avc1 and SPS");
        size
    }

    fn test_pixel(f: usize, x: u32, y: u32) -> [u8; 3] {
        [(x * 2) as u8, (y * 3) as u8, (f * 60) as u8]
    }

    #[test]
    fn frame_sizes_keep_the_ratio() {
        for (a, b) in RATIOS {
            let (w, h) = frame_size(a, b);
            assert_eq!(w * b, h * a, "{a}:{b} gave {w}x{h}");
            assert!(
                w.is_multiple_of(2) && h.is_multiple_of(2),
                "{a}:{b} gave {w}x{h}"
            );
            assert!(
                (SHORT_MIN..=SHORT_MAX).contains(&w.min(h)),
                "{a}:{b}: {w}x{h}"
            );
        }
        assert_eq!(frame_size(16, 9), (256, 144));
        assert_eq!(frame_size(512, 288), (256, 144));
        assert_eq!(frame_size(7, 5), (210, 150));
        // No exact fit: the nearest even sizes.
        assert_eq!(frame_size(239, 100), (344, 144));
        assert_eq!(frame_size(1, 512), (16, 432));
    }

    #[test]
    fn the_boxes_declare_the_frame_size() {
        for (a, b) in RATIOS {
            let (w, h) = frame_size(a, b);
            let mp4 = encode(w, h, 4, 1000, test_pixel);
            let top: Vec<[u8; 4]> = children(&mp4).iter().map(|(k, _)| *k).collect();
            assert_eq!(top, [*b"ftyp", *b"moov", *b"mdat"], "moov first");
            assert_eq!(declared_size(&mp4), (w, h), "{a}:{b}");
            assert!(mp4.len() < 400_000, "{a}:{b}: {} bytes", mp4.len());
        }
    }

    #[test]
    fn the_tables_point_at_the_samples() {
        let frames = 3;
        let mp4 = encode(100, 60, frames, 2500, test_pixel);
        let mvhd = find(&mp4, "moov/mvhd");
        assert_eq!((be32(mvhd, 12), be32(mvhd, 16)), (TIMESCALE, 2500));
        let stbl = find(&mp4, "moov/trak/mdia/minf/stbl");
        let stts = find(stbl, "stts");
        let (mut count, mut total) = (0, 0);
        for e in 0..be32(stts, 4) as usize {
            let (n, d) = (be32(stts, 8 + 8 * e), be32(stts, 12 + 8 * e));
            (count, total) = (count + n, total + n * d);
        }
        assert_eq!((count, total), (frames as u32, 2500));
        let stsz = find(stbl, "stsz");
        assert_eq!(be32(stsz, 8), frames as u32);
        let sizes: Vec<usize> = (0..frames)
            .map(|i| be32(stsz, 12 + 4 * i) as usize)
            .collect();
        let stco = find(stbl, "stco");
        assert_eq!(be32(stco, 4), 1, "one chunk");
        let mdat = find(&mp4, "mdat");
        assert_eq!(
            be32(stco, 8) as usize,
            mp4.len() - mdat.len(),
            "chunk offset"
        );
        assert_eq!(sizes.iter().sum::<usize>(), mdat.len());
        let mut at = 0;
        for size in sizes {
            let sample = &mdat[at..at + size];
            assert_eq!(be32(sample, 0) as usize, size - 4, "NAL length prefix");
            assert_eq!(sample[4], 0x65, "an IDR slice");
            at += size;
        }
    }

    /// Decodes an MP4 with FFmpeg's decoder through PyAV; prints the stream's size and
    /// duration and, for each frame, its size and luma plane (base64, without line padding).
    const DECODE: &str = r#"
import av, base64, io, json, sys
with av.open(io.BytesIO(sys.stdin.buffer.read()), format="mp4") as c:
    s = c.streams.video[0]
    out = {"codec": s.codec_context.name, "width": s.codec_context.width,
           "height": s.codec_context.height,
           "duration_ms": round(float(s.duration * s.time_base) * 1000), "frames": []}
    for f in c.decode(s):
        p = f.planes[0]
        data = bytes(p)
        y = b"".join(data[r * p.line_size : r * p.line_size + f.width] for r in range(f.height))
        out["frames"].append({"format": f.format.name, "width": f.width, "height": f.height,
                              "y": base64.b64encode(y).decode()})
print(json.dumps(out))
"#;

    /// A Python with PyAV, from `RUNBASE_TEST_PYAV_PYTHON` (.ci/run installs one). Without it
    /// the test is skipped (with a message) outside CI and fails under CI.
    fn pyav() -> Option<String> {
        match std::env::var("RUNBASE_TEST_PYAV_PYTHON") {
            Ok(p) if !p.is_empty() => Some(p),
            _ => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(
                    !ci,
                    "RUNBASE_TEST_PYAV_PYTHON must be set under CI (.ci/run installs PyAV)"
                );
                eprintln!(
                    "skipped: set RUNBASE_TEST_PYAV_PYTHON to a Python with PyAV (`pip install av`) to decode the video"
                );
                None
            }
        }
    }

    #[test]
    fn ffmpeg_decodes_the_exact_pictures() {
        use base64::Engine;
        use std::io::Write;
        use std::process::{Command, Stdio};
        let Some(python) = pyav() else { return };
        for (a, b) in RATIOS {
            let (w, h) = frame_size(a, b);
            let mp4 = encode(w, h, 4, 1000, test_pixel);
            let mut child = Command::new(&python)
                .args(["-c", DECODE])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&mp4).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "PyAV failed on {a}:{b}");
            let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(got["codec"], "h264");
            assert_eq!(
                (got["width"].as_u64(), got["height"].as_u64()),
                (Some(w.into()), Some(h.into())),
                "{a}:{b}"
            );
            assert_eq!(got["duration_ms"], 1000);
            let frames = got["frames"].as_array().unwrap();
            assert_eq!(frames.len(), 4, "{a}:{b}");
            for (f, frame) in frames.iter().enumerate() {
                assert_eq!(frame["format"], "yuv420p");
                assert_eq!(
                    (frame["width"].as_u64(), frame["height"].as_u64()),
                    (Some(w.into()), Some(h.into()))
                );
                let y = base64::engine::general_purpose::STANDARD
                    .decode(frame["y"].as_str().unwrap())
                    .unwrap();
                let want: Vec<u8> = (0..h)
                    .flat_map(|y| (0..w).map(move |x| h264::luma(test_pixel(f, x, y))))
                    .collect();
                assert!(y == want, "{a}:{b} frame {f}: the decoded luma differs");
            }
        }
    }
}
