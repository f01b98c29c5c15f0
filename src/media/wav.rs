//! WAV files of 8 kHz mono 16-bit PCM: the only kind the self-test speaks
//! (what G.711 carries), read strictly and written plainly.
//!
//! Reading walks the RIFF chunks with every length checked against the
//! bytes there are (a file is input from people and other programs):
//! `fmt ` must say PCM (format 1, or WAVE_FORMAT_EXTENSIBLE with the PCM
//! subformat), one channel, 8000 samples a second, 16 bits; other chunks
//! (`LIST`, `fact`...) are skipped. Anything else is refused with an error
//! that names the file and says what it is and what is wanted.

use std::path::{Path, PathBuf};

/// Samples a second.
pub const SAMPLE_RATE: u32 = 8000;
/// The largest WAV file read (about 17 minutes of 8 kHz audio): a prompt is
/// seconds long, and a wrong path must not make the daemon read a disk
/// image into memory.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The PCM subformat GUID of WAVE_FORMAT_EXTENSIBLE, after its first two
/// bytes (which repeat the format tag, 1).
const PCM_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// What is wrong with a WAV's bytes (no file name: see [`WavError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a WAV file (it does not start with RIFF....WAVE)")]
    NotWav,
    #[error("the {0} chunk runs past the end of the file (cut short?)")]
    Truncated(String),
    #[error("no fmt chunk before the audio")]
    NoFormat,
    #[error("no data chunk (no audio)")]
    NoData,
    #[error("it is {found}; it must be 8000 Hz mono 16-bit PCM (convert with: sox IN.wav -r 8000 -c 1 -b 16 -e signed-integer OUT.wav)")]
    Unsupported {
        /// What the file is, in words ("44100 Hz stereo 16-bit PCM").
        found: String,
    },
    #[error("the audio has an odd number of bytes, not whole 16-bit samples")]
    OddData,
}

/// A WAV file that can't be used, naming it.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("can't read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {size} bytes is too large for a prompt (at most {MAX_FILE_BYTES} bytes)", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}: {source}", path.display())]
    Format { path: PathBuf, source: FormatError },
    #[error("can't write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Read a WAV file of 8 kHz mono 16-bit PCM.
pub fn read(path: &Path) -> Result<Vec<i16>, WavError> {
    let read_err = |source| WavError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_FILE_BYTES {
        return Err(WavError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    parse(&bytes).map_err(|source| WavError::Format {
        path: path.to_path_buf(),
        source,
    })
}

/// Write samples as an 8 kHz mono 16-bit PCM WAV file.
pub fn write(path: &Path, samples: &[i16]) -> Result<(), WavError> {
    std::fs::write(path, encode(samples)).map_err(|source| WavError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    // Callers check the length first; a short slice reads as zero.
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    // As above.
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The samples of a WAV file's bytes, when it is 8 kHz mono 16-bit PCM.
pub fn parse(bytes: &[u8]) -> Result<Vec<i16>, FormatError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(FormatError::NotWav);
    }
    // The RIFF size may be wrong (programs that stream write 0 or a
    // maximum); the chunks are what is read, each checked against the bytes.
    let mut at = 12usize;
    let mut format_ok = false;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4) as usize;
        let body_start = at + 8;
        let Some(body_end) = body_start.checked_add(size).filter(|&e| e <= bytes.len()) else {
            return Err(FormatError::Truncated(
                String::from_utf8_lossy(id).trim().to_string(),
            ));
        };
        let body = &bytes[body_start..body_end];
        match id {
            b"fmt " => {
                check_format(body)?;
                format_ok = true;
            }
            b"data" => {
                if !format_ok {
                    return Err(FormatError::NoFormat);
                }
                if body.len() % 2 != 0 {
                    return Err(FormatError::OddData);
                }
                return Ok(body
                    .chunks_exact(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]]))
                    .collect());
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body_end + (size & 1);
    }
    Err(if format_ok {
        FormatError::NoData
    } else {
        FormatError::NoFormat
    })
}

/// Is a `fmt ` chunk 8 kHz mono 16-bit PCM?
fn check_format(fmt: &[u8]) -> Result<(), FormatError> {
    if fmt.len() < 16 {
        return Err(FormatError::Truncated("fmt".into()));
    }
    let tag = u16_at(fmt, 0);
    let channels = u16_at(fmt, 2);
    let rate = u32_at(fmt, 4);
    let bits = u16_at(fmt, 14);
    let pcm = match tag {
        1 => true,
        // WAVE_FORMAT_EXTENSIBLE: the real format is the subformat GUID.
        0xFFFE => fmt.len() >= 40 && u16_at(fmt, 24) == 1 && fmt[26..40] == PCM_GUID_TAIL,
        _ => false,
    };
    if pcm && channels == 1 && rate == SAMPLE_RATE && bits == 16 {
        return Ok(());
    }
    let kind = match tag {
        _ if pcm => "PCM".to_string(),
        3 => "floating point".into(),
        6 => "A-law".into(),
        7 => "µ-law".into(),
        0xFFFE => "an extensible format that is not PCM".into(),
        t => format!("format {t}"),
    };
    let chans = match channels {
        1 => "mono".to_string(),
        2 => "stereo".into(),
        n => format!("{n} channels"),
    };
    Err(FormatError::Unsupported {
        found: format!("{rate} Hz {chans} {bits}-bit {kind}"),
    })
}

/// The bytes of an 8 kHz mono 16-bit PCM WAV file holding `samples`.
pub fn encode(samples: &[i16]) -> Vec<u8> {
    // 2 bytes a sample; a WAV can't say more than 4 GiB, far beyond any
    // prompt, so the sizes saturate rather than wrap.
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes()); // bytes a second
    out.extend_from_slice(&2u16.to_le_bytes()); // bytes a frame
    out.extend_from_slice(&16u16.to_le_bytes()); // bits a sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * channels as u32 * bits as u32 / 8).to_le_bytes());
        b.extend_from_slice(&(channels * bits / 8).to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b
    }

    #[test]
    fn round_trip() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 37 % 65536 - 32768) as i16).collect();
        let bytes = encode(&samples);
        assert_eq!(bytes.len(), 44 + 2000);
        assert_eq!(parse(&bytes).unwrap(), samples);
        assert_eq!(parse(&encode(&[])).unwrap(), Vec::<i16>::new());
    }

    /// Chunks before the audio (LIST with an odd size, padded) are skipped;
    /// the RIFF size is not trusted.
    #[test]
    fn skips_other_chunks() {
        let mut b = header(1, 1, 8000, 16);
        b.extend_from_slice(b"LIST");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(b"abc\0");
        b.extend_from_slice(b"data");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&[1, 0, 0xFF, 0xFF]);
        assert_eq!(parse(&b).unwrap(), vec![1, -1]);
    }

    #[test]
    fn extensible_pcm_is_accepted() {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        b.extend_from_slice(&40u32.to_le_bytes());
        b.extend_from_slice(&0xFFFEu16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&16000u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(&22u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&PCM_GUID_TAIL);
        b.extend_from_slice(b"data\x02\0\0\0\x05\0");
        assert_eq!(parse(&b).unwrap(), vec![5]);
    }

    #[test]
    fn refuses_other_formats_saying_what_they_are() {
        let with_data = |mut h: Vec<u8>| {
            h.extend_from_slice(b"data\0\0\0\0");
            h
        };
        let e = parse(&with_data(header(1, 2, 44100, 16))).unwrap_err();
        assert_eq!(
            e,
            FormatError::Unsupported {
                found: "44100 Hz stereo 16-bit PCM".into()
            }
        );
        assert!(
            e.to_string().contains("must be 8000 Hz mono 16-bit PCM"),
            "{e}"
        );
        let e = parse(&with_data(header(7, 1, 8000, 8))).unwrap_err();
        assert!(e.to_string().contains("8000 Hz mono 8-bit µ-law"), "{e}");
        let e = parse(&with_data(header(1, 1, 16000, 16))).unwrap_err();
        assert!(e.to_string().contains("16000 Hz"), "{e}");
        let e = parse(&with_data(header(3, 1, 8000, 32))).unwrap_err();
        assert!(e.to_string().contains("floating point"), "{e}");
    }

    #[test]
    fn refuses_broken_files() {
        assert_eq!(parse(b"").unwrap_err(), FormatError::NotWav);
        assert_eq!(
            parse(b"ID3\x04 mp3 bytes").unwrap_err(),
            FormatError::NotWav
        );
        let mut b = header(1, 1, 8000, 16);
        b.extend_from_slice(b"data");
        b.extend_from_slice(&100u32.to_le_bytes());
        b.extend_from_slice(&[0; 10]);
        assert_eq!(
            parse(&b).unwrap_err(),
            FormatError::Truncated("data".into())
        );
        let mut b = header(1, 1, 8000, 16);
        b.extend_from_slice(b"data\x03\0\0\0abc\0");
        assert_eq!(parse(&b).unwrap_err(), FormatError::OddData);
        assert_eq!(
            parse(&header(1, 1, 8000, 16)).unwrap_err(),
            FormatError::NoData
        );
        assert_eq!(
            parse(b"RIFF\0\0\0\0WAVEdata\0\0\0\0").unwrap_err(),
            FormatError::NoFormat
        );
        // A chunk size that would overflow the offset.
        let mut b = b"RIFF\0\0\0\0WAVEJUNK".to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&b), Err(FormatError::Truncated(_))));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("org-name.wav");
        std::fs::write(&p, encode(&[1, 2, 3])).unwrap();
        assert_eq!(read(&p).unwrap(), vec![1, 2, 3]);
        std::fs::write(&p, b"not audio").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("org-name.wav") && e.contains("not a WAV"), "{e}");
        let e = read(&dir.path().join("missing.wav"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.wav"), "{e}");
    }

    /// Arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes() {
        use proptest::prelude::*;
        proptest!(|(tail in proptest::collection::vec(any::<u8>(), 0..200))| {
            let mut b = b"RIFF\0\0\0\0WAVE".to_vec();
            b.extend_from_slice(&tail);
            let _ = parse(&b);
        });
    }
}
