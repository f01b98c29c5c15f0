//! The parser, the request checks and the header readers: no panic.
#![no_main]

use cidguard::sip::build::parse_via;
use cidguard::sip::header::{parse_auth_params, parse_name_addr, parse_uri, split_list};
use cidguard::sip::message::check_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = cidguard::sip::parse(data) else {
        return;
    };
    let _ = check_request(&m);
    let _ = m.cseq();
    if let Some(u) = m.request_uri() {
        let _ = parse_uri(u);
    }
    for h in &m.headers {
        for item in split_list(&h.value) {
            if let Ok(na) = parse_name_addr(item) {
                let _ = parse_uri(&na.uri);
            }
        }
        let _ = parse_via(&h.value);
        let _ = parse_auth_params(&h.value);
    }
});
