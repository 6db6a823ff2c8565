use std::fmt;

use ipnet::IpNet;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One policy or profile rule. All criteria that are set must match (AND).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    /// Always written, even when empty, as calicoctl does.
    #[serde(default)]
    pub source: EntityRule,
    #[serde(default)]
    pub destination: EntityRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    /// Non-terminal: record the packet and go on with the next rule.
    Log,
    /// Skip the remaining policies and go to the endpoint's profiles.
    Pass,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Log => "log",
            Action::Pass => "pass",
        })
    }
}

/// The source or destination half of a rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_tag: Option<String>,
    /// Deprecated single-CIDR forms; not to be mixed with `nets`/`notNets` in one rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_net: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
}

impl EntityRule {
    /// `net` and `nets` together (they are merged, as Felix does).
    pub fn all_nets(&self) -> impl Iterator<Item = &IpNet> {
        self.net.iter().chain(self.nets.iter())
    }

    /// `notNet` and `notNets` together.
    pub fn all_not_nets(&self) -> impl Iterator<Item = &IpNet> {
        self.not_net.iter().chain(self.not_nets.iter())
    }

    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpFields {
    /// 0-254.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// 0-255; only together with a type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

/// A protocol as written: a name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `udplite`) or a
/// number 1-255. Kept as written so that validation can report a bad value verbatim; a
/// quoted number (`"6"`) is a number, as upstream's Uint8OrString reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    Name(String),
    Number(i64),
}

/// The protocol names v1 accepts, with their IANA numbers.
pub const PROTOCOL_NAMES: [(&str, u8); 6] = [
    ("tcp", 6),
    ("udp", 17),
    ("icmp", 1),
    ("icmpv6", 58),
    ("sctp", 132),
    ("udplite", 136),
];

impl Protocol {
    /// The IP protocol number, or `None` for a value validation rejects.
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Number(n) => u8::try_from(*n).ok().filter(|n| *n != 0),
            Protocol::Name(name) => PROTOCOL_NAMES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, num)| *num),
        }
    }

    /// Whether rules with this protocol may name ports (TCP and UDP only, as in v1).
    pub fn supports_ports(&self) -> bool {
        matches!(self.number(), Some(6 | 17))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Name(n) => f.write_str(n),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Name(n) => s.serialize_str(n),
            Protocol::Number(n) => s.serialize_i64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a protocol name or number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                Ok(Protocol::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                Ok(Protocol::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                // Upstream parses a quoted number as a number only if it fits a uint8;
                // "256" stays a (then invalid) name.
                Ok(match v.parse::<u8>() {
                    Ok(n) => Protocol::Number(i64::from(n)),
                    Err(_) => Protocol::Name(v.to_string()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A port or an inclusive port range. Written as an integer (`80`) or a string (`"80"`,
/// `"8000:8080"`); a single port is written back as an integer, a range as `"min:max"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    pub min: u16,
    pub max: u16,
}

impl Port {
    pub fn single(port: u16) -> Port {
        Port {
            min: port,
            max: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.min <= port && port <= self.max
    }

    /// Parses the string form with libcalico-go's messages.
    pub fn parse(s: &str) -> Result<Port, String> {
        match s.split_once(':') {
            None => s
                .parse::<u16>()
                .map(Port::single)
                .map_err(|_| format!("invalid port format ({s})")),
            Some((lo, hi)) => {
                if hi.contains(':') {
                    return Err(format!("invalid port format ({s})"));
                }
                let min = lo
                    .parse::<u16>()
                    .map_err(|_| format!("invalid minimum port number in range ({s})"))?;
                let max = hi
                    .parse::<u16>()
                    .map_err(|_| format!("invalid maximum port number in range ({s})"))?;
                if min > max {
                    return Err(format!(
                        "minimum port number ({min}) is greater than maximum port number ({max}) in port range"
                    ));
                }
                Ok(Port { min, max })
            }
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}:{}", self.min, self.max)
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.min == self.max {
            s.serialize_u16(self.min)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a \"min:max\" range")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::custom(format!("invalid port format ({v})")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::custom(format!("invalid port format ({v})")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                Port::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
