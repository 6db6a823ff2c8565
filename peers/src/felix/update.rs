//! What Felix writes when the policy changes (FLX2 `iptables/table.go` `applyUpdates`,
//! `ipsets/ipsets.go`): new sets and members first, then per table only the chains that
//! changed, compared rule by rule through their hashes (`-R` where a hash differs, `-A`
//! past the old end, `-D` past the new end), new chains declared, gone chains flushed and
//! deleted last; sets no rule uses any more are destroyed after that.

use std::collections::BTreeMap;

use super::iptables::{Chain, comment_fragment};
use super::{IpSet, Ruleset, chains_by_name};

/// The three inputs of one update, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// `ipset restore`: sets created, members added and removed.
    pub ipsets_before: String,
    /// `iptables-restore --noflush`: the changed chains of the changed tables.
    pub iptables: String,
    /// `ipset restore`: sets destroyed.
    pub ipsets_after: String,
    /// How many chains changed, appeared or went.
    pub chains_touched: usize,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.ipsets_before.is_empty() && self.iptables.is_empty() && self.ipsets_after.is_empty()
    }
}

impl Ruleset {
    /// The update from this ruleset to `new` (same family and tables).
    pub fn update_to(&self, new: &Ruleset) -> Update {
        let mut update = Update::default();
        let old_sets: BTreeMap<&str, &IpSet> =
            self.ipsets.iter().map(|s| (s.name.as_str(), s)).collect();
        let new_sets: BTreeMap<&str, &IpSet> =
            new.ipsets.iter().map(|s| (s.name.as_str(), s)).collect();
        for (name, set) in &new_sets {
            match old_sets.get(name) {
                None => {
                    update.ipsets_before += &set.create_line();
                    update.ipsets_before.push('\n');
                    for member in &set.members {
                        update.ipsets_before += &format!("add {name} {member}\n");
                    }
                }
                Some(old) => {
                    for member in set.members.difference(&old.members) {
                        update.ipsets_before += &format!("add {name} {member}\n");
                    }
                    for member in old.members.difference(&set.members) {
                        update.ipsets_before += &format!("del {name} {member} --exist\n");
                    }
                }
            }
        }
        for name in old_sets.keys().filter(|n| !new_sets.contains_key(*n)) {
            update.ipsets_after += &format!("destroy {name}\n");
        }

        let hash_comments = new.config.hash_comments;
        for new_table in &new.tables {
            let Some(old_table) = self.table(new_table.name) else {
                update.iptables += &new_table.restore_text(hash_comments);
                continue;
            };
            let (old_chains, new_chains) = (chains_by_name(old_table), chains_by_name(new_table));
            let mut declarations = String::new();
            let mut lines = String::new();
            for (name, chain) in &new_chains {
                match old_chains.get(name) {
                    None => {
                        declarations += &format!(":{name} - -\n");
                        for line in chain.append_lines(hash_comments) {
                            lines += &line;
                            lines.push('\n');
                        }
                        update.chains_touched += 1;
                    }
                    Some(old) if old.hashes() != chain.hashes() => {
                        lines += &chain_diff(old, chain, hash_comments);
                        update.chains_touched += 1;
                    }
                    Some(_) => {}
                }
            }
            let gone: Vec<&&str> = old_chains
                .keys()
                .filter(|n| !new_chains.contains_key(**n))
                .collect();
            for name in &gone {
                lines += &format!("--flush {name}\n");
            }
            for name in &gone {
                lines += &format!("--delete-chain {name}\n");
                update.chains_touched += 1;
            }
            if !declarations.is_empty() || !lines.is_empty() {
                update.iptables += &format!("*{}\n{declarations}{lines}COMMIT\n", new_table.name);
            }
        }
        update
    }
}

/// The `-R`, `-A` and `-D` lines that turn `old` into `new`, rule by rule.
fn chain_diff(old: &Chain, new: &Chain, hash_comments: bool) -> String {
    let (old_hashes, new_hashes) = (old.hashes(), new.hashes());
    let prefix = |i: usize| hash_comments.then(|| comment_fragment(&new_hashes[i]));
    let mut text = String::new();
    for (i, rule) in new.rules.iter().enumerate() {
        match old_hashes.get(i) {
            Some(h) if *h == new_hashes[i] => {}
            Some(_) => {
                let position = format!("{} {}", new.name, i + 1);
                text += &rule.render("-R", &position, prefix(i).as_deref());
                text.push('\n');
            }
            None => {
                text += &rule.render("-A", &new.name, prefix(i).as_deref());
                text.push('\n');
            }
        }
    }
    // Rules past the new end are deleted one by one at the position after it.
    for _ in new.rules.len()..old.rules.len() {
        text += &format!("-D {} {}\n", new.name, new.rules.len() + 1);
    }
    text
}
