//! The H.264 half of the simulator's videos: parameter sets and one IDR slice per frame, every
//! macroblock coded as I_PCM (see the parent module for why).

/// Constrained Baseline profile at level 3.0: what every decoder (browsers included) plays.
/// Level 3.0 allows 1620 macroblocks a frame and 10 Mbit/s; our frames have at most 243.
pub(super) const PROFILE_IDC: u8 = 66;
pub(super) const CONSTRAINT_FLAGS: u8 = 0b1100_0000;
pub(super) const LEVEL_IDC: u8 = 30;

/// `mb_type` of an I_PCM macroblock in an I slice.
const MB_TYPE_I_PCM: u32 = 25;

/// The SPS and PPS NAL units for frames of `w`×`h` (even sizes): the picture is coded in
/// whole macroblocks and cropped back to `w`×`h`.
pub(super) fn parameter_sets(w: u32, h: u32) -> (Vec<u8>, Vec<u8>) {
    let (mbs_w, mbs_h) = (w.div_ceil(16), h.div_ceil(16));
    let sps = nal(0x67, &sps(mbs_w, mbs_h, mbs_w * 16 - w, mbs_h * 16 - h));
    (sps, nal(0x68, &pps()))
}

/// One frame of `w`×`h` as an IDR slice NAL unit; `rgb(x, y)` gives each pixel's colour.
/// Adjacent IDR pictures must differ in `idr_pic_id` (7.4.3): alternate 0 and 1.
pub(super) fn frame(w: u32, h: u32, idr_pic_id: u32, rgb: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let picture = Picture::paint(w.div_ceil(16) * 16, h.div_ceil(16) * 16, |x, y| {
        // The padding right of and below the visible frame repeats its edge; the decoder
        // crops it away.
        rgb(x.min(w - 1), y.min(h - 1))
    });
    nal(0x65, &idr_slice(&picture, idr_pic_id))
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
pub(super) fn luma([r, g, b]: [u8; 3]) -> u8 {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

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
    pub(in crate::mp4) fn sps_size(sps: &[u8]) -> (u32, u32) {
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
}
