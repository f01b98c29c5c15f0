//! The call-in self-test's voice, end to end: a line dials a self-test
//! number through the real PBX (Kamailio), cidguard's endpoint judges the
//! INVITE it receives and plays the verdict as early media, then rejects
//! the call. The caller is SIPp, whose SDP offer points the audio at a
//! socket this test opened: the RTP is checked against RFC 3550 and its
//! decoded audio compared sample for sample with the prompts that should
//! be said (G.711 encoding is deterministic). No 200 may ever be sent.
//! Then baresip, an independent softphone, calls and records what it
//! hears, and its recording is matched against the expected message.
//! Direct tests (an INVITE from a test socket, no PBX) cover an INVITE
//! without SDP, `Require: 100rel` and the cap on announcements.
//!
//! The endpoint here is started with a test-side handler that does what
//! the daemon will: judge with `selftest::policy`, say
//! `selftest::script_for`, play it with `Disposition::Announce`.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cidguard::config::{self, Config};
use cidguard::media::prompts::{Clip, Digits, Prompts};
use cidguard::media::rtp::Codec;
use cidguard::media::sdp::{self, NoAudio};
use cidguard::media::{wav, Audio};
use cidguard::selftest;
use cidguard::sip::endpoint::{
    CallEnd, CallHandler, Disposition, EarlyMedia, Endpoint, EndpointHandle, EndpointOptions,
    FinishedCall, IncomingCall,
};
use cidguard::sip::transport::Direction;
use cidguard::verdict::{self, Policy};

use crate::support::baresip;
use crate::support::rtp_sink::{self, RtpSink};
use crate::support::{self, CallerIdRule, Kamailio, KamailioOpts, Line, Sipp, SippOpts, Transport};

/// The self-test number the lines dial (routed by the PBX to the endpoint).
pub const SELFTEST_NUMBER: &str = "0399990001";

/// The organisation of the test PBX, with a `[selftest]` section.
pub fn config_text(selftest: &str) -> String {
    format!(
        r#"
{org}

[endpoint]
listen = ["udp:127.0.0.1:0"]
numbers = ["0399990000"]

[[line]]
name = "reception"
expect = "withheld"

[selftest]
numbers = ["{SELFTEST_NUMBER}"]
{selftest}
"#,
        org = crate::support::org::TABLE
    )
}

/// What the daemon will do with a call to a self-test number: judge it,
/// turn the verdict into prompts, play them, reject.
pub struct SelfTestHandler {
    policy: Policy,
    prompts: Prompts,
    reject_code: u16,
    finished: Mutex<mpsc::Sender<FinishedCall>>,
}

impl CallHandler for SelfTestHandler {
    fn on_invite(&self, call: &IncomingCall) -> Disposition {
        // Tests send traffic to loopback only: a peer whose offer points
        // elsewhere (a softphone picking the machine's other address) gets
        // no audio, and its test fails on that.
        let body = String::from_utf8_lossy(&call.message.body);
        let off_loopback = sdp::parse(&body)
            .ok()
            .and_then(|o| o.target().ok())
            .is_some_and(|t| !t.addr.ip().is_loopback());
        if off_loopback {
            return Disposition::Reject(488);
        }
        let v = verdict::judge(&self.policy, &call.invite);
        let clips = selftest::script_for(&v, &self.policy);
        Disposition::Announce {
            audio: Audio::new(self.prompts.render(&clips)),
            then: self.reject_code,
        }
    }

    fn on_finished(&self, call: FinishedCall) {
        let _ = self.finished.lock().unwrap().send(call);
    }
}

/// The PBX, cidguard's endpoint for the self-test number, and the runtime
/// the endpoint runs on.
pub struct Setup {
    pub pbx: Kamailio,
    /// Kept so the endpoint keeps serving for the test's length.
    #[allow(dead_code)]
    pub endpoint: EndpointHandle,
    pub finished: mpsc::Receiver<FinishedCall>,
    /// The runtime the endpoint's tasks run on.
    #[allow(dead_code)]
    pub rt: tokio::runtime::Runtime,
}

pub fn setup(selftest: &str) -> Setup {
    let pbx = Kamailio::start(KamailioOpts::default()).expect("start the PBX");
    let (endpoint, finished, rt) = start_endpoint(selftest);
    let addr = endpoint.addr(config::Transport::Udp).expect("udp listener");
    pbx.set_endpoint(SELFTEST_NUMBER, &format!("sip:{addr};transport=udp"))
        .expect("route the self-test number");
    Setup {
        pbx,
        endpoint,
        finished,
        rt,
    }
}

/// cidguard's endpoint for the self-test number alone (UDP on loopback),
/// with the test-side handler, and the runtime it runs on.
pub fn start_endpoint(
    selftest: &str,
) -> (
    EndpointHandle,
    mpsc::Receiver<FinishedCall>,
    tokio::runtime::Runtime,
) {
    start_endpoint_with(selftest, EndpointOptions::default())
}

/// [`start_endpoint`] with the endpoint's options given.
pub fn start_endpoint_with(
    selftest: &str,
    opts: EndpointOptions,
) -> (
    EndpointHandle,
    mpsc::Receiver<FinishedCall>,
    tokio::runtime::Runtime,
) {
    let cfg =
        Config::from_toml(&config_text(selftest), Path::new("selftest.toml")).expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, finished) = mpsc::channel();
    let st = cfg.selftest.as_ref().expect("[selftest]");
    let handler = Arc::new(SelfTestHandler {
        policy: selftest::policy(&cfg)
            .expect("policy")
            .expect("self-test policy"),
        prompts: selftest::prompts(&cfg).expect("prompts"),
        reject_code: st.reject_code,
        finished: Mutex::new(tx),
    });
    // The endpoint takes the self-test numbers (the daemon's wiring will
    // add them to the endpoint's own).
    let ep_cfg: config::Endpoint = toml::from_str(&format!(
        "listen = [\"udp:127.0.0.1:0\"]\nnumbers = [\"{SELFTEST_NUMBER}\"]\n"
    ))
    .expect("endpoint config");
    let spec = cidguard::plan::endpoint_spec(&ep_cfg, None).expect("endpoint spec");
    let endpoint = rt
        .block_on(Endpoint::start_with(&spec, handler, opts))
        .expect("endpoint");
    (endpoint, finished, rt)
}

fn scenario(name: &str) -> PathBuf {
    support::tests_dir()
        .join("sipp")
        .join("selftest")
        .join(name)
}

/// A line dials the self-test number with an offer of one format,
/// pointing its audio at `sink`.
fn dial(
    pbx: &Kamailio,
    scenario_name: &str,
    line: &str,
    format: (&str, &str),
    sink: &RtpSink,
) -> SippOpts {
    let l = Line::get(line);
    SippOpts::uac(scenario(scenario_name), Transport::Udp, pbx.udp_addr())
        .service(SELFTEST_NUMBER)
        .auth(l.username, l.password)
        .key("line", l.username)
        .key("rtp_port", &sink.port().to_string())
        .key("fmt", format.0)
        .key("enc", format.1)
        .timeout(Duration::from_secs(60))
}

/// Everything one call-in produced.
struct CallIn {
    sipp: support::SippOutcome,
    call: FinishedCall,
    rtp: Vec<rtp_sink::Received>,
}

/// Run the caller, collect the endpoint's record of the call and the RTP.
fn run(s: &Setup, opts: SippOpts, sink: RtpSink) -> CallIn {
    let sipp = Sipp::run(opts).expect("run SIPp");
    let call = s
        .finished
        .recv_timeout(Duration::from_secs(15))
        .expect("the endpoint reports the call");
    let rtp = sink.finish();
    CallIn { sipp, call, rtp }
}

/// The responses the caller received to its authenticated INVITE (CSeq 2),
/// in order.
fn invite_responses(sipp: &support::SippOutcome) -> Vec<u16> {
    sipp.received_responses()
        .iter()
        .filter(|m| m.header("CSeq").is_some_and(|c| c.trim() == "2 INVITE"))
        .filter_map(|m| m.status())
        .collect()
}

/// The INVITE never answered: no 2xx for it received by the caller or
/// sent by the endpoint (the 200 for a CANCEL is not an answer).
fn assert_never_answered(c: &CallIn) {
    assert!(
        !c.sipp
            .received_responses()
            .iter()
            .any(|m| m.status() == Some(200)
                && m.header("CSeq").is_some_and(|c| c.contains("INVITE"))),
        "the caller received a 200 for its INVITE:\n{}",
        c.sipp.describe()
    );
    for m in &c.call.messages {
        if m.direction != Direction::Sent {
            continue;
        }
        let msg = cidguard::sip::parse(&m.bytes).expect("a message the endpoint sent");
        let for_invite = msg.header("CSeq").is_some_and(|c| c.contains("INVITE"));
        assert!(
            !(for_invite && msg.status().is_some_and(|s| (200..300).contains(&s))),
            "the endpoint answered:\n{}",
            String::from_utf8_lossy(&m.bytes)
        );
    }
}

/// The audio the caller must hear: these clips, rendered as the endpoint
/// renders them, through the codec.
fn expected(prompts: &Prompts, clips: &[Clip], codec: Codec) -> Vec<i16> {
    rtp_sink::through_codec(&prompts.render(clips), codec)
}

/// The stream is RFC 3550-correct and carries exactly `want`.
fn assert_heard(c: &CallIn, codec: Codec, payload_type: u8, want: &[i16]) {
    let packets = rtp_sink::parse(&c.rtp);
    rtp_sink::check_stream(&packets, payload_type);
    let heard = rtp_sink::decode(&packets, codec);
    if let Some(at) = rtp_sink::first_difference(&heard, want) {
        panic!(
            "the audio differs at sample {at} (packet {}): heard {} samples, expected {}",
            at / 160,
            heard.len(),
            want.len()
        );
    }
    match &c.call.early_media {
        Some(EarlyMedia::Played {
            codec: used,
            payload_type: pt,
            packets: n,
            sent,
            send_failures: 0,
            complete: true,
            ..
        }) => {
            assert_eq!((*used, *pt), (codec, payload_type));
            assert_eq!((*n, *sent), (packets.len(), packets.len()));
        }
        other => panic!("early media: {other:?}"),
    }
}

/// The 183's SDP answer: our RTP address, the offered payload type only,
/// send-only.
fn assert_answer(c: &CallIn, payload_type: u8, encoding: &str) {
    let progress = c
        .sipp
        .received_responses()
        .into_iter()
        .find(|m| m.status() == Some(183))
        .expect("a 183");
    let body = progress.body();
    assert!(
        body.contains("m=audio ") && body.contains(&format!(" RTP/AVP {payload_type}\r\n")),
        "{body}"
    );
    assert!(
        body.contains(&format!("a=rtpmap:{payload_type} {encoding}/8000")),
        "{body}"
    );
    assert!(body.contains("a=sendonly"), "{body}");
    assert_eq!(
        progress.header("Content-Type").as_deref().map(str::trim),
        Some("application/sdp")
    );
}

/// A withheld call with a PCMU offer hears "Your number is hidden." and
/// the closing line, and is rejected 486 unanswered.
#[test]
fn withheld_call_hears_its_number_is_hidden_pcmu() {
    if support::skip_without_peers() {
        return;
    }
    let s = setup("");
    s.pbx.set_rule("201", CallerIdRule::Withheld).unwrap();
    let sink = RtpSink::start();
    let opts = dial(&s.pbx, "call.xml", "201", ("0", "PCMU"), &sink);
    let c = run(&s, opts, sink);
    c.sipp.expect_success("the self-test call");
    let r = invite_responses(&c.sipp);
    assert!(r == [100, 183, 486] || r == [183, 486], "responses {r:?}");
    assert_answer(&c, 0, "PCMU");
    assert_never_answered(&c);
    assert_eq!(c.call.final_status, Some(486));
    assert_eq!(c.call.ended, CallEnd::Rejected(486));
    assert!(c.call.ack_received);
    let want = expected(
        &Prompts::builtin(),
        &[Clip::Pass, Clip::Closing],
        Codec::Pcmu,
    );
    assert_heard(&c, Codec::Pcmu, 0, &want);
}

/// A line whose PBX puts the organisation's number in P-Asserted-Identity
/// (no Privacy): the caller, offering PCMA, hears the warning and the
/// number digit by digit as the header carried it.
#[test]
fn leaking_call_hears_the_number_that_shows_pcma() {
    if support::skip_without_peers() {
        return;
    }
    let s = setup("");
    s.pbx.set_rule("202", CallerIdRule::PaiLeak).unwrap();
    let sink = RtpSink::start();
    let opts = dial(&s.pbx, "call.xml", "202", ("8", "PCMA"), &sink);
    let c = run(&s, opts, sink);
    c.sipp.expect_success("the self-test call");
    assert_eq!(invite_responses(&c.sipp).last(), Some(&486));
    assert_answer(&c, 8, "PCMA");
    assert_never_answered(&c);
    let mut clips = vec![Clip::LeakNumber, Clip::ShowsAs];
    clips.extend(Digits::parse("+61370100142").unwrap().clips());
    clips.push(Clip::Closing);
    let want = expected(&Prompts::builtin(), &clips, Codec::Pcma);
    assert_heard(&c, Codec::Pcma, 8, &want);
}

/// An umbrella line, with the organisation's own recording of the
/// umbrella's name and a configured reject code: "Your call is private.
/// It shows the name of your umbrella organisation", the recording, the
/// closing line, then 603.
#[test]
fn umbrella_call_hears_the_umbrella_name_recording_then_the_configured_code() {
    if support::skip_without_peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A stand-in for a recorded name: a rising tone, 0.6 s.
    let name: Vec<i16> = (0..4800)
        .map(|i| ((i as f64 * (0.05 + i as f64 / 200_000.0)).sin() * 9000.0) as i16)
        .collect();
    wav::write(&dir.path().join("umbrella-name.wav"), &name).unwrap();
    let s = setup(&format!(
        "expect = \"umbrella\"\numbrella = {{ name = \"Salvation Army\", numbers = [\"+61 2 9000 0000\"] }}\nprompts = {:?}\nreject_code = 603\n",
        dir.path().display().to_string()
    ));
    s.pbx.set_rule("203", CallerIdRule::Umbrella).unwrap();
    let sink = RtpSink::start();
    let opts = dial(&s.pbx, "call.xml", "203", ("0", "PCMU"), &sink);
    let c = run(&s, opts, sink);
    c.sipp.expect_success("the self-test call");
    assert_eq!(invite_responses(&c.sipp).last(), Some(&603));
    assert_never_answered(&c);
    assert_eq!(c.call.ended, CallEnd::Rejected(603));
    let prompts = Prompts::load(dir.path()).unwrap();
    assert_eq!(prompts.clip(Clip::UmbrellaName), Some(&name[..]));
    let want = expected(
        &prompts,
        &[Clip::UmbrellaPass, Clip::UmbrellaName, Clip::Closing],
        Codec::Pcmu,
    );
    assert_heard(&c, Codec::Pcmu, 0, &want);
}

/// An offer with only G.729: judged, then rejected at once without a 183
/// and without any audio.
#[test]
fn call_without_g711_is_rejected_without_audio() {
    if support::skip_without_peers() {
        return;
    }
    let s = setup("");
    let sink = RtpSink::start();
    let opts = dial(&s.pbx, "call.xml", "204", ("18", "G729"), &sink);
    let c = run(&s, opts, sink);
    c.sipp.expect_success("the self-test call");
    let r = invite_responses(&c.sipp);
    assert!(r == [100, 486] || r == [486], "responses {r:?}");
    assert_never_answered(&c);
    assert!(c.rtp.is_empty(), "{} datagrams arrived", c.rtp.len());
    assert_eq!(
        c.call.early_media,
        Some(EarlyMedia::NotPlayed(NoAudio::NoG711))
    );
    assert_eq!(c.call.ended, CallEnd::Rejected(486));
}

/// A caller who hangs up while the message plays: the CANCEL is answered,
/// the INVITE gets 487, and the stream stops there.
#[test]
fn cancel_during_the_message_stops_the_stream() {
    if support::skip_without_peers() {
        return;
    }
    let s = setup("");
    s.pbx.set_rule("205", CallerIdRule::PaiLeak).unwrap();
    let sink = RtpSink::start();
    let opts = dial(&s.pbx, "call-cancel.xml", "205", ("0", "PCMU"), &sink)
        .arg("-d")
        .arg("1000");
    let c = run(&s, opts, sink);
    c.sipp.expect_success("the cancelled self-test call");
    assert_eq!(invite_responses(&c.sipp).last(), Some(&487));
    assert_never_answered(&c);
    assert_eq!(c.call.ended, CallEnd::Cancelled);
    let Some(EarlyMedia::Played {
        packets,
        sent,
        complete: false,
        ..
    }) = c.call.early_media
    else {
        panic!("early media: {:?}", c.call.early_media);
    };
    assert!(sent < packets, "{sent} of {packets} sent");
    // About a second of it (50 packets); generous for a busy machine.
    assert!((20..packets).contains(&sent), "{sent} of {packets} sent");
    assert_eq!(c.rtp.len(), sent, "every packet sent arrived, none after");
    // What did play was the start of the message, in order.
    let packets_heard = rtp_sink::parse(&c.rtp);
    rtp_sink::check_stream(&packets_heard, 0);
}

/// How much of the message a recording holds: the share of its 20 ms
/// frames of speech (silent frames match anywhere, so they don't count)
/// found in `recording`, in order, each sample within `tolerance`.
///
/// A softphone's recording is not the RTP payload: it went through the
/// phone's jitter buffer (which may drop or repeat a frame when it runs
/// late) and its own G.711 decoder (baresip's tables decode µ-law silence
/// as 2, ours as 0). So the first words are located in the recording, and
/// each frame is then looked for at the current alignment, or within a
/// quarter second of it (a dropped or repeated frame moves the rest).
/// Still a strict check: every sample of a speech frame must be within a
/// G.711 quantisation step of what was sent, so another prompt, other
/// digits, another codec or resampled audio match no frame at all.
fn share_heard(recording: &[i16], want: &[i16], tolerance: i32) -> f64 {
    const FRAME: usize = 160;
    const SPEECH: i32 = 200;
    let close = |rec_at: usize, want_at: usize| {
        rec_at + FRAME <= recording.len()
            && recording[rec_at..rec_at + FRAME]
                .iter()
                .zip(&want[want_at..want_at + FRAME])
                .all(|(r, w)| (*r as i32 - *w as i32).abs() <= tolerance)
    };
    let speech: Vec<usize> = (0..want.len() / FRAME)
        .map(|f| f * FRAME)
        .filter(|&at| {
            want[at..at + FRAME]
                .iter()
                .any(|s| (*s as i32).abs() > SPEECH)
        })
        .collect();
    if speech.is_empty() {
        return 0.0;
    }
    let mut shift: Option<isize> = None;
    let mut found = 0;
    for &at in &speech {
        let aligned = shift.and_then(|s| usize::try_from(at as isize + s).ok());
        if aligned.is_some_and(|r| close(r, at)) {
            found += 1;
            continue;
        }
        // Look around the current alignment, or everywhere before the
        // first frame is found.
        let (lo, hi) = match aligned {
            Some(r) => (r.saturating_sub(2000), (r + 2000).min(recording.len())),
            None => (0, recording.len()),
        };
        if let Some(r) = (lo..hi).find(|&r| close(r, at)) {
            shift = Some(r as isize - at as isize);
            found += 1;
        }
    }
    found as f64 / speech.len() as f64
}

/// baresip, an independent softphone, dials the self-test number through
/// the PBX and records what it hears: the withheld call (PCMU) hears
/// "Your number is hidden", the leaking call (PCMA) the warning and the
/// number; each recording matches its own message and not the other's.
#[test]
fn a_softphone_hears_the_result() {
    if support::skip_without_peers() {
        return;
    }
    let Some(bin) = baresip::binary() else {
        return;
    };
    let s = setup("");
    s.pbx.set_rule("201", CallerIdRule::Withheld).unwrap();
    s.pbx.set_rule("202", CallerIdRule::PaiLeak).unwrap();
    let prompts = Prompts::builtin();
    let pass_clips = [Clip::Pass, Clip::Closing];
    let mut leak_clips = vec![Clip::LeakNumber, Clip::ShowsAs];
    leak_clips.extend(Digits::parse("+61370100142").unwrap().clips());
    leak_clips.push(Clip::Closing);

    for (line, codec, clips, other) in [
        ("201", Codec::Pcmu, &pass_clips[..], &leak_clips[..]),
        ("202", Codec::Pcma, &leak_clips[..], &pass_clips[..]),
    ] {
        let heard = baresip::call(
            &bin,
            s.pbx.udp_addr(),
            Line::get(line),
            SELFTEST_NUMBER,
            &codec.name().to_ascii_lowercase(),
            Duration::from_secs(40),
        )
        .expect("baresip's call");
        let call = s
            .finished
            .recv_timeout(Duration::from_secs(15))
            .expect("the endpoint reports the call");
        let what = format!("line {line}, {codec}");
        assert!(
            heard.output.contains("183 Session Progress"),
            "{what}: no early media:\n{}",
            heard.output
        );
        assert!(
            heard.output.contains("session closed: 486"),
            "{what}: not rejected 486:\n{}",
            heard.output
        );
        assert!(
            !heard.output.contains("Call established"),
            "{what}: answered"
        );
        assert_eq!(call.ended, CallEnd::Rejected(486), "{what}");
        assert!(
            matches!(call.early_media, Some(EarlyMedia::Played { codec: c, complete: true, .. }) if c == codec),
            "{what}: {:?}",
            call.early_media
        );
        let want = expected(&prompts, clips, codec);
        let share = share_heard(&heard.recording, &want, 8);
        assert!(
            share >= 0.95,
            "{what}: only {:.0}% of the message's speech is in {}",
            share * 100.0,
            heard.recording_path.display()
        );
        // The other result (without the closing line both share) is not
        // in the recording.
        let other = &other[..other.len() - 1];
        let wrong = share_heard(&heard.recording, &expected(&prompts, other, codec), 8);
        assert!(
            wrong < 0.05,
            "{what}: the other message matches too ({wrong:.2})"
        );
    }
}

/// An INVITE sent straight to the endpoint over UDP from a test socket,
/// and the responses to it until the final one (which is then ACKed).
fn invite_directly(endpoint: std::net::SocketAddr, extra_headers: &str, body: &str) -> Vec<String> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // The final response follows the whole message (seconds).
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let me = sock.local_addr().unwrap();
    let call_id = format!("direct-{}", me.port());
    let ctype = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    let from = "From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=t1";
    let invite = format!(
        "INVITE sip:{SELFTEST_NUMBER}@{endpoint} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}\r\nMax-Forwards: 70\r\n{from}\r\nTo: <sip:{SELFTEST_NUMBER}@{endpoint}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\nPrivacy: id\r\n{extra_headers}{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.send_to(invite.as_bytes(), endpoint).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("a response within 30 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let code: u16 = text[8..11].parse().unwrap();
        got.push(text.clone());
        if code >= 200 {
            let to = text.lines().find(|l| l.starts_with("To:")).unwrap();
            let ack = format!(
                "ACK sip:{SELFTEST_NUMBER}@{endpoint} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}\r\nMax-Forwards: 70\r\n{from}\r\n{to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            );
            sock.send_to(ack.as_bytes(), endpoint).unwrap();
            return got;
        }
    }
}

fn codes(responses: &[String]) -> Vec<u16> {
    responses
        .iter()
        .map(|r| r[8..11].parse().unwrap())
        .collect()
}

fn pcmu_offer(port: u16) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n")
}

/// An INVITE without SDP is judged and rejected at once: no 183, no audio.
#[test]
fn invite_without_an_offer_is_rejected_without_early_media() {
    let (endpoint, finished, _rt) = start_endpoint("");
    let addr = endpoint.addr(config::Transport::Udp).unwrap();
    let r = invite_directly(addr, "", "");
    assert_eq!(codes(&r), [100, 486]);
    let call = finished.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        call.early_media,
        Some(EarlyMedia::NotPlayed(NoAudio::NoOffer))
    );
    assert!(call.ack_received);
}

/// A caller that requires reliable provisional responses (100rel) is
/// refused 420 naming the extension (the 183 is sent unreliably, as
/// announcements commonly are); one that merely supports it hears the
/// message.
#[test]
fn require_100rel_is_refused_420() {
    let (endpoint, finished, _rt) = start_endpoint("");
    let addr = endpoint.addr(config::Transport::Udp).unwrap();
    let sink = RtpSink::start();
    let r = invite_directly(addr, "Require: 100rel\r\n", &pcmu_offer(sink.port()));
    assert_eq!(codes(&r), [420]);
    assert!(r[0].contains("Unsupported: 100rel"), "{}", r[0]);
    assert!(sink.finish().is_empty());
    // Refused before it became a call: nothing to report.
    assert!(finished.recv_timeout(Duration::from_millis(300)).is_err());

    let sink = RtpSink::start();
    let r = invite_directly(
        addr,
        "Supported: 100rel, timer\r\n",
        &pcmu_offer(sink.port()),
    );
    assert_eq!(codes(&r), [100, 183, 486]);
    let heard = rtp_sink::parse(&sink.finish());
    rtp_sink::check_stream(&heard, 0);
    let want = expected(
        &Prompts::builtin(),
        &[Clip::Pass, Clip::Closing],
        Codec::Pcmu,
    );
    assert_eq!(rtp_sink::decode(&heard, Codec::Pcmu), want);
}

/// The audio goes where the caller's SDP says, so announcements to one
/// address are capped: while one plays to 127.0.0.1, a second caller whose
/// offer points at the same address is rejected at once without audio.
#[test]
fn announcements_to_one_address_are_capped() {
    let opts = EndpointOptions {
        max_announcements_per_address: 1,
        ..EndpointOptions::default()
    };
    let (endpoint, finished, _rt) = start_endpoint_with("", opts);
    let addr = endpoint.addr(config::Transport::Udp).unwrap();
    let first_sink = RtpSink::start();
    let first_offer = pcmu_offer(first_sink.port());
    let first = std::thread::spawn(move || invite_directly(addr, "", &first_offer));
    assert!(
        first_sink.wait_for_audio(Duration::from_secs(10)),
        "the first message did not start"
    );
    let second_sink = RtpSink::start();
    let r = invite_directly(addr, "", &pcmu_offer(second_sink.port()));
    assert_eq!(codes(&r), [100, 486]);
    let call = finished.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(call.early_media, Some(EarlyMedia::NotPlayed(NoAudio::Busy)));
    assert_eq!(codes(&first.join().unwrap()), [100, 183, 486]);
    assert!(second_sink.finish().is_empty());
    assert!(!first_sink.finish().is_empty());
    // Given back when the first ended: a third caller hears it.
    let third_sink = RtpSink::start();
    let r = invite_directly(addr, "", &pcmu_offer(third_sink.port()));
    assert_eq!(codes(&r), [100, 183, 486]);
    assert!(!third_sink.finish().is_empty());
}
