//! The verdict engine for the example config's withheld and umbrella
//! lines: no panic, a pass has no findings, inconclusive has a reason, and a
//! message in which the organisation's number is intact never passes.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use cidguard::config::Config;
use cidguard::verdict::{judge, Outcome, Policy};
use libfuzzer_sys::fuzz_target;

fn policies() -> &'static [Policy] {
    static P: OnceLock<Vec<Policy>> = OnceLock::new();
    P.get_or_init(|| {
        let text = include_str!("../../config/example.toml");
        let cfg = Config::from_toml(text, Path::new("example.toml")).expect("example config");
        Policy::for_config(&cfg).expect("example policies")
    })
}

/// The organisation's number as the fixtures write it, with no digit
/// either side.
fn intact_org_number(m: &[u8]) -> bool {
    ["+61370100142", "0370100142", "61370100142"]
        .iter()
        .any(|form| {
            let f = form.as_bytes();
            m.windows(f.len()).enumerate().any(|(i, w)| {
                w == f
                    && (i == 0 || !m[i - 1].is_ascii_digit())
                    && m.get(i + f.len()).is_none_or(|b| !b.is_ascii_digit())
            })
        })
}

fuzz_target!(|data: &[u8]| {
    let org = intact_org_number(data);
    for p in policies() {
        let v = judge(p, data);
        match v.outcome {
            Outcome::Pass => {
                assert!(v.findings.is_empty(), "a pass with findings");
                assert!(!org, "passed with the organisation's number intact");
            }
            Outcome::Inconclusive => assert!(v.reason.is_some_and(|r| !r.is_empty())),
            Outcome::Fail => {}
        }
    }
});
