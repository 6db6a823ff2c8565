//! Chain and ipset names as Felix 2.6.8 forms them (FLX2 `rules/rule_defs.go`,
//! `hashutils/id.go`, `ipsets/ipset_defs.go`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::view::Family;

/// iptables' limit on chain names, as Felix applies it.
pub const MAX_CHAIN_NAME: usize = 28;
/// The kernel's limit on ipset names.
pub const MAX_IPSET_NAME: usize = 31;

pub const POLICY_INBOUND: &str = "cali-pi-";
pub const POLICY_OUTBOUND: &str = "cali-po-";
pub const PROFILE_INBOUND: &str = "cali-pri-";
pub const PROFILE_OUTBOUND: &str = "cali-pro-";
pub const TO_WORKLOAD: &str = "cali-tw-";
pub const FROM_WORKLOAD: &str = "cali-fw-";
pub const FROM_WORKLOAD_DISPATCH: &str = "cali-from-wl-dispatch";
pub const TO_WORKLOAD_DISPATCH: &str = "cali-to-wl-dispatch";

/// `prefix + suffix` if it fits `max`; otherwise (or if it exactly fits but the suffix
/// starts with `_`, the mark of a shortened name) `prefix + "_" +` as much of
/// base64url(SHA-256(suffix)) as fits.
pub fn length_limited(prefix: &str, suffix: &str, max: usize) -> String {
    let total = prefix.len() + suffix.len();
    if total > max || (total == max && suffix.starts_with('_')) {
        let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(suffix.as_bytes()));
        let room = max.saturating_sub(prefix.len() + 1).min(hash.len());
        format!("{prefix}_{}", &hash[..room])
    } else {
        format!("{prefix}{suffix}")
    }
}

/// A policy, profile or endpoint chain: `prefix` and the policy, profile or interface name.
pub fn chain(prefix: &str, name: &str) -> String {
    length_limited(prefix, name, MAX_CHAIN_NAME)
}

/// The main ipset of a set ID (`s:...` for a selector): `cali4-` or `cali6-` and the ID,
/// cut to the kernel's 31 characters.
pub fn ipset(family: Family, id: &str) -> String {
    let mut name = format!("cali{}-{id}", family.version());
    name.truncate(MAX_IPSET_NAME);
    name
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_ones_hashed_to_the_limit() {
        assert_eq!(
            chain(POLICY_INBOUND, "allow-frontend"),
            "cali-pi-allow-frontend"
        );
        let long = chain(POLICY_INBOUND, "a-policy-name-that-is-far-too-long");
        assert_eq!(long.len(), MAX_CHAIN_NAME);
        assert!(long.starts_with("cali-pi-_"), "{long}");
        assert_ne!(
            long,
            chain(POLICY_INBOUND, "a-policy-name-that-is-far-too-lonG")
        );
    }

    #[test]
    fn an_exact_fit_starting_with_underscore_is_hashed_too() {
        let suffix = format!("_{}", "x".repeat(MAX_CHAIN_NAME - POLICY_INBOUND.len() - 1));
        let name = chain(POLICY_INBOUND, &suffix);
        assert_eq!(name.len(), MAX_CHAIN_NAME);
        assert_ne!(name, format!("{POLICY_INBOUND}{suffix}"));
        let plain = "y".repeat(MAX_CHAIN_NAME - POLICY_INBOUND.len());
        assert_eq!(
            chain(POLICY_INBOUND, &plain),
            format!("{POLICY_INBOUND}{plain}")
        );
    }

    #[test]
    fn ipset_names_are_cut_to_31_characters() {
        let id = "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug";
        assert_eq!(ipset(Family::V4, id), "cali4-s:5y5I3VdRZfDU01O--xXAPx2");
        assert_eq!(ipset(Family::V6, id), "cali6-s:5y5I3VdRZfDU01O--xXAPx2");
    }
}
