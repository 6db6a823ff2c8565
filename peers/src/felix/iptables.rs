//! iptables rules, chains and tables in the textual form Felix writes
//! (FLX2 `iptables/actions.go`, `match_builder.go`, `rules.go`), and its rule-hash comments.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha224};

/// How many base64 characters of a rule's hash its comment carries.
const HASH_LENGTH: usize = 16;

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    Log {
        prefix: String,
    },
    /// Sets the bits of `mark` (mask = mark).
    SetMark(u32),
    /// Clears the bits of `mark`.
    ClearMark(u32),
    SetMaskedMark {
        mark: u32,
        mask: u32,
    },
    Masquerade,
}

impl Action {
    /// The action's fragment, as Felix spells it (iptables-save spells some differently).
    pub fn fragment(&self) -> String {
        match self {
            Action::Accept => "--jump ACCEPT".into(),
            Action::Drop => "--jump DROP".into(),
            Action::Return => "--jump RETURN".into(),
            Action::Jump(chain) => format!("--jump {chain}"),
            Action::Goto(chain) => format!("--goto {chain}"),
            Action::Log { prefix } => {
                format!("--jump LOG --log-prefix \"{prefix}: \" --log-level 5")
            }
            Action::SetMark(mark) => {
                format!("--jump MARK --set-mark {}/{}", hex(*mark), hex(*mark))
            }
            Action::ClearMark(mark) => format!("--jump MARK --set-mark 0/{}", hex(*mark)),
            Action::SetMaskedMark { mark, mask } => {
                format!("--jump MARK --set-mark {}/{}", hex(*mark), hex(*mask))
            }
            Action::Masquerade => "--jump MASQUERADE".into(),
        }
    }

    /// The chain the action sends packets to, if any.
    pub fn target_chain(&self) -> Option<&str> {
        match self {
            Action::Jump(c) | Action::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// Go's `%#x`: `0x` and lowercase hex digits; zero is `0x0`.
pub fn hex(value: u32) -> String {
    format!("{value:#x}")
}

/// One rule: an optional comment of its own, match fragments (ANDed), an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub comment: Option<String>,
    pub matches: Vec<String>,
    pub action: Action,
}

impl Rule {
    pub fn new(matches: Vec<String>, action: Action) -> Rule {
        Rule {
            comment: None,
            matches,
            action,
        }
    }

    pub fn commented(comment: &str, matches: Vec<String>, action: Action) -> Rule {
        Rule {
            comment: Some(comment.to_string()),
            matches,
            action,
        }
    }

    /// `<op> <chain> [prefix] [-m comment --comment "<comment>"] <matches> <action>`;
    /// `chain` may carry a rule number (`-R <chain> <n>`).
    pub fn render(&self, op: &str, chain: &str, prefix: Option<&str>) -> String {
        let mut fragments = vec![op.to_string(), chain.to_string()];
        fragments.extend(prefix.map(str::to_string));
        if let Some(comment) = &self.comment {
            fragments.push(format!("-m comment --comment \"{comment}\""));
        }
        let matches = self.matches.join(" ");
        if !matches.is_empty() {
            fragments.push(matches);
        }
        fragments.push(self.action.fragment());
        fragments.join(" ")
    }
}

/// A chain and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn new(name: impl Into<String>, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            rules,
        }
    }

    /// Felix's rule hashes (FLX2 `Chain.RuleHashes`): SHA-224 chained from the chain's
    /// name through every rule rendered as `-A <chain> HASH ...`, so a rule's hash also
    /// says where it is and what comes before it.
    pub fn hashes(&self) -> Vec<String> {
        let mut hash = Sha224::digest(self.name.as_bytes()).to_vec();
        self.rules
            .iter()
            .map(|rule| {
                let mut hasher = Sha224::new();
                hasher.update(&hash);
                hasher.update(rule.render("-A", &self.name, Some("HASH")).as_bytes());
                hash = hasher.finalize().to_vec();
                URL_SAFE_NO_PAD.encode(&hash)[..HASH_LENGTH].to_string()
            })
            .collect()
    }

    /// The chain's rules as iptables-restore lines (`-A ...`), each with its hash comment
    /// first when `hash_comments` is on.
    pub fn append_lines(&self, hash_comments: bool) -> Vec<String> {
        let hashes = if hash_comments {
            self.hashes()
        } else {
            Vec::new()
        };
        self.rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let prefix = hashes.get(i).map(|h| comment_fragment(h));
                rule.render("-A", &self.name, prefix.as_deref())
            })
            .collect()
    }

    /// The chains this one jumps or goes to.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter_map(|r| r.action.target_chain())
    }
}

/// The hash comment Felix puts first on each of its rules.
pub fn comment_fragment(hash: &str) -> String {
    format!("-m comment --comment \"cali:{hash}\"")
}

/// One iptables table as Felix owns it: rules inserted at the top of built-in chains (the
/// hooks), and its own chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    /// (built-in chain, rules inserted at its top, in order).
    pub hooks: Vec<(&'static str, Vec<Rule>)>,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The whole table as iptables-restore input for `iptables-restore --noflush`: our
    /// chains declared (which also flushes them), the hooks inserted, every rule appended.
    pub fn restore_text(&self, hash_comments: bool) -> String {
        let mut text = format!("*{}\n", self.name);
        for chain in &self.chains {
            text += &format!(":{} - -\n", chain.name);
        }
        for (builtin, rules) in &self.hooks {
            let chain = Chain::new(*builtin, rules.clone());
            let hashes = if hash_comments {
                chain.hashes()
            } else {
                Vec::new()
            };
            // Inserted in reverse, so that they end up at the top in order.
            for (i, rule) in rules.iter().enumerate().rev() {
                let prefix = hashes.get(i).map(|h| comment_fragment(h));
                text += &rule.render("-I", builtin, prefix.as_deref());
                text.push('\n');
            }
        }
        for chain in &self.chains {
            for line in chain.append_lines(hash_comments) {
                text += &line;
                text.push('\n');
            }
        }
        text + "COMMIT\n"
    }
}
