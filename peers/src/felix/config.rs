//! The renderer's settings: Felix 2.6.8's defaults (FLX2 `config/config_params.go`,
//! `rules/rule_defs.go`), with the interface prefix as the one a deployment chooses.

use crate::view::Family;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Felix's `InterfacePrefix`: workload interfaces are `<prefix>...`, matched as `<prefix>+`.
    pub interface_prefix: String,
    /// The mark bits, in the order Felix takes them from `IptablesMarkMask` (0xff000000).
    pub mark_accept: u32,
    pub mark_pass: u32,
    pub mark_scratch0: u32,
    pub mark_scratch1: u32,
    pub log_prefix: String,
    /// The `cali:<hash>` comment on every rule (one cheap match each; Felix always has it).
    pub hash_comments: bool,
    pub family: Family,
}

impl Config {
    /// Felix 2.6.8's defaults for `family`, with interface prefix `cali`.
    pub fn felix_defaults(family: Family) -> Config {
        Config {
            interface_prefix: "cali".into(),
            mark_accept: 0x0100_0000,
            mark_pass: 0x0200_0000,
            mark_scratch0: 0x0400_0000,
            mark_scratch1: 0x0800_0000,
            log_prefix: "calico-packet".into(),
            hash_comments: true,
            family,
        }
    }

    /// The same with workload interfaces named `<prefix>...` (palisade plumbs `pal...`).
    pub fn with_interface_prefix(mut self, prefix: &str) -> Config {
        self.interface_prefix = prefix.to_string();
        self
    }

    /// The same without hash comments (as the reference's worked examples print rules).
    pub fn without_hash_comments(mut self) -> Config {
        self.hash_comments = false;
        self
    }

    /// Every Calico mark bit (`0xf000000` with the defaults).
    pub fn all_marks(&self) -> u32 {
        self.mark_accept | self.mark_pass | self.mark_scratch0 | self.mark_scratch1
    }

    /// The wildcard that matches every workload interface.
    pub fn workload_interfaces(&self) -> String {
        format!("{}+", self.interface_prefix)
    }
}
