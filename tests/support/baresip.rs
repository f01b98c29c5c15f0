//! baresip as an independent softphone: it dials a number through the test
//! PBX as one of its lines, plays whatever early media arrives, and its
//! `sndfile` module records the decoded audio it received to a WAV file
//! (`dump-<time>-dec.wav`, 8 kHz mono 16-bit for G.711), decoded by
//! baresip's own G.711 tables, not ours.
//!
//! Everything stays on loopback: SIP on a free loopback port, media on
//! loopback only (`-n 127.0.0.1`, so its SDP offers 127.0.0.1, not the
//! machine's other addresses), no STUN/TURN/ICE modules, the PBX as the
//! outbound proxy. Audio devices: the `aubridge` module's null bridge, so
//! no sound card is needed and playback runs at real-time pace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::kamailio::Line;
use super::{lines_of, net, peer_dir, Group};

/// The baresip binary, or None (skip with a notice) outside CI when it is
/// missing; under CI a missing baresip fails the test.
pub fn binary() -> Option<PathBuf> {
    super::require_tool("baresip", "baresip", ".ci/install-peers.sh")
}

/// What one call left behind.
pub struct BaresipCall {
    /// Everything baresip printed.
    pub output: String,
    /// The received audio as baresip decoded and recorded it.
    pub recording: Vec<i16>,
    /// Where the recording is (in the peer directory, kept with
    /// `CIDGUARD_KEEP_PEER_DIRS=1`).
    pub recording_path: PathBuf,
    /// Held so the directory lives as long as the result.
    _dir: tempfile::TempDir,
}

/// `line` dials `number` through the PBX at `pbx` (UDP), offering only
/// `codec` (`pcmu` or `pcma`), and listens until the call ends.
pub fn call(
    baresip: &Path,
    pbx: SocketAddr,
    line: Line,
    number: &str,
    codec: &str,
    timeout: Duration,
) -> Result<BaresipCall> {
    let dir = peer_dir("cidguard-baresip-")?;
    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec)?;
    let port = sip_port()?;
    std::fs::write(
        dir.path().join("config"),
        format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:{port}\n\
             call_local_timeout 120\n\
             call_max_calls 1\n\
             audio_player aubridge,cidguard\n\
             audio_source aubridge,cidguard\n\
             audio_alert aubridge,cidguard\n\
             audio_level no\n\
             ausrc_format s16\n\
             auplay_format s16\n\
             auenc_format s16\n\
             audec_format s16\n\
             audio_buffer 20-160\n\
             jitter_buffer_delay 5-10\n\
             rtp_stats no\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module_tmp account.so\n\
             module_app menu.so\n\
             snd_path {}\n",
            rec.display()
        ),
    )?;
    std::fs::write(
        dir.path().join("accounts"),
        format!(
            "<sip:{user}@127.0.0.1;transport=udp>;auth_pass={pass};regint=0;outbound=\"sip:{pbx};transport=udp\";audio_codecs={codec}\n",
            user = line.username,
            pass = line.password,
        ),
    )?;
    let secs = timeout.as_secs().max(1);
    let mut cmd = Command::new(baresip);
    cmd.arg("-f")
        .arg(dir.path())
        .args(["-n", "127.0.0.1"])
        .args([
            "-e",
            &format!("/dial sip:{number}@pbx.eastside-refuge.org.au"),
        ])
        // Its own bound, past ours.
        .args(["-t", &(secs + 5).to_string()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr.log"))?);
    let mut group = Group::spawn(&mut cmd)?;
    let out = group.take_stdout().context("baresip's stdout")?;
    let lines = lines_of(out);
    let deadline = Instant::now() + timeout;
    let mut output = String::new();
    let mut closed = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(l) => {
                // Status lines ("[0:00:01] audio=0/64000 (bit/s)") are
                // rewritten in place with carriage returns: left out.
                for part in l.split('\r') {
                    let status = part.trim_start().starts_with("[0:") && part.contains("bit/s");
                    let part = if status {
                        // A message may follow a status on the same line.
                        part.split_once("(bit/s)")
                            .map_or("", |(_, rest)| rest.trim())
                    } else {
                        part
                    };
                    if !part.is_empty() {
                        closed |= part.contains("session closed");
                        output.push_str(part);
                        output.push('\n');
                    }
                }
                if closed {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // The call is over (or never will be). baresip finishes the
    // recording's WAV header when it shuts down: asked to with SIGTERM,
    // killed only if it won't.
    let _ = Command::new("kill")
        .args(["-TERM", &group.pid().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if group.wait_timeout(Duration::from_secs(10)).is_err() {
        bail!("baresip did not stop on SIGTERM:\n{output}");
    }
    if !closed {
        let err = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        bail!("baresip's call did not end within {timeout:?}:\n{output}\n{err}");
    }
    let recording_path = std::fs::read_dir(&rec)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .with_context(|| {
            format!(
                "no received-audio recording in {}:\n{output}",
                rec.display()
            )
        })?;
    let recording = cidguard::media::wav::read(&recording_path)?;
    Ok(BaresipCall {
        output,
        recording,
        recording_path,
        _dir: dir,
    })
}

/// A loopback port for baresip's SIP: free for UDP and TCP, with the next
/// one free for TCP too (baresip always listens for SIP over TLS there).
fn sip_port() -> Result<u16> {
    for _ in 0..50 {
        let port = net::free_port()?;
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free with the next one free too")
}
