//! G.711 (ITU-T Recommendation G.711, 1988): µ-law and A-law companding
//! of 16-bit linear PCM to 8-bit codes and back.
//!
//! The classic segment-search formulation (as in the public-domain Sun
//! reference `g711.c`, which ITU-T G.191's tools agree with), on 16-bit
//! samples: they are rounded to the 14 bits µ-law takes or the 13 bits
//! A-law takes (to nearest, as SoX does, rather than truncated), and
//! decoded values are the standard ones scaled to the 16-bit range (µ-law
//! full scale ±32124, A-law ±32256). Pure integer code, no I/O. The tests
//! check every code and every 16-bit value against SoX's independent
//! implementation (`tests/fixtures/media/g711-sox.txt`).

/// µ-law bias added before the segment search, on 14-bit magnitudes.
const ULAW_BIAS_14: i32 = 0x21;
/// Largest 14-bit magnitude µ-law represents before the bias (keeps the
/// biased value inside the top segment).
const ULAW_CLIP_14: i32 = 8159;
/// The decoder's bias, in 16-bit terms.
const ULAW_BIAS: i32 = 0x84;
/// Upper ends of the eight µ-law segments, biased 14-bit magnitudes.
const ULAW_SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Upper ends of the eight A-law segments, in 13-bit magnitude.
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// The µ-law code for silence (linear 0).
pub const ULAW_SILENCE: u8 = 0xFF;
/// The A-law code for silence (linear 0, read back as +8).
pub const ALAW_SILENCE: u8 = 0xD5;

/// The segment a (non-negative) value falls in: the first whose end is not
/// below it, or 8 when it is above them all.
fn segment(value: i32, ends: &[i32; 8]) -> u8 {
    ends.iter().position(|&e| value <= e).unwrap_or(8) as u8
}

/// Encode one 16-bit linear sample as µ-law: rounded to the 14 bits G.711
/// takes, then companded.
pub fn ulaw_encode(sample: i16) -> u8 {
    let v = ((sample as i32 + 2) >> 2).min(8191);
    let (magnitude, mask) = if v < 0 { (-v, 0x7F) } else { (v, 0xFF) };
    let biased = magnitude.min(ULAW_CLIP_14) + ULAW_BIAS_14;
    let seg = segment(biased, &ULAW_SEG_END);
    if seg >= 8 {
        // Full scale: the largest code of the sign.
        return 0x7F ^ mask;
    }
    let code = (seg << 4) | (((biased >> (seg + 1)) & 0x0F) as u8);
    code ^ mask
}

/// Decode one µ-law code to a 16-bit linear sample.
pub fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0F) as i32) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    // At most (15 << 3 + 132) << 7 = 32256, minus the bias: within i16.
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

/// Encode one 16-bit linear sample as A-law: rounded to the 13 bits G.711
/// takes, then companded.
pub fn alaw_encode(sample: i16) -> u8 {
    let v = ((sample as i32 + 4) >> 3).min(4095);
    let (magnitude, mask) = if v >= 0 { (v, 0xD5) } else { (-v - 1, 0x55) };
    let seg = segment(magnitude, &ALAW_SEG_END);
    if seg >= 8 {
        // Unreachable for 16-bit input (13-bit magnitude ≤ 0xFFF), kept as
        // the reference does: the largest code of the sign.
        return 0x7F ^ mask;
    }
    let quant = if seg < 2 {
        (magnitude >> 1) & 0x0F
    } else {
        (magnitude >> seg) & 0x0F
    };
    ((seg << 4) | quant as u8) ^ mask
}

/// Decode one A-law code to a 16-bit linear sample.
pub fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    // At most (240 + 264) << 6 = 32256: within i16.
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference points of G.711 as 16-bit values (µ-law Table 2 and A-law
    /// Table 1 of the Recommendation, scaled by 4 and 8): silence, full
    /// scale, and a code from each end of the middle segments.
    #[test]
    fn known_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_decode(0xCE), 988);
        assert_eq!(ulaw_encode(-1000), 0x4E);
        assert_eq!(ulaw_decode(0x4E), -988);

        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0xD5); // rounds to 0
        assert_eq!(alaw_encode(-5), 0x55);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_decode(0xFA), 1008);
        assert_eq!(alaw_encode(-1000), 0x7A);
        assert_eq!(alaw_decode(0x7A), -1008);
    }

    /// Every code decodes to a value that encodes back to the same code
    /// (µ-law's two zeros aside: 0x7F, "negative zero", comes back 0xFF).
    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            let u = ulaw_decode(code);
            let back = ulaw_encode(u);
            if code == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, code, "µ-law {code:#04x} -> {u}");
            }
            let a = alaw_decode(code);
            assert_eq!(alaw_encode(a), code, "A-law {code:#04x} -> {a}");
        }
    }

    /// Decoding after encoding stays within a quantisation step of the
    /// sample (steps grow with the segment: about 1/16 of the magnitude),
    /// and is monotonic.
    #[test]
    fn quantisation_error_is_bounded_and_monotonic() {
        let mut last_u = i16::MIN;
        let mut last_a = i16::MIN;
        for s in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            assert!(u >= last_u && a >= last_a, "not monotonic at {s}");
            last_u = u;
            last_a = a;
            let mag = (s as i32).abs();
            let bound = (mag / 16).max(16);
            // Beyond full scale the code saturates.
            if mag <= 32124 {
                assert!((u as i32 - s as i32).abs() <= bound, "µ-law {s} -> {u}");
            }
            if mag <= 32256 {
                assert!((a as i32 - s as i32).abs() <= bound, "A-law {s} -> {a}");
            }
        }
    }

    /// Every code decodes, and every 16-bit value encodes, exactly as SoX's
    /// G.711 (an independent implementation) does.
    #[test]
    fn agrees_with_an_independent_implementation() {
        let reference = include_str!("../../tests/fixtures/media/g711-sox.txt");
        let mut decoded = 0;
        let mut runs: [Vec<(i32, u8)>; 2] = [Vec::new(), Vec::new()];
        for line in reference.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[0] {
                "decode" => {
                    let code: u8 = f[1].parse().unwrap();
                    assert_eq!(
                        ulaw_decode(code),
                        f[2].parse::<i16>().unwrap(),
                        "µ-law {code}"
                    );
                    assert_eq!(
                        alaw_decode(code),
                        f[3].parse::<i16>().unwrap(),
                        "A-law {code}"
                    );
                    decoded += 1;
                }
                "ulaw" => runs[0].push((f[1].parse().unwrap(), f[2].parse().unwrap())),
                "alaw" => runs[1].push((f[1].parse().unwrap(), f[2].parse().unwrap())),
                other => panic!("unknown reference line {other}"),
            }
        }
        assert_eq!(decoded, 256);
        for (law, runs) in runs.iter().enumerate() {
            assert!(runs.len() >= 255, "{} runs", runs.len());
            for (i, &(first, code)) in runs.iter().enumerate() {
                let end = runs.get(i + 1).map_or(32768, |r| r.0);
                for v in first..end {
                    let ours = if law == 0 {
                        ulaw_encode(v as i16)
                    } else {
                        alaw_encode(v as i16)
                    };
                    assert_eq!(ours, code, "{} of {v}", ["µ-law", "A-law"][law]);
                }
            }
        }
    }
}
