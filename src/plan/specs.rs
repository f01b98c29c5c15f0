//! The config's types as the verdict engine's plain inputs. The engine
//! knows nothing of the config file; this is the one place its types
//! become [`OrgSpec`], [`LineSpec`] and [`UmbrellaSpec`].

use crate::config::{Expect, Line, Organisation, Umbrella};
use crate::verdict::{LineSpec, OrgSpec, UmbrellaSpec};

impl From<&Organisation> for OrgSpec {
    fn from(o: &Organisation) -> OrgSpec {
        OrgSpec {
            name: o.name.clone(),
            names: o.names.clone(),
            numbers: o.numbers.clone(),
            hosts: o.hosts.clone(),
            region: o.region.clone(),
            descriptors: o.descriptors.clone(),
            default_descriptors: o.default_descriptors,
        }
    }
}

impl From<&Umbrella> for UmbrellaSpec {
    fn from(u: &Umbrella) -> UmbrellaSpec {
        UmbrellaSpec {
            name: u.name.clone(),
            numbers: u.numbers.clone(),
        }
    }
}

impl From<&Line> for LineSpec {
    fn from(l: &Line) -> LineSpec {
        line_spec(&l.name, l.expect, l.umbrella.as_ref())
    }
}

/// What a line, a device or the self-test must present, by name.
pub fn line_spec(name: &str, expect: Expect, umbrella: Option<&Umbrella>) -> LineSpec {
    LineSpec {
        name: name.to_string(),
        expect,
        umbrella: umbrella.map(UmbrellaSpec::from),
    }
}
