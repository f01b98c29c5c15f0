//! The self-test's spoken prompts, and what is said for each result.
//!
//! The default recordings are built into the binary (rendered from
//! `prompts/prompts.txt` by `prompts/render.sh`; voice and licence in
//! `prompts/README.md`). An organisation can put its own recordings in a
//! folder (`selftest.prompts`): any of the file names below that is there
//! replaces the built-in one, and `org-name.wav` / `umbrella-name.wav`,
//! which have no default, let the names be spoken. Every file must be
//! 8 kHz mono 16-bit PCM WAV ([`super::wav`]).
//!
//! | file | said |
//! |---|---|
//! | `pass.wav` | Your number is hidden. |
//! | `leak-number.wav` | Warning: your number is showing. |
//! | `shows-as.wav` | It shows as |
//! | `plus.wav`, `digit-0.wav` ... `digit-9.wav` | plus, zero ... nine |
//! | `leak-org-name.wav` | Warning: your call shows your organisation's name. |
//! | `org-name.wav` | (the organisation's name; no default) |
//! | `leak-caller-name.wav` | Warning: your call shows a caller name. |
//! | `leak-other.wav` | Warning: your call is not private. Your IT team can see the details. |
//! | `umbrella-pass.wav` | Your call is private. It shows the name of your umbrella organisation. |
//! | `umbrella-name.wav` | (the umbrella organisation's name; no default) |
//! | `inconclusive.wav` | The test could not be completed. Please try again later. |
//! | `closing.wav` | This was a caller ID test. Goodbye. |
//!
//! Pure: [`script`] turns a result into clips, [`Prompts::render`] clips
//! into samples. Only [`Prompts::load`] reads files.

use std::path::{Path, PathBuf};

use super::wav;

/// One spoken piece of an announcement.
///
/// `Debug` does not show which digit a [`Clip::Digit`] is: a script may
/// read out a number that is not the organisation's (the caller's own), and
/// it must not reach a log through a `{:?}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clip {
    Pass,
    LeakNumber,
    ShowsAs,
    Plus,
    /// A digit, 0-9.
    Digit(u8),
    LeakOrgName,
    /// The organisation's own recording of its name (no default).
    OrgName,
    LeakCallerName,
    LeakOther,
    UmbrellaPass,
    /// The organisation's recording of its umbrella's name (no default).
    UmbrellaName,
    Inconclusive,
    Closing,
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clip::Digit(_) => f.write_str("Digit"),
            c => f.write_str(c.stem()),
        }
    }
}

impl Clip {
    /// Every clip, in the order of the table above.
    pub const ALL: [Clip; 22] = [
        Clip::Pass,
        Clip::LeakNumber,
        Clip::ShowsAs,
        Clip::Plus,
        Clip::Digit(0),
        Clip::Digit(1),
        Clip::Digit(2),
        Clip::Digit(3),
        Clip::Digit(4),
        Clip::Digit(5),
        Clip::Digit(6),
        Clip::Digit(7),
        Clip::Digit(8),
        Clip::Digit(9),
        Clip::LeakOrgName,
        Clip::OrgName,
        Clip::LeakCallerName,
        Clip::LeakOther,
        Clip::UmbrellaPass,
        Clip::UmbrellaName,
        Clip::Inconclusive,
        Clip::Closing,
    ];

    /// The file name without `.wav`, as in `prompts.txt`.
    pub fn stem(self) -> &'static str {
        const DIGITS: [&str; 10] = [
            "digit-0", "digit-1", "digit-2", "digit-3", "digit-4", "digit-5", "digit-6", "digit-7",
            "digit-8", "digit-9",
        ];
        match self {
            Clip::Pass => "pass",
            Clip::LeakNumber => "leak-number",
            Clip::ShowsAs => "shows-as",
            Clip::Plus => "plus",
            // Digits are built from 0-9 only; a larger value is clamped
            // rather than indexing past the table.
            Clip::Digit(d) => DIGITS[(d as usize).min(9)],
            Clip::LeakOrgName => "leak-org-name",
            Clip::OrgName => "org-name",
            Clip::LeakCallerName => "leak-caller-name",
            Clip::LeakOther => "leak-other",
            Clip::UmbrellaPass => "umbrella-pass",
            Clip::UmbrellaName => "umbrella-name",
            Clip::Inconclusive => "inconclusive",
            Clip::Closing => "closing",
        }
    }

    /// The file an organisation's recording of this clip has.
    pub fn file_name(self) -> String {
        format!("{}.wav", self.stem())
    }

    /// The clip a file name stands for.
    pub fn from_file_name(name: &str) -> Option<Clip> {
        Clip::ALL.into_iter().find(|c| c.file_name() == name)
    }

    /// Whether there is a built-in recording (the names are the
    /// organisation's to record).
    pub fn has_default(self) -> bool {
        !matches!(self, Clip::OrgName | Clip::UmbrellaName)
    }

    /// The built-in text, from `prompts.txt` (None for the names).
    pub fn text(self) -> Option<&'static str> {
        PROMPTS_TXT
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (stem, text) = l.split_once(char::is_whitespace)?;
                (stem == self.stem()).then(|| text.trim())
            })
    }

    fn index(self) -> usize {
        // ALL holds every variant (a unit test checks), so this finds it.
        Clip::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// The prompt texts the default recordings were rendered from.
const PROMPTS_TXT: &str = include_str!("prompts/prompts.txt");

/// The built-in recordings, in [`Clip::ALL`] order (None for the names).
const BUILTIN: [Option<&[u8]>; 22] = [
    Some(include_bytes!("prompts/pass.wav")),
    Some(include_bytes!("prompts/leak-number.wav")),
    Some(include_bytes!("prompts/shows-as.wav")),
    Some(include_bytes!("prompts/plus.wav")),
    Some(include_bytes!("prompts/digit-0.wav")),
    Some(include_bytes!("prompts/digit-1.wav")),
    Some(include_bytes!("prompts/digit-2.wav")),
    Some(include_bytes!("prompts/digit-3.wav")),
    Some(include_bytes!("prompts/digit-4.wav")),
    Some(include_bytes!("prompts/digit-5.wav")),
    Some(include_bytes!("prompts/digit-6.wav")),
    Some(include_bytes!("prompts/digit-7.wav")),
    Some(include_bytes!("prompts/digit-8.wav")),
    Some(include_bytes!("prompts/digit-9.wav")),
    Some(include_bytes!("prompts/leak-org-name.wav")),
    None,
    Some(include_bytes!("prompts/leak-caller-name.wav")),
    Some(include_bytes!("prompts/leak-other.wav")),
    Some(include_bytes!("prompts/umbrella-pass.wav")),
    None,
    Some(include_bytes!("prompts/inconclusive.wav")),
    Some(include_bytes!("prompts/closing.wav")),
];

/// The most digits read out: E.164 numbers have at most 15, national forms
/// with a prefix a few more. A longer "number" is not read at all.
pub const MAX_DIGITS: usize = 20;

/// A number as a phone shows it, to be read digit by digit: an optional
/// leading `+` and 1 to [`MAX_DIGITS`] digits. `Debug` shows only how
/// many digits there are (the number may be the caller's own).
#[derive(Clone, PartialEq, Eq)]
pub struct Digits {
    /// Whether it starts with `+`.
    plus: bool,
    /// The digits, ASCII.
    digits: String,
}

impl std::fmt::Debug for Digits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Digits({}{} digits)",
            if self.plus { "+, " } else { "" },
            self.digits.len()
        )
    }
}

impl Digits {
    /// Read a number as written in a header's user part (`+61412345678`,
    /// `0412 345 678`, `+61-3-7010-0142;npdi`): URI parameters are
    /// dropped, visual separators skipped. None when it holds anything else
    /// (letters: a name, not a number) or has no digits or too many.
    pub fn parse(text: &str) -> Option<Digits> {
        let s = text.split(';').next().unwrap_or_default().trim();
        let (plus, rest) = match s.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, s),
        };
        if !rest
            .chars()
            .all(|c| c.is_ascii_digit() || "-.() ".contains(c))
        {
            return None;
        }
        let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
        (!digits.is_empty() && digits.len() <= MAX_DIGITS).then_some(Digits { plus, digits })
    }

    /// The clips that read it.
    pub fn clips(&self) -> Vec<Clip> {
        let plus = self.plus.then_some(Clip::Plus);
        plus.into_iter()
            .chain(self.digits.bytes().map(|b| Clip::Digit(b - b'0')))
            .collect()
    }

    /// How many digits.
    pub fn len(&self) -> usize {
        self.digits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }
}

/// A number shown on the call, as far as it can be said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShownNumber {
    /// No number is shown.
    None,
    /// A number is shown but can't be read out (too long, or mixed with
    /// letters): the warning is said without the digits.
    Unreadable,
    /// A number is shown as these digits.
    As(Digits),
}

/// What the caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Withheld as expected.
    Pass,
    /// The umbrella identity is shown, as expected.
    UmbrellaPass,
    /// Something identifying is shown or carried.
    Leak {
        /// A number shown where phones display it.
        number: ShownNumber,
        /// The organisation's name shown where phones display it.
        org_name: bool,
        /// Some other name shown (not the organisation's, not the umbrella's).
        caller_name: bool,
    },
    /// The call could not be fully judged.
    Inconclusive,
}

/// The clips said for an outcome, in order, ending with the closing line.
pub fn script(outcome: &Outcome) -> Vec<Clip> {
    let mut clips = Vec::new();
    match outcome {
        Outcome::Pass => clips.push(Clip::Pass),
        Outcome::UmbrellaPass => clips.extend([Clip::UmbrellaPass, Clip::UmbrellaName]),
        Outcome::Inconclusive => clips.push(Clip::Inconclusive),
        Outcome::Leak {
            number,
            org_name,
            caller_name,
        } => {
            match number {
                ShownNumber::None => {}
                ShownNumber::Unreadable => clips.push(Clip::LeakNumber),
                ShownNumber::As(d) => {
                    clips.extend([Clip::LeakNumber, Clip::ShowsAs]);
                    clips.extend(d.clips());
                }
            }
            if *org_name {
                clips.extend([Clip::LeakOrgName, Clip::OrgName]);
            } else if *caller_name {
                clips.push(Clip::LeakCallerName);
            }
            if clips.is_empty() {
                // Failed, but nothing a phone displays: say so generally.
                clips.push(Clip::LeakOther);
            }
        }
    }
    clips.push(Clip::Closing);
    clips
}

/// Silence before the first word: a phone switching to early media can
/// lose the first packets while its jitter buffer fills.
pub const LEAD_MS: usize = 400;
/// Between sentences.
pub const SENTENCE_GAP_MS: usize = 350;
/// Before a spoken number or name, and between its digits.
pub const WORD_GAP_MS: usize = 150;
/// Silence after the last word, before the call is rejected, so the
/// caller's jitter buffer plays out the end.
pub const TAIL_MS: usize = 600;
/// The longest recording accepted for one clip.
pub const MAX_CLIP_SECONDS: usize = 30;

fn silence(ms: usize) -> impl Iterator<Item = i16> {
    std::iter::repeat_n(0i16, ms * wav::SAMPLE_RATE as usize / 1000)
}

/// Where a clip's recording came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    /// An organisation's file.
    File(PathBuf),
    /// Not available (the names, without a recording).
    Missing,
}

/// Why an organisation's prompt folder can't be used.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("can't read the prompt folder {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wav(#[from] wav::WavError),
    #[error("{}: is not one of the prompt file names ({})", path.display(), known_names())]
    Unknown { path: PathBuf },
    #[error("{}: has no audio", path.display())]
    Empty { path: PathBuf },
    #[error("{}: is {seconds} seconds long; a prompt may be at most {MAX_CLIP_SECONDS}", path.display())]
    TooLong { path: PathBuf, seconds: usize },
}

/// Every prompt file name, for messages.
pub fn known_names() -> String {
    Clip::ALL
        .iter()
        .map(|c| c.file_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The recordings in use: built-in, or an organisation's.
#[derive(Clone)]
pub struct Prompts {
    /// Samples per clip, in [`Clip::ALL`] order (None: not available).
    audio: Vec<Option<std::sync::Arc<[i16]>>>,
    /// Where each came from, in the same order.
    sources: Vec<Source>,
}

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompts")
            .field("from_files", &self.from_files())
            .finish()
    }
}

impl Prompts {
    /// The built-in recordings.
    pub fn builtin() -> Prompts {
        let audio = BUILTIN
            .iter()
            .map(|b| {
                // The embedded files are checked by a unit test; one that
                // didn't parse would only be left out, not stop the daemon.
                b.and_then(|bytes| wav::parse(bytes).ok())
                    .map(std::sync::Arc::from)
            })
            .collect::<Vec<_>>();
        let sources = audio
            .iter()
            .map(|a| {
                if a.is_some() {
                    Source::BuiltIn
                } else {
                    Source::Missing
                }
            })
            .collect();
        Prompts { audio, sources }
    }

    /// The built-in recordings, with any of [`Clip::file_name`] found in
    /// `dir` instead. Other `.wav` files there are an error (a misspelt
    /// name would otherwise be silently ignored); other files are ignored.
    /// Every problem is returned, not just the first.
    pub fn load(dir: &Path) -> Result<Prompts, Vec<PromptError>> {
        let mut p = Prompts::builtin();
        let entries = std::fs::read_dir(dir).map_err(|source| {
            vec![PromptError::Folder {
                path: dir.to_path_buf(),
                source,
            }]
        })?;
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for e in entries {
            let e = e.map_err(|source| {
                vec![PromptError::Folder {
                    path: dir.to_path_buf(),
                    source,
                }]
            })?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.to_ascii_lowercase().ends_with(".wav") {
                names.push((name, e.path()));
            }
        }
        // Reported in a stable order.
        names.sort();
        let mut errors = Vec::new();
        for (name, path) in names {
            let Some(clip) = Clip::from_file_name(&name) else {
                errors.push(PromptError::Unknown { path });
                continue;
            };
            match wav::read(&path) {
                Ok(samples) if samples.is_empty() => errors.push(PromptError::Empty { path }),
                Ok(samples) if samples.len() > MAX_CLIP_SECONDS * wav::SAMPLE_RATE as usize => {
                    let seconds = samples.len() / wav::SAMPLE_RATE as usize;
                    errors.push(PromptError::TooLong { path, seconds })
                }
                Ok(samples) => {
                    let i = clip.index();
                    p.audio[i] = Some(samples.into());
                    p.sources[i] = Source::File(path);
                }
                Err(e) => errors.push(e.into()),
            }
        }
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors)
        }
    }

    /// Where a clip's recording comes from.
    pub fn source(&self, clip: Clip) -> &Source {
        &self.sources[clip.index()]
    }

    /// The file names taken from the organisation's folder.
    pub fn from_files(&self) -> Vec<String> {
        Clip::ALL
            .iter()
            .filter(|c| matches!(self.source(**c), Source::File(_)))
            .map(|c| c.file_name())
            .collect()
    }

    /// A clip's samples, if there is a recording.
    pub fn clip(&self, clip: Clip) -> Option<&[i16]> {
        self.audio[clip.index()].as_deref()
    }

    /// The announcement: lead-in silence, each clip that has a recording
    /// with a pause before it (shorter inside a number or before a name),
    /// then a tail of silence. Clips without a recording (a name nobody
    /// recorded) are left out, with their pause.
    pub fn render(&self, script: &[Clip]) -> Vec<i16> {
        let mut out: Vec<i16> = silence(LEAD_MS).collect();
        let mut first = true;
        for &c in script {
            let Some(samples) = self.clip(c) else {
                continue;
            };
            if !first {
                let inside = matches!(
                    c,
                    Clip::Plus | Clip::Digit(_) | Clip::OrgName | Clip::UmbrellaName
                );
                out.extend(silence(if inside { WORD_GAP_MS } else { SENTENCE_GAP_MS }));
            }
            out.extend_from_slice(samples);
            first = false;
        }
        out.extend(silence(TAIL_MS));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every built-in clip parses, and prompts.txt, the built-in files and
    /// the clip list agree: a text for each clip with a default, a file for
    /// each text.
    #[test]
    fn builtin_prompts_are_complete() {
        let p = Prompts::builtin();
        for (i, c) in Clip::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(Clip::from_file_name(&c.file_name()), Some(*c));
            if c.has_default() {
                let samples = p.clip(*c).unwrap_or_else(|| panic!("{c:?} missing"));
                assert!(samples.len() > 1000, "{c:?} is {} samples", samples.len());
                assert!(c.text().is_some(), "{c:?} has no text in prompts.txt");
                assert_eq!(p.source(*c), &Source::BuiltIn);
            } else {
                assert!(p.clip(*c).is_none());
                assert!(c.text().is_none());
                assert_eq!(p.source(*c), &Source::Missing);
            }
        }
        let stems: Vec<&str> = PROMPTS_TXT
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(stems.len(), 20);
        for s in stems {
            assert!(Clip::from_file_name(&format!("{s}.wav")).is_some(), "{s}");
        }
        assert_eq!(Clip::Pass.text(), Some("Your number is hidden."));
        assert_eq!(Clip::Digit(7).text(), Some("seven"));
    }

    /// The default audio stays small (the brief for committed prompts).
    #[test]
    fn builtin_audio_is_small() {
        let total: usize = BUILTIN.iter().flatten().map(|b| b.len()).sum();
        assert!(total < 600 * 1024, "{total} bytes");
    }

    #[test]
    fn scripts() {
        use Clip::*;
        assert_eq!(script(&Outcome::Pass), [Pass, Closing]);
        assert_eq!(
            script(&Outcome::UmbrellaPass),
            [UmbrellaPass, UmbrellaName, Closing]
        );
        assert_eq!(script(&Outcome::Inconclusive), [Inconclusive, Closing]);
        let number = ShownNumber::As(Digits::parse("+61 3 7010-0142").unwrap());
        assert_eq!(
            script(&Outcome::Leak {
                number,
                org_name: true,
                caller_name: true
            }),
            [
                LeakNumber,
                ShowsAs,
                Plus,
                Digit(6),
                Digit(1),
                Digit(3),
                Digit(7),
                Digit(0),
                Digit(1),
                Digit(0),
                Digit(0),
                Digit(1),
                Digit(4),
                Digit(2),
                LeakOrgName,
                OrgName,
                Closing
            ]
        );
        assert_eq!(
            script(&Outcome::Leak {
                number: ShownNumber::Unreadable,
                org_name: false,
                caller_name: true
            }),
            [LeakNumber, LeakCallerName, Closing]
        );
        assert_eq!(
            script(&Outcome::Leak {
                number: ShownNumber::None,
                org_name: false,
                caller_name: false
            }),
            [LeakOther, Closing]
        );
    }

    #[test]
    fn digits() {
        let d = Digits::parse("0412 345 678;npdi").unwrap();
        assert_eq!(d.len(), 10);
        assert_eq!(d.clips()[0], Clip::Digit(0));
        assert_eq!(format!("{d:?}"), "Digits(10 digits)");
        assert_eq!(format!("{:?}", d.clips()[1]), "Digit");
        assert!(Digits::parse("anonymous").is_none());
        assert!(Digits::parse("").is_none());
        assert!(Digits::parse("+").is_none());
        assert!(Digits::parse("12a4").is_none());
        assert!(Digits::parse(&"1".repeat(MAX_DIGITS)).is_some());
        assert!(Digits::parse(&"1".repeat(MAX_DIGITS + 1)).is_none());
    }

    /// Rendering: lead, clips with their gaps, tail; a missing name is
    /// left out with its gap.
    #[test]
    fn render_layout() {
        let p = Prompts::builtin();
        let ms = |n: usize| n * 8;
        let pass = p.clip(Clip::Pass).unwrap().len();
        let closing = p.clip(Clip::Closing).unwrap().len();
        let audio = p.render(&[Clip::Pass, Clip::Closing]);
        assert_eq!(
            audio.len(),
            ms(LEAD_MS) + pass + ms(SENTENCE_GAP_MS) + closing + ms(TAIL_MS)
        );
        assert_eq!(
            &audio[ms(LEAD_MS)..ms(LEAD_MS) + pass],
            p.clip(Clip::Pass).unwrap()
        );
        let umbrella = p.clip(Clip::UmbrellaPass).unwrap().len();
        let audio = p.render(&script(&Outcome::UmbrellaPass));
        assert_eq!(
            audio.len(),
            ms(LEAD_MS) + umbrella + ms(SENTENCE_GAP_MS) + closing + ms(TAIL_MS)
        );
    }

    #[test]
    fn an_organisations_recordings_replace_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let name: Vec<i16> = (0..4000).map(|i| (i % 100) as i16).collect();
        wav::write(&dir.path().join("org-name.wav"), &name).unwrap();
        wav::write(&dir.path().join("pass.wav"), &[5; 800]).unwrap();
        std::fs::write(dir.path().join("README.txt"), "notes").unwrap();
        let p = Prompts::load(dir.path()).unwrap();
        assert_eq!(p.clip(Clip::OrgName).unwrap(), &name[..]);
        assert_eq!(p.clip(Clip::Pass).unwrap(), &[5; 800][..]);
        assert_eq!(p.source(Clip::Closing), &Source::BuiltIn);
        assert_eq!(p.from_files(), ["pass.wav", "org-name.wav"]);
        let said = p.render(&[Clip::LeakOrgName, Clip::OrgName]);
        let lead = LEAD_MS * 8;
        let leak = p.clip(Clip::LeakOrgName).unwrap().len();
        let at = lead + leak + WORD_GAP_MS * 8;
        assert_eq!(&said[at..at + name.len()], &name[..]);
    }

    #[test]
    fn bad_prompt_folders_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        wav::write(&dir.path().join("org_name.wav"), &[1; 10]).unwrap();
        std::fs::write(dir.path().join("closing.wav"), b"RIFF").unwrap();
        wav::write(&dir.path().join("pass.wav"), &[]).unwrap();
        let errs: Vec<String> = Prompts::load(dir.path())
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].contains("closing.wav") && errs[0].contains("not a WAV"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("org_name.wav") && errs[1].contains("org-name.wav"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("pass.wav") && errs[2].contains("no audio"),
            "{errs:?}"
        );
        let e = Prompts::load(&dir.path().join("nope")).unwrap_err();
        assert!(e[0].to_string().contains("can't read the prompt folder"));
    }
}
