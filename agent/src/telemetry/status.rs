//! What the agent reports about itself: where it stands with the datastore, and what the
//! enforcer last did. Plain data, copied out for each probe and scrape.

use std::sync::Arc;

use crate::policy::{RuleOwner, RuleRef};
use crate::store::Revision;

/// Where the agent stands with its datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatastoreState {
    /// No view of the datastore yet.
    #[default]
    Connecting,
    /// Following it.
    InSync,
    /// It cannot be read; the last view stays in force, retrying.
    Degraded,
}

impl DatastoreState {
    pub const ALL: [DatastoreState; 3] = [
        DatastoreState::Connecting,
        DatastoreState::InSync,
        DatastoreState::Degraded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatastoreState::Connecting => "connecting",
            DatastoreState::InSync => "in_sync",
            DatastoreState::Degraded => "degraded",
        }
    }
}

/// One of this node's workload endpoints as the enforcer last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The workload endpoint's name.
    pub name: String,
    pub interface: String,
    /// The interface's index, if the host has the interface.
    pub ifindex: Option<u32>,
    /// Whether the programs are attached to the interface.
    pub attached: bool,
}

/// What one `PAL_RULE_STATS` index counts, as metric labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLabels {
    pub index: u32,
    /// `policy` or `profile`.
    pub kind: &'static str,
    /// The policy's or profile's name.
    pub owner: String,
    pub direction: String,
    /// 1-based, as `palisade profile NAME rule show` numbers rules.
    pub rule: String,
    pub action: String,
}

impl RuleLabels {
    pub fn new(index: u32, rule: &RuleRef) -> RuleLabels {
        let (kind, owner) = match &rule.owner {
            RuleOwner::Policy(name) => ("policy", name.clone()),
            RuleOwner::Profile(name) => ("profile", name.clone()),
        };
        RuleLabels {
            index,
            kind,
            owner,
            direction: rule.direction.to_string(),
            rule: (rule.index + 1).to_string(),
            action: rule.action.to_string(),
        }
    }
}

/// What the enforcer reports after each reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// The revision whose policy the maps hold, once this agent has published one.
    pub policy_revision: Option<Revision>,
    /// This node's workload endpoints in the view.
    pub endpoints: Vec<LocalEndpoint>,
    /// Every rule counter handed out, by index.
    pub rules: Arc<[RuleLabels]>,
    /// Entries of the maps the agent fills, from its own records (see
    /// [`crate::dataplane::writer::Writer::occupancy`]).
    pub occupancy: Vec<(&'static str, u64)>,
}

/// Everything the agent reported, as one copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub datastore: DatastoreState,
    /// The latest revision of the datastore the agent has seen.
    pub datastore_revision: Option<Revision>,
    pub enforcement: Enforcement,
    /// Policy updates that did not fit or could not be written.
    pub updates_refused: u64,
}
