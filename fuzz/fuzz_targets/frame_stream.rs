//! Stream framing, as a TCP reader uses it: the input is fed whole and in
//! chunks whose sizes come from its first byte. Every answer must lie within
//! the buffer, the buffer must never grow past the limit while framing asks
//! for more, and chunked framing must deliver what whole framing does.
#![no_main]

use cidguard::sip::message::{frame_stream, Frame, MAX_MESSAGE};
use libfuzzer_sys::fuzz_target;

fn frame_all(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut calls = 0usize;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            calls += 1;
            assert!(
                calls <= total + chunks.len() + 1,
                "framing makes no progress"
            );
            match frame_stream(&buf) {
                Frame::Complete(n) => {
                    assert!(n > 0 && n <= buf.len(), "Complete({n}) of {}", buf.len());
                    out.push(buf.drain(..n).collect());
                }
                Frame::KeepAlive(n) => {
                    assert!(n > 0 && n <= buf.len(), "KeepAlive({n}) of {}", buf.len());
                    buf.drain(..n);
                }
                Frame::Incomplete => {
                    assert!(buf.len() <= MAX_MESSAGE, "asks for more past the limit");
                    break;
                }
                Frame::Invalid(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = frame_all(&[input]);
    let step = usize::from(step).max(1);
    let chunks: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(whole, frame_all(&chunks), "chunked framing differs");
});
