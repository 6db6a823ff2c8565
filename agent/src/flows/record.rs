//! One line of the flow stream: a verdict the programs reported, or a count of records
//! lost (by the kernel's ring buffer, or by a client that read too slowly). Serialised as
//! one JSON object per line, the same on the socket and in `palisade flows -o json`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamItem {
    Flow(Box<Flow>),
    Lost(Lost),
}

impl StreamItem {
    pub fn time_ns(&self) -> u64 {
        match self {
            StreamItem::Flow(f) => f.time_ns,
            StreamItem::Lost(l) => l.time_ns,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
}

/// What the kernel reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowEvent {
    /// The first packet of a flow policy allowed (sampled: `--allow-event-sampling`).
    NewFlow,
    /// A dropped packet (sampled: `--drop-event-sampling`).
    Drop,
    /// A packet that passed `log` rules on its way to its verdict (every one).
    Log,
}

/// One side of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub address: IpAddr,
    /// Ports for TCP and UDP.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port: Option<u16>,
    /// The workload endpoint with this address, as the client names it (filled in by
    /// `palisade flows`, which asks the datastore and Docker; the agent leaves it empty).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// When the program saw the packet: the kernel's timestamp as wall-clock time
    /// (RFC 3339, UTC, nanoseconds) and as nanoseconds since the Unix epoch.
    pub time: String,
    pub time_ns: u64,
    pub event: FlowEvent,
    pub verdict: Verdict,
    pub direction: String,
    /// The host-side interface of the local workload.
    pub ifindex: u32,
    pub protocol: String,
    pub src: Peer,
    pub dst: Peer,
    /// ICMP type and code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub icmp: Option<(u8, u8)>,
    /// The deciding rule or default; `-` when no policy lookup decided (not a workload
    /// address, malformed, ...) or the generation is unknown.
    pub rule: String,
    /// The policy or profile of the deciding rule.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy: Option<String>,
    /// The drop reason, for denied packets.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// The `log` rules the packet passed.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub logged_by: Vec<String>,
    /// The policy generation whose maps decided.
    pub generation: u32,
    pub bytes: u32,
}

/// Where records were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostSource {
    /// The programs found the ring buffer full (`STAT_EVENTS_LOST`): no one saw them.
    Kernel,
    /// This client read too slowly; the agent had them.
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// When the loss was noticed (wall clock).
    pub time: String,
    pub time_ns: u64,
    pub source: LostSource,
    pub events: u64,
    /// For kernel losses: they happened after this time (the previous check) and before
    /// `time`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub since: Option<String>,
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-23T03:30:00.123456789Z`.
pub fn rfc3339_ns(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_date(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ns % 1_000_000_000
    )
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_nanosecond_times() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ns(1_700_000_005_123_456_790),
            "2023-11-14T22:13:25.123456790Z"
        );
    }

    #[test]
    fn lost_records_round_trip_as_tagged_lines() {
        let item = StreamItem::Lost(Lost {
            time: rfc3339_ns(1),
            time_ns: 1,
            source: LostSource::Kernel,
            events: 7,
            since: None,
        });
        let line = serde_json::to_string(&item).unwrap();
        assert!(line.starts_with(r#"{"type":"lost""#), "{line}");
        assert_eq!(serde_json::from_str::<StreamItem>(&line).unwrap(), item);
    }
}
