//! The profile of a Docker network: what a palisade network's containers get when the
//! operator has not written a profile of that name.

use crate::model::{Action, EntityRule, Profile, ProfileMetadata, ProfileSpec, Resource, Rule};
use crate::store::Op;

/// Calico's libnetwork default: the network's name as its only tag; ingress allowed from
/// endpoints with that tag (the network's own containers), egress allowed.
pub fn default_network_profile(network: &str) -> Profile {
    Profile {
        metadata: ProfileMetadata {
            name: network.to_string(),
            tags: vec![network.to_string()],
            ..ProfileMetadata::default()
        },
        spec: ProfileSpec {
            ingress: vec![Rule {
                action: Action::Allow,
                source: EntityRule {
                    tag: Some(network.to_string()),
                    ..EntityRule::default()
                },
                ..Rule::default()
            }],
            egress: vec![Rule {
                action: Action::Allow,
                ..Rule::default()
            }],
        },
    }
}

/// Creates the network's default profile unless a profile of that name exists, which is
/// then left exactly as it is.
pub fn ensure_network_profile(network: &str) -> Op {
    Op::Create {
        resource: Resource::Profile(default_network_profile(network)),
        skip_existing: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::validate;

    #[test]
    fn the_default_profile_is_calicos_and_valid() {
        let profile = default_network_profile("databases");
        let yaml = serde_yaml_ng::to_string(&Resource::Profile(profile.clone())).unwrap();
        assert_eq!(
            yaml,
            "kind: profile\napiVersion: v1\nmetadata:\n  name: databases\n  tags:\n  - databases\n\
             spec:\n  ingress:\n  - action: allow\n    source:\n      tag: databases\n    destination: {}\n\
             \x20 egress:\n  - action: allow\n    source: {}\n    destination: {}\n"
        );
        validate(&Resource::Profile(profile)).unwrap();
    }
}
