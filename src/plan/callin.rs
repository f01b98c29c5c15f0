//! The call-in self-test, compiled: which endpoint numbers are self-test
//! numbers and whose each is (the organisation's `[selftest]`, or one
//! device's own), the policies call-ins are judged by, the prompts (loaded
//! once per plan, not per call), the devices, and what may be kept of a
//! caller's identity ([`Keep`]).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Expect};
use crate::media::prompts::Prompts;
use crate::verdict::names::{contains_words, normalise};
use crate::verdict::numbers::{NumberError, NumberSet};
use crate::verdict::{OrgMatcher, Policy};

/// The name call-ins not attributed to a device carry as their "line".
pub const SELFTEST_LINE: &str = "self-test";

/// Reject code for device self-test numbers without a `[selftest]` section.
const DEFAULT_REJECT: u16 = 486;

/// Whose a self-test number is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The organisation's `[selftest]` numbers: any phone may call.
    Organisation,
    /// A device's own self-test number (index into [`CallInPlan::devices`]).
    Device(usize),
}

/// A phone of the organisation's (`[[device]]`), compiled.
#[derive(Debug)]
pub struct DevicePlan {
    /// Its unique name (the "line" of its call-ins).
    name: String,
    /// Who carries it: a contact e-mail address.
    owner: String,
    /// What its calls must present.
    expect: Expect,
    /// What its call-ins are judged against.
    policy: Policy,
    /// Its numbers, to attribute a call-in that shows one.
    numbers: NumberSet,
    /// Its own self-test number, as written.
    selftest_number: Option<String>,
    /// Remind the owner after this long without a call-in.
    remind_every: Option<Duration>,
}

impl DevicePlan {
    /// Its unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Who carries it (an e-mail address).
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// What its calls must present.
    pub fn expected(&self) -> Expect {
        self.expect
    }
    /// What its call-ins are judged against.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// Its own self-test number, as written.
    pub fn selftest_number(&self) -> Option<&str> {
        self.selftest_number.as_deref()
    }
    /// How long without a call-in before its owner is reminded.
    pub fn remind_every(&self) -> Option<Duration> {
        self.remind_every
    }
    /// Whether a number as seen in a message (a finding's text) is one of
    /// this device's.
    pub fn has_number(&self, seen: &str) -> bool {
        !self.numbers.find_in(seen).is_empty()
    }
}

/// What may be kept of an identity seen on a call-in: the organisation's
/// numbers and names, the devices' numbers, and the umbrellas' names and
/// numbers. Anything else is a stranger's and is never stored, logged or
/// shown.
#[derive(Debug)]
pub struct Keep {
    /// Every number that may be kept.
    numbers: NumberSet,
    /// Folded names that may be kept (organisation, umbrellas).
    names: Vec<String>,
}

impl Keep {
    /// Whether a run of digits (as found in text: `plus` when written with
    /// a leading `+`) is a number that may be kept.
    pub fn number(&self, digits: &str, plus: bool) -> bool {
        self.numbers.match_digits(digits, plus, true).is_some()
    }

    /// Whether a display name may be kept: it names the organisation or
    /// an umbrella (or is empty).
    pub fn name(&self, display: &str) -> bool {
        let f = normalise(display);
        f.is_empty() || self.names.iter().any(|n| contains_words(&f, n))
    }
}

/// The call-in self-test, compiled.
pub struct CallInPlan {
    /// `[selftest]`'s policy; None without the section.
    policy: Option<Policy>,
    /// Final response after the message has played.
    reject_code: u16,
    /// The recordings, loaded once.
    prompts: Arc<Prompts>,
    /// Every self-test number as written, with whose it is.
    numbers: Vec<(String, Owner)>,
    /// Every `[[device]]`, in file order.
    devices: Vec<DevicePlan>,
    /// What may be kept of a caller's identity.
    keep: Keep,
}

impl std::fmt::Debug for CallInPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallInPlan")
            .field("numbers", &self.numbers)
            .field("devices", &self.devices.len())
            .finish()
    }
}

/// Why the call-in plan could not be built (validation refuses all of
/// these first).
#[derive(Debug, thiserror::Error)]
pub enum CallInError {
    #[error("{0}")]
    Number(#[from] NumberError),
    #[error("the self-test prompts can't be read: {0}")]
    Prompts(String),
}

impl CallInPlan {
    /// Compile `[selftest]` and `[[device]]` (validated already).
    pub fn compile(cfg: &Config, org: &Arc<OrgMatcher>) -> Result<CallInPlan, CallInError> {
        let region = cfg.organisation.region.as_str();
        let policy_for =
            |name: &str, expect: Expect, umbrella: &Option<crate::config::Umbrella>| {
                Policy::new(
                    org.clone(),
                    &super::specs::line_spec(name, expect, umbrella.as_ref()),
                )
            };
        let st = cfg.selftest.as_ref();
        let policy = match st {
            Some(st) => Some(policy_for(SELFTEST_LINE, st.expect, &st.umbrella)?),
            None => None,
        };
        let prompts = match st.and_then(|s| s.prompts.as_deref()) {
            Some(dir) => Prompts::load(dir).map_err(|e| {
                CallInError::Prompts(
                    e.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?,
            None => Prompts::builtin(),
        };
        let mut numbers: Vec<(String, Owner)> = st
            .map(|s| {
                s.numbers
                    .iter()
                    .map(|n| (n.clone(), Owner::Organisation))
                    .collect()
            })
            .unwrap_or_default();
        let mut devices = Vec::with_capacity(cfg.devices.len());
        for (i, d) in cfg.devices.iter().enumerate() {
            if let Some(n) = &d.selftest_number {
                numbers.push((n.clone(), Owner::Device(i)));
            }
            devices.push(DevicePlan {
                name: d.name.clone(),
                owner: d.owner.clone(),
                expect: d.expect,
                policy: policy_for(&d.name, d.expect, &d.umbrella)?,
                numbers: NumberSet::new(&d.numbers, region)?,
                selftest_number: d.selftest_number.clone(),
                remind_every: d.remind_every.filter(|r| !r.is_zero()),
            });
        }
        // What may be kept: the organisation's and the devices' numbers,
        // and every umbrella's.
        let mut keep_numbers: Vec<String> = cfg.organisation.numbers.clone();
        let mut umbrellas: Vec<&crate::config::Umbrella> = Vec::new();
        umbrellas.extend(cfg.lines.iter().filter_map(|l| l.umbrella.as_ref()));
        umbrellas.extend(st.and_then(|s| s.umbrella.as_ref()));
        umbrellas.extend(cfg.devices.iter().filter_map(|d| d.umbrella.as_ref()));
        for d in &cfg.devices {
            keep_numbers.extend(d.numbers.iter().cloned());
        }
        for u in &umbrellas {
            keep_numbers.extend(u.numbers.iter().cloned());
        }
        let mut names: Vec<String> = std::iter::once(&cfg.organisation.name)
            .chain(cfg.organisation.names.iter())
            .chain(umbrellas.iter().map(|u| &u.name))
            .map(|n| normalise(n))
            .filter(|n| !n.is_empty())
            .collect();
        names.dedup();
        Ok(CallInPlan {
            policy,
            reject_code: st.map_or(DEFAULT_REJECT, |s| s.reject_code),
            prompts: Arc::new(prompts),
            numbers,
            devices,
            keep: Keep {
                numbers: NumberSet::new(&keep_numbers, region)?,
                names,
            },
        })
    }

    /// Every self-test number as written, with whose it is.
    pub fn numbers(&self) -> &[(String, Owner)] {
        &self.numbers
    }

    /// Whose a self-test number (as written in the config) is; None when
    /// it is not a self-test number.
    pub fn owner_of(&self, number: &str) -> Option<&Owner> {
        self.numbers
            .iter()
            .find(|(n, _)| n == number)
            .map(|(_, o)| o)
    }

    /// `[selftest]`'s policy.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Final response after the message has played.
    pub fn reject_code(&self) -> u16 {
        self.reject_code
    }

    /// The recordings.
    pub fn prompts(&self) -> &Arc<Prompts> {
        &self.prompts
    }

    /// Every device, in file order.
    pub fn devices(&self) -> &[DevicePlan] {
        &self.devices
    }

    /// The device called `name`.
    pub fn device(&self, name: &str) -> Option<&DevicePlan> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// What may be kept of a caller's identity.
    pub fn keep(&self) -> &Keep {
        &self.keep
    }
}
