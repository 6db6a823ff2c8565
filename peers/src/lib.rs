//! The dataplanes palisade is measured against, generated from the same Calico v1
//! resources it enforces: Felix 2.6.8's iptables + ipset rendering ([`felix`]) and an
//! nftables ruleset as a careful nft user would write it ([`nft`]). Both are pure text
//! generators; `tests/src/netfilter.rs` loads them into a namespace, `cargo xtask bench
//! peers` measures them beside palisade, and `tests/tests/peers_rulesets.rs` checks that
//! they enforce what `palisade trace` says.

pub mod felix;
pub mod nft;
pub mod view;

pub use view::{Family, View};
