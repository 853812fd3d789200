//! A tiny MP4 writer for the simulator's videos: H.264 in an ISO BMFF file, made without an
//! encoder library.
//!
//! Every macroblock is coded as I_PCM: a 9-bit macroblock type, then the raw samples. That
//! needs no transform, no prediction and no entropy coding, so the whole encoder fits in this
//! file, and the stream is lossless: a decoder shows exactly the samples written here (the
//! tests rely on that). The price is size, 384 bytes per 16×16 block, which is why the frames
//! are small and few.
//!
//! References: ITU-T H.264 (7.3: parameter sets, slice header, macroblock layer; Annex B:
//! emulation prevention), ISO/IEC 14496-12 (the boxes) and 14496-15 (`avcC`).

/// The shorter side of a frame is taken from this range (even, with the exact ratio when one
/// fits): big enough to see, small enough to keep the file a few hundred kB.
const SHORT_MIN: u32 = 144;
const SHORT_MAX: u32 = 240;
/// The longer side never exceeds this; more extreme ratios get a shorter short side.
const LONG_MAX: u32 = 432;

/// Constrained Baseline profile at level 3.0: what every decoder (browsers included) plays.
/// Level 3.0 allows 1620 macroblocks a frame and 10 Mbit/s; our frames have at most 243.
const PROFILE_IDC: u8 = 66;
const CONSTRAINT_FLAGS: u8 = 0b1100_0000;
const LEVEL_IDC: u8 = 30;

/// `mb_type` of an I_PCM macroblock in an I slice.
const MB_TYPE_I_PCM: u32 = 25;

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
        .filter(|s| s % short == 0)
        .map(|s| (s / short * long, s))
        .find(|(l, _)| l % 2 == 0 && *l <= LONG_MAX);
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
    let (mbs_w, mbs_h) = (w.div_ceil(16), h.div_ceil(16));
    let sps = nal(0x67, &sps(mbs_w, mbs_h, mbs_w * 16 - w, mbs_h * 16 - h));
    let pps = nal(0x68, &pps());
    let samples: Vec<Vec<u8>> = (0..frames)
        .map(|f| {
            let picture = Picture::paint(mbs_w * 16, mbs_h * 16, |x, y| {
                // The padding right and below the visible frame repeats its edge; it is
                // cropped away by the decoder.
                pixel(f, x.min(w - 1), y.min(h - 1))
            });
            // Adjacent IDR pictures must differ in idr_pic_id (7.4.3).
            let slice = nal(0x65, &idr_slice(&picture, (f % 2) as u32));
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

/// One frame in Y'CbCr 4:2:0 (BT.601, limited range), sized in whole macroblocks.
struct Picture {
    width: u32,
    y: Vec<u8>,
    cb: Vec<u8>,
    cr: Vec<u8>,
}

impl Picture {
    fn paint(width: u32, height: u32, rgb: impl Fn(u32, u32) -> [u8; 3]) -> Self {
        let rgb: Vec<[u8; 3]> = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| rgb(x, y))
            .collect();
        let y = rgb.iter().map(|&p| luma(p)).collect();
        let (mut cb, mut cr) = (Vec::new(), Vec::new());
        for cy in 0..height / 2 {
            for cx in 0..width / 2 {
                // Chroma is the average of the 2×2 pixels it covers.
                let mut sum = [0u32; 3];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = rgb[((2 * cy + dy) * width + 2 * cx + dx) as usize];
                    for ch in 0..3 {
                        sum[ch] += u32::from(p[ch]);
                    }
                }
                let avg = sum.map(|s| ((s + 2) / 4) as u8);
                let (b, r) = chroma(avg);
                cb.push(b);
                cr.push(r);
            }
        }
        Self { width, y, cb, cr }
    }
}

/// BT.601 limited-range luma (16..=235). Samples are never 0, which the first edition of
/// H.264 forbade in I_PCM.
pub(crate) fn luma([r, g, b]: [u8; 3]) -> u8 {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    (16 + ((66 * r + 129 * g + 25 * b + 128) >> 8)) as u8
}

/// BT.601 limited-range Cb and Cr (16..=240).
fn chroma([r, g, b]: [u8; 3]) -> (u8, u8) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let cb = 128 + ((-38 * r - 74 * g + 112 * b + 128) >> 8);
    let cr = 128 + ((112 * r - 94 * g - 18 * b + 128) >> 8);
    (cb as u8, cr as u8)
}

/// Writes the bits of an RBSP, most significant first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    acc: u8,
    used: u8,
}

impl Bits {
    fn bit(&mut self, on: bool) {
        self.acc = (self.acc << 1) | u8::from(on);
        self.used += 1;
        if self.used == 8 {
            self.bytes.push(self.acc);
            (self.acc, self.used) = (0, 0);
        }
    }

    /// `u(n)`: `v` in `n` bits.
    fn u(&mut self, n: u32, v: u64) {
        for i in (0..n).rev() {
            self.bit(v >> i & 1 == 1);
        }
    }

    /// `ue(v)`: unsigned Exp-Golomb, `v + 1` in binary after as many zeros as it has bits
    /// less one.
    fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        self.u(len - 1, 0);
        self.u(len, x);
    }

    /// `se(v)`: signed Exp-Golomb (1, -1, 2, -2... map to 1, 2, 3, 4...).
    fn se(&mut self, v: i32) {
        let m = if v > 0 { 2 * v - 1 } else { -2 * v };
        self.ue(m.unsigned_abs());
    }

    fn byte(&mut self, v: u8) {
        if self.used == 0 {
            self.bytes.push(v);
        } else {
            self.u(8, u64::from(v));
        }
    }

    /// Zero bits up to the next byte boundary.
    fn align(&mut self) {
        while self.used != 0 {
            self.bit(false);
        }
    }

    /// `rbsp_trailing_bits()`: a stop bit, then alignment.
    fn finish(mut self) -> Vec<u8> {
        self.bit(true);
        self.align();
        self.bytes
    }
}

/// A NAL unit: its header byte, then the RBSP with emulation prevention (an 0x03 after any
/// two zero bytes followed by a byte of 0..=3, so no start code appears inside).
fn nal(header: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    out.push(header);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// The sequence parameter set (7.3.2.1.1), with cropping of the macroblock padding.
fn sps(mbs_w: u32, mbs_h: u32, pad_right: u32, pad_bottom: u32) -> Vec<u8> {
    let mut b = Bits::default();
    b.byte(PROFILE_IDC);
    b.byte(CONSTRAINT_FLAGS);
    b.byte(LEVEL_IDC);
    b.ue(0); // seq_parameter_set_id
    b.ue(0); // log2_max_frame_num_minus4
    b.ue(2); // pic_order_cnt_type 2: output order is decoding order, nothing to reorder
    b.ue(1); // max_num_ref_frames
    b.u(1, 0); // gaps_in_frame_num_value_allowed_flag
    b.ue(mbs_w - 1);
    b.ue(mbs_h - 1);
    b.u(1, 1); // frame_mbs_only_flag: progressive
    b.u(1, 1); // direct_8x8_inference_flag
    let crop = pad_right > 0 || pad_bottom > 0;
    b.u(1, u64::from(crop));
    if crop {
        // Offsets count pairs of pixels in 4:2:0 progressive video (CropUnitX/Y = 2).
        b.ue(0);
        b.ue(pad_right / 2);
        b.ue(0);
        b.ue(pad_bottom / 2);
    }
    b.u(1, 1); // vui_parameters_present_flag
    vui(&mut b);
    b.finish()
}

/// Video usability information (E.1.1): square pixels, BT.601 colours in limited range (so
/// players convert back to the intended RGB), and no frame reordering (so they show each
/// frame as soon as it is decoded).
fn vui(b: &mut Bits) {
    b.u(1, 1); // aspect_ratio_info_present_flag
    b.u(8, 1); // aspect_ratio_idc 1: square samples
    b.u(1, 0); // overscan_info_present_flag
    b.u(1, 1); // video_signal_type_present_flag
    b.u(3, 5); // video_format: unspecified
    b.u(1, 0); // video_full_range_flag: limited range
    b.u(1, 1); // colour_description_present_flag
    b.u(8, 6); // colour_primaries: SMPTE 170M (BT.601)
    b.u(8, 6); // transfer_characteristics: SMPTE 170M
    b.u(8, 6); // matrix_coefficients: SMPTE 170M
    b.u(1, 0); // chroma_loc_info_present_flag
    b.u(1, 0); // timing_info_present_flag: the MP4 carries the timing
    b.u(1, 0); // nal_hrd_parameters_present_flag
    b.u(1, 0); // vcl_hrd_parameters_present_flag
    b.u(1, 0); // pic_struct_present_flag
    b.u(1, 1); // bitstream_restriction_flag
    b.u(1, 1); // motion_vectors_over_pic_boundaries_flag
    b.ue(0); // max_bytes_per_pic_denom: no limit
    b.ue(0); // max_bits_per_mb_denom: no limit
    b.ue(16); // log2_max_mv_length_horizontal
    b.ue(16); // log2_max_mv_length_vertical
    b.ue(0); // max_num_reorder_frames
    b.ue(1); // max_dec_frame_buffering
}

/// The picture parameter set (7.3.2.2): CAVLC, one slice group, deblocking controllable.
fn pps() -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // pic_parameter_set_id
    b.ue(0); // seq_parameter_set_id
    b.u(1, 0); // entropy_coding_mode_flag: CAVLC (I_PCM samples are raw either way)
    b.u(1, 0); // bottom_field_pic_order_in_frame_present_flag
    b.ue(0); // num_slice_groups_minus1
    b.ue(0); // num_ref_idx_l0_default_active_minus1
    b.ue(0); // num_ref_idx_l1_default_active_minus1
    b.u(1, 0); // weighted_pred_flag
    b.u(2, 0); // weighted_bipred_idc
    b.se(0); // pic_init_qp_minus26
    b.se(0); // pic_init_qs_minus26
    b.se(0); // chroma_qp_index_offset
    b.u(1, 1); // deblocking_filter_control_present_flag
    b.u(1, 0); // constrained_intra_pred_flag
    b.u(1, 0); // redundant_pic_cnt_present_flag
    b.finish()
}

/// A whole picture as one IDR slice (7.3.3, 7.3.4, 7.3.5) of I_PCM macroblocks.
fn idr_slice(p: &Picture, idr_pic_id: u32) -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // first_mb_in_slice
    b.ue(7); // slice_type: I, as are all slices of the picture
    b.ue(0); // pic_parameter_set_id
    b.u(4, 0); // frame_num (log2_max_frame_num = 4 bits); 0 in an IDR picture
    b.ue(idr_pic_id);
    b.u(1, 0); // no_output_of_prior_pics_flag
    b.u(1, 0); // long_term_reference_flag
    b.se(0); // slice_qp_delta
    // The filter would do nothing anyway (I_PCM blocks have QP 0), but say so plainly.
    b.ue(1); // disable_deblocking_filter_idc: off
    let (mbs_w, mbs_h) = (p.width / 16, p.y.len() as u32 / p.width / 16);
    let cw = p.width / 2;
    for my in 0..mbs_h {
        for mx in 0..mbs_w {
            b.ue(MB_TYPE_I_PCM);
            b.align(); // pcm_alignment_zero_bit
            // 16×16 luma samples, then 8×8 Cb and 8×8 Cr, each in raster order.
            for row in my * 16..my * 16 + 16 {
                let at = (row * p.width + mx * 16) as usize;
                p.y[at..at + 16].iter().for_each(|&v| b.byte(v));
            }
            for plane in [&p.cb, &p.cr] {
                for row in my * 8..my * 8 + 8 {
                    let at = (row * cw + mx * 8) as usize;
                    plane[at..at + 8].iter().for_each(|&v| b.byte(v));
                }
            }
        }
    }
    b.finish()
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

    /// Reads an RBSP bit by bit.
    struct Reader {
        data: Vec<u8>,
        pos: usize,
    }

    impl Reader {
        /// The RBSP of a NAL unit: without its header byte and emulation prevention bytes.
        fn of_nal(nal: &[u8]) -> Self {
            let mut data = Vec::new();
            for &b in &nal[1..] {
                if b == 3 && data.ends_with(&[0, 0]) {
                    continue;
                }
                data.push(b);
            }
            Self { data, pos: 0 }
        }

        fn u(&mut self, n: u32) -> u32 {
            (0..n).fold(0, |v, _| {
                let bit = self.data[self.pos / 8] >> (7 - self.pos % 8) & 1;
                self.pos += 1;
                v << 1 | u32::from(bit)
            })
        }

        fn ue(&mut self) -> u32 {
            let mut zeros = 0;
            while self.u(1) == 0 {
                zeros += 1;
            }
            (1 << zeros) - 1 + self.u(zeros)
        }
    }

    /// The frame size an SPS declares: its macroblocks less the cropping.
    fn sps_size(sps: &[u8]) -> (u32, u32) {
        assert_eq!(sps[0] & 0x1f, 7, "an SPS NAL unit");
        let mut r = Reader::of_nal(sps);
        assert_eq!(r.u(8), 66, "Baseline profile");
        r.u(16); // constraint flags, level
        r.ue(); // seq_parameter_set_id
        r.ue(); // log2_max_frame_num_minus4
        assert_eq!(r.ue(), 2, "pic_order_cnt_type");
        r.ue(); // max_num_ref_frames
        r.u(1); // gaps_in_frame_num_value_allowed_flag
        let (w, h) = ((r.ue() + 1) * 16, (r.ue() + 1) * 16);
        assert_eq!(r.u(1), 1, "frame_mbs_only_flag");
        r.u(1); // direct_8x8_inference_flag
        let crop = if r.u(1) == 1 {
            [r.ue(), r.ue(), r.ue(), r.ue()]
        } else {
            [0; 4]
        };
        (w - 2 * (crop[0] + crop[1]), h - 2 * (crop[2] + crop[3]))
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
            assert!(w % 2 == 0 && h % 2 == 0, "{a}:{b} gave {w}x{h}");
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

    #[test]
    fn exp_golomb_codes_and_emulation_prevention() {
        let mut b = Bits::default();
        for v in [0, 1, 2, 25] {
            b.ue(v);
        }
        b.se(-2);
        // 1 010 011 000011010 00101, then the stop bit and alignment.
        assert_eq!(b.finish(), [0b1010_0110, 0b0001_1010, 0b0010_1100]);
        assert_eq!(
            nal(0x65, &[0, 0, 0, 0, 1, 0, 0, 3, 0]),
            [0x65, 0, 0, 3, 0, 0, 3, 1, 0, 0, 3, 3, 0]
        );
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
                    .flat_map(|y| (0..w).map(move |x| luma(test_pixel(f, x, y))))
                    .collect();
                assert!(y == want, "{a}:{b} frame {f}: the decoded luma differs");
            }
        }
    }
}
