//! The demo's caller (`cidguard::demo::caller`) against cidguard's real
//! endpoint on loopback: it hears the early media the endpoint plays,
//! sample for sample, sees the 183 and the reject code and never a 200,
//! saves a WAV file that reads back, cancels a call that rings forever, and
//! reports (and hangs up) a call that is answered. Then the same call
//! through the demo PBX, which withholds or leaks by the line's rule, and
//! through the real PBX (Kamailio), authenticating as a line.
//!
//! The endpoint runs a test handler that returns a fixed disposition (an
//! announcement of known audio, a hold, an answer), so what the caller
//! must hear is known exactly: G.711 is deterministic, so the recording
//! equals the audio through the codec.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cidguard::config;
use cidguard::demo::caller::{
    call_and_record, CallerAuth, CallerError, CallerId, CallerOptions, Heard, Identity,
};
use cidguard::demo::pbx::{DemoPbx, Identities, Rule};
use cidguard::media::rtp::{packet_count, Codec};
use cidguard::media::{wav, Audio};
use cidguard::secret::Secret;
use cidguard::sip::endpoint::{
    CallEnd, CallHandler, Disposition, EarlyMedia, Endpoint, EndpointHandle, EndpointOptions,
    FinishedCall, IncomingCall, Then,
};
use cidguard::sip::Message;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::support::rtp_sink::through_codec;
use crate::support::{self, org, CallerIdRule, Kamailio, KamailioOpts, Line};

/// The self-test number the caller dials.
const NUMBER: &str = "0399990001";
/// However a test goes, no wait is longer.
const WAIT: Duration = Duration::from_secs(60);

/// A handler that does the same with every call, and tells the test what
/// arrived and how it ended.
struct Scripted {
    disposition: Disposition,
    invites: Mutex<mpsc::UnboundedSender<Message>>,
    finished: Mutex<mpsc::UnboundedSender<FinishedCall>>,
}

impl CallHandler for Scripted {
    fn on_invite(&self, call: &IncomingCall) -> Disposition {
        let _ = self.invites.lock().unwrap().send(call.message.clone());
        self.disposition.clone()
    }

    fn on_finished(&self, call: FinishedCall) {
        let _ = self.finished.lock().unwrap().send(call);
    }
}

/// cidguard's endpoint for [`NUMBER`] on UDP loopback, doing `disposition`.
struct Setup {
    endpoint: EndpointHandle,
    invites: mpsc::UnboundedReceiver<Message>,
    finished: mpsc::UnboundedReceiver<FinishedCall>,
}

impl Setup {
    async fn start(disposition: Disposition) -> Setup {
        let (invites_tx, invites) = mpsc::unbounded_channel();
        let (finished_tx, finished) = mpsc::unbounded_channel();
        let handler = Arc::new(Scripted {
            disposition,
            invites: Mutex::new(invites_tx),
            finished: Mutex::new(finished_tx),
        });
        let ep_cfg: config::Endpoint = toml::from_str(&format!(
            "listen = [\"udp:127.0.0.1:0\"]\nnumbers = [\"{NUMBER}\"]\n"
        ))
        .unwrap();
        let spec = cidguard::plan::endpoint_spec(&ep_cfg, None).unwrap();
        let endpoint = Endpoint::start_with(&spec, handler, EndpointOptions::default())
            .await
            .expect("the endpoint starts");
        Setup {
            endpoint,
            invites,
            finished,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.endpoint.addr(config::Transport::Udp).unwrap()
    }

    /// The INVITE as the endpoint received it.
    async fn invite(&mut self) -> Message {
        timeout(WAIT, self.invites.recv())
            .await
            .expect("an INVITE in time")
            .expect("the handler is alive")
    }

    /// The endpoint's record of the call.
    async fn finished(&mut self) -> FinishedCall {
        timeout(WAIT, self.finished.recv())
            .await
            .expect("the endpoint reports the call in time")
            .expect("the handler is alive")
    }
}

/// A second of known audio that isn't whole packets long: a tone sweeping
/// up and swelling, so any reordering, gap or codec mix-up shows.
fn known_audio() -> Vec<i16> {
    (0..8_050)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let amp = 2000.0 + 20000.0 * t;
            ((t * (300.0 + 900.0 * t) * std::f64::consts::TAU).sin() * amp) as i16
        })
        .collect()
}

fn org_identity(display: bool) -> Identity {
    Identity {
        display: display.then(|| org::NAME.to_string()),
        user: org::NUMBER.to_string(),
        host: org::PBX_HOST.to_string(),
    }
}

async fn call(opts: &CallerOptions) -> Result<Heard, CallerError> {
    timeout(WAIT, call_and_record(opts))
        .await
        .expect("the call ends in time")
}

/// What the caller heard is the announcement, exactly (G.711 round trip),
/// in whole packets, and nothing else.
fn assert_heard_exactly(heard: &Heard, audio: &[i16], codec: Codec) {
    let want = through_codec(audio, codec);
    assert_eq!(heard.codec, codec);
    assert_eq!(heard.packets, packet_count(audio.len()));
    assert_eq!(
        (heard.ignored, heard.truncated),
        (0, false),
        "nothing else arrived, nothing was cut"
    );
    assert_eq!(heard.samples.len(), want.len());
    if let Some(at) = heard.samples.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("the recording differs from the announcement at sample {at}");
    }
}

/// The recording saved as WAV reads back as the same samples.
fn assert_wav_round_trips(heard: &Heard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heard.wav");
    heard.write_wav(&path).unwrap();
    assert_eq!(wav::read(&path).unwrap(), heard.samples);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        44 + 2 * heard.samples.len() as u64
    );
}

/// The endpoint never answered: what it sent for the INVITE was 1xx and
/// one final 4xx-6xx.
fn assert_endpoint_never_answered(call: &FinishedCall) {
    for m in &call.messages {
        let msg = cidguard::sip::parse(&m.bytes).unwrap();
        let for_invite = msg.header("CSeq").is_some_and(|c| c.ends_with("INVITE"));
        assert!(
            !(for_invite && msg.status().is_some_and(|s| (200..300).contains(&s))),
            "the endpoint answered"
        );
    }
}

/// A withheld call (anonymous From, `Privacy: id`, the organisation's
/// number asserted) offering PCMU: a 183, the whole announcement, then
/// 486, ACKed, never a 200; the WAV of it reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_records_the_announcement_of_a_withheld_call_pcmu() {
    let audio = known_audio();
    let mut s = Setup::start(Disposition::Announce {
        audio: Audio::new(audio.clone()),
        then: 486,
    })
    .await;
    let opts = CallerOptions::new(
        s.addr(),
        NUMBER,
        CallerId::Withheld {
            asserted: Some(org_identity(false)),
        },
    );
    let heard = call(&opts).await.unwrap();
    assert!(
        heard.provisional.contains(&183),
        "provisional {:?}",
        heard.provisional
    );
    assert_eq!((heard.final_status, heard.answered), (486, false));
    assert!(!heard.cancelled);
    assert_heard_exactly(&heard, &audio, Codec::Pcmu);
    assert_wav_round_trips(&heard);

    let invite = s.invite().await;
    assert_eq!(
        invite.header("From").unwrap(),
        format!(
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={}",
            cidguard::sip::header::parse_name_addr(invite.header("From").unwrap())
                .unwrap()
                .param("tag")
                .flatten()
                .unwrap()
        )
    );
    assert_eq!(invite.header("Privacy"), Some("id"));
    assert_eq!(
        invite.header("P-Asserted-Identity"),
        Some(format!("<sip:{}@{}>", org::NUMBER, org::PBX_HOST).as_str())
    );
    // The Contact names no one either.
    assert!(!invite.header("Contact").unwrap().contains(org::NUMBER));

    let call = s.finished().await;
    assert_eq!(call.ended, CallEnd::Rejected(486));
    assert!(call.ack_received, "the 486 was ACKed");
    assert!(matches!(
        call.early_media,
        Some(EarlyMedia::Played {
            codec: Codec::Pcmu,
            complete: true,
            ..
        })
    ));
    assert_endpoint_never_answered(&call);
}

/// A call that shows the organisation's name and number in From, offering
/// PCMA, to an endpoint configured to reject with 603: heard exactly, in
/// A-law.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_records_the_announcement_of_a_leaking_call_pcma() {
    let audio = known_audio();
    let mut s = Setup::start(Disposition::Announce {
        audio: Audio::new(audio.clone()),
        then: 603,
    })
    .await;
    let mut opts = CallerOptions::new(s.addr(), NUMBER, CallerId::Shown(org_identity(true)));
    opts.codec = Codec::Pcma;
    let heard = call(&opts).await.unwrap();
    assert!(heard.provisional.contains(&183));
    assert_eq!((heard.final_status, heard.answered), (603, false));
    assert_heard_exactly(&heard, &audio, Codec::Pcma);

    let invite = s.invite().await;
    let from = cidguard::sip::header::parse_name_addr(invite.header("From").unwrap()).unwrap();
    assert_eq!(from.display.as_deref(), Some(org::NAME));
    assert_eq!(from.uri, format!("sip:{}@{}", org::NUMBER, org::PBX_HOST));
    assert_eq!(invite.header("Privacy"), None);
    assert_eq!(invite.header("P-Asserted-Identity"), None);
    assert!(String::from_utf8_lossy(&invite.body).contains("a=rtpmap:8 PCMA/8000"));

    let call = s.finished().await;
    assert_eq!(call.ended, CallEnd::Rejected(603));
    assert!(call.ack_received);
    assert_endpoint_never_answered(&call);
}

/// An endpoint that rings forever: after the maximum duration the caller
/// sends CANCEL, the INVITE ends 487, and nothing was heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_cancels_a_call_that_rings_forever() {
    let mut s = Setup::start(Disposition::Hold {
        hold: Duration::from_secs(3600),
        then: Then::Reject(486),
    })
    .await;
    let mut opts = CallerOptions::new(s.addr(), NUMBER, CallerId::Withheld { asserted: None });
    opts.max_duration = Duration::from_millis(800);
    let heard = call(&opts).await.unwrap();
    assert!(heard.cancelled);
    assert_eq!((heard.final_status, heard.answered), (487, false));
    assert!(heard.provisional.contains(&180), "{:?}", heard.provisional);
    assert!(heard.samples.is_empty() && heard.packets == 0);
    let call = s.finished().await;
    assert_eq!(call.ended, CallEnd::Cancelled);
    assert!(call.ack_received, "the 487 was ACKed");
}

/// Should an endpoint ever answer, the caller says so, ACKs the 200 and
/// hangs up (the endpoint sees the caller's BYE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_is_reported_and_hung_up() {
    let mut s = Setup::start(Disposition::Hold {
        hold: Duration::from_millis(100),
        then: Then::Answer {
            hangup_after: Duration::from_secs(30),
        },
    })
    .await;
    let opts = CallerOptions::new(s.addr(), NUMBER, CallerId::Withheld { asserted: None });
    let heard = call(&opts).await.unwrap();
    assert!(heard.answered);
    assert_eq!(heard.final_status, 200);
    let call = s.finished().await;
    assert!(call.ack_received, "the 200 was ACKed");
    assert_eq!(call.ended, CallEnd::AnsweredCallerHungUp);
}

/// Through the PBX: the caller authenticates as a line, the PBX relays the
/// call to the endpoint (applying the line's caller-ID rule) and the 183
/// and its early media come back: heard exactly, then 486.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_through_the_pbx_records_the_announcement() {
    if support::skip_without_peers() {
        return;
    }
    let audio = known_audio();
    let mut s = Setup::start(Disposition::Announce {
        audio: Audio::new(audio.clone()),
        then: 486,
    })
    .await;
    let endpoint = s.addr();
    let pbx = tokio::task::spawn_blocking(move || {
        let pbx = Kamailio::start(KamailioOpts::default()).expect("start the PBX");
        pbx.set_endpoint(NUMBER, &format!("sip:{endpoint};transport=udp"))
            .unwrap();
        pbx.set_rule("201", CallerIdRule::Withheld).unwrap();
        pbx
    })
    .await
    .unwrap();
    let line = Line::get("201");
    let mut opts = CallerOptions::new(
        pbx.udp_addr(),
        NUMBER,
        CallerId::Shown(Identity {
            display: None,
            user: line.username.to_string(),
            host: "127.0.0.1".to_string(),
        }),
    );
    opts.auth = Some(CallerAuth {
        username: line.username.to_string(),
        password: Secret::Inline(line.password.to_string()),
    });
    let heard = call(&opts).await.unwrap();
    assert!(
        heard.provisional.contains(&183),
        "provisional {:?}\n{}",
        heard.provisional,
        pbx.log()
    );
    assert_eq!((heard.final_status, heard.answered), (486, false));
    assert_heard_exactly(&heard, &audio, Codec::Pcmu);
    // The PBX applied the line's rule: the endpoint saw a withheld call.
    let invite = s.invite().await;
    assert_eq!(invite.header("Privacy"), Some("id"));
    let call = s.finished().await;
    assert_eq!(call.ended, CallEnd::Rejected(486));
    assert_endpoint_never_answered(&call);
    drop(pbx);
}

/// Through the demo PBX, as the demo's device will call: the line's From
/// names the line, the PBX presents it by the line's rule (withheld, then
/// leaking the organisation's number), and the 183 carries the endpoint's
/// SDP answer back, so the caller hears the message either way.
/// (Regression: the demo PBX relayed the 183 without its SDP answer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_through_the_demo_pbx_hears_the_message_withheld_and_leaking() {
    let audio = known_audio();
    let mut s = Setup::start(Disposition::Announce {
        audio: Audio::new(audio.clone()),
        then: 486,
    })
    .await;
    let ids = Identities {
        org_name: org::NAME.to_string(),
        org_number: org::NUMBER.to_string(),
        umbrella_name: org::UMBRELLA_NAME.to_string(),
        umbrella_number: org::UMBRELLA_NUMBER.to_string(),
    };
    let rules = [("201".to_string(), Rule::Withheld)].into_iter().collect();
    let pbx = DemoPbx::start("127.0.0.1:0".parse().unwrap(), s.addr(), ids, rules)
        .await
        .unwrap();
    for (rule, pai) in [
        (Rule::Withheld, None),
        (
            Rule::Leak,
            Some(format!("<sip:{}@demo-pbx.invalid>", org::NUMBER)),
        ),
    ] {
        pbx.set_rule("201", rule);
        let opts = CallerOptions::new(
            pbx.addr(),
            NUMBER,
            CallerId::Shown(Identity {
                display: None,
                user: "201".to_string(),
                host: "demo-pbx.invalid".to_string(),
            }),
        );
        let heard = call(&opts).await.unwrap();
        let what = rule.name();
        assert!(heard.provisional.contains(&183), "{what}");
        assert_eq!((heard.final_status, heard.answered), (486, false), "{what}");
        let progress = heard
            .messages
            .iter()
            .map(|m| cidguard::sip::parse(&m.bytes).unwrap())
            .find(|m| m.status() == Some(183))
            .unwrap();
        assert!(
            String::from_utf8_lossy(&progress.body).contains("a=sendonly"),
            "{what}: the 183 carries the SDP answer"
        );
        assert_heard_exactly(&heard, &audio, Codec::Pcmu);
        let invite = s.invite().await;
        assert_eq!(
            invite.header("Privacy"),
            (rule == Rule::Withheld).then_some("id"),
            "{what}"
        );
        assert_eq!(
            invite.header("P-Asserted-Identity"),
            pai.as_deref(),
            "{what}"
        );
        let call = s.finished().await;
        assert_eq!(call.ended, CallEnd::Rejected(486), "{what}");
    }
    pbx.shutdown().await;
}
