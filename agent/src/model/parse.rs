//! Reading resources from YAML or JSON files, as `calicoctl create|apply|replace|delete -f`
//! does: several YAML documents (`---`), each a single resource, a list (`kind: profileList`
//! with `items`) or a bare array of resources. Strict about kinds, versions and fields, and
//! every error says where: document number, item, field path and the offending value.

use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{
    API_VERSION, HostEndpoint, IpAllocation, IpPool, Kind, Policy, Profile, Resource,
    WorkloadEndpoint,
};

/// Why a file could not be read as resources, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based YAML document, when the input holds several (or the failing one is not
    /// the first).
    pub document: Option<usize>,
    /// Where inside the document: `[2].spec.ingress[0].protocl`, `items[1].metadata`;
    /// empty for the document itself.
    pub path: String,
    /// The offending scalar as written, when there is one to show.
    pub value: Option<String>,
    pub message: String,
}

impl ParseError {
    fn new(message: impl Into<String>) -> ParseError {
        ParseError {
            document: None,
            path: String::new(),
            value: None,
            message: message.into(),
        }
    }

    /// Puts `prefix` (an item index or a field name) in front of the path.
    fn within(mut self, prefix: &str) -> ParseError {
        self.path = join_path(prefix, &self.path);
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.document {
            write!(f, "document {n}: ")?;
        }
        if !self.path.is_empty() {
            f.write_str(&self.path)?;
            if let Some(value) = &self.value {
                write!(f, " = '{value}'")?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses every resource in a YAML or JSON text, in file order.
///
/// Empty documents are skipped; a text without any resource gives an empty list (the CLI
/// reports `No resources specified in file`). Nothing is validated beyond the shape: see
/// [`super::validate::validate`].
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ParseError> {
    let (documents, several) = split_documents(text)?;
    let mut resources = Vec::new();
    for (number, document) in documents {
        resources_from_document(document, &mut resources).map_err(|mut e| {
            if several {
                e.document = Some(number);
            }
            e
        })?;
    }
    Ok(resources)
}

/// Decodes the text into one JSON value per non-empty document, each with its 1-based
/// number in the stream (empty documents count, so that the numbers match what the user
/// sees), and whether the stream holds more than one document.
fn split_documents(text: &str) -> Result<(Vec<(usize, Value)>, bool), ParseError> {
    // Plain JSON first: YAML is a superset in theory, but JSON written with tabs or
    // exotic escapes is not always accepted by a YAML parser.
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(value) = serde_json::from_str::<Value>(text)
    {
        return Ok((vec![(1, value)], false));
    }
    let mut documents = Vec::new();
    let mut count = 0;
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        count = index + 1;
        // The stream is read lazily, so a syntax error's document count is only a lower
        // bound: name the document unless it is the very first.
        let value = Value::deserialize(document).map_err(|e| ParseError {
            document: (index > 0).then_some(index + 1),
            ..ParseError::new(e.to_string())
        })?;
        if !value.is_null() {
            documents.push((index + 1, value));
        }
    }
    Ok((documents, count > 1))
}

/// One document: a resource, a `...List`, or an array of either.
fn resources_from_document(document: Value, out: &mut Vec<Resource>) -> Result<(), ParseError> {
    match document {
        Value::Array(items) => {
            for (index, item) in items.into_iter().enumerate() {
                let at = format!("[{index}]");
                if is_list(&item) {
                    out.extend(resources_from_list(item).map_err(|e| e.within(&at))?);
                } else {
                    out.push(resource_from_value(item).map_err(|e| e.within(&at))?);
                }
            }
            Ok(())
        }
        document if is_list(&document) => {
            out.extend(resources_from_list(document)?);
            Ok(())
        }
        document => {
            out.push(resource_from_value(document)?);
            Ok(())
        }
    }
}

/// Whether a value claims to be a list (`kind: ...List`); an unknown `fooList` is then
/// reported as an unknown kind by [`resources_from_list`].
fn is_list(value: &Value) -> bool {
    value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with("List"))
}

/// `{kind: profileList, apiVersion: v1, metadata: {}, items: [...]}`. Items may repeat
/// `kind` and `apiVersion`; if they do, they must be the list's.
fn resources_from_list(value: Value) -> Result<Vec<Resource>, ParseError> {
    let Value::Object(mut map) = value else {
        return Err(ParseError::new("a list must be a mapping"));
    };
    let (kind_str, version_str) = take_type(&mut map);
    let kind = match Kind::from_list_name(&kind_str) {
        Some(kind) if version_str == API_VERSION => kind,
        _ => return Err(unknown_type(&kind_str, &version_str)),
    };
    check_fields(&map, &["metadata", "items"])?;
    match map.remove("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(Value::Object(m)) => {
            let field = m.keys().next().map(String::as_str).unwrap_or_default();
            return Err(unknown_field(field, &[]).within("metadata"));
        }
        Some(other) => {
            return Err(ParseError {
                path: "metadata".into(),
                ..ParseError::new(format!("expected a mapping, found {}", type_name(&other)))
            });
        }
    }
    let items = match map.remove("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ParseError {
                path: "items".into(),
                ..ParseError::new(format!("expected a sequence, found {}", type_name(&other)))
            });
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            item_of_list(kind, item).map_err(|e| e.within(&format!("items[{index}]")))
        })
        .collect()
}

fn item_of_list(kind: Kind, item: Value) -> Result<Resource, ParseError> {
    let Value::Object(mut map) = item else {
        return Err(not_a_mapping(&item));
    };
    let kind_value = map
        .entry("kind")
        .or_insert_with(|| Value::String(kind.api_name().into()));
    if kind_value.as_str() != Some(kind.api_name()) {
        return Err(ParseError {
            path: "kind".into(),
            value: Some(display_scalar(kind_value)),
            ..ParseError::new(format!(
                "an item of a {} must have kind {}",
                kind.list_name(),
                kind.api_name()
            ))
        });
    }
    map.entry("apiVersion")
        .or_insert_with(|| Value::String(API_VERSION.into()));
    resource_from_value(Value::Object(map))
}

/// Converts one already-decoded resource envelope.
pub fn resource_from_value(value: Value) -> Result<Resource, ParseError> {
    let Value::Object(mut map) = value else {
        return Err(not_a_mapping(&value));
    };
    let (kind_str, version_str) = take_type(&mut map);
    let kind = match Kind::from_api_name(&kind_str) {
        Some(kind) if version_str == API_VERSION => kind,
        _ => return Err(unknown_type(&kind_str, &version_str)),
    };
    check_fields(&map, &["metadata", "spec"])?;
    let metadata = map.remove("metadata").ok_or_else(|| {
        ParseError::new(format!("missing field `metadata` in {}", kind.api_name()))
    })?;
    // Every spec field is optional in v1, so the spec itself may be left out.
    let spec = match map.remove("spec") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(spec) => spec,
    };
    Ok(match kind {
        Kind::Profile => Resource::Profile(Profile {
            metadata: part("metadata", metadata)?,
            spec: part("spec", spec)?,
        }),
        Kind::Policy => Resource::Policy(Policy {
            metadata: part("metadata", metadata)?,
            spec: part("spec", spec)?,
        }),
        Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(WorkloadEndpoint {
            metadata: part("metadata", metadata)?,
            spec: part("spec", spec)?,
        }),
        Kind::HostEndpoint => Resource::HostEndpoint(HostEndpoint {
            metadata: part("metadata", metadata)?,
            spec: part("spec", spec)?,
        }),
        Kind::IpPool => Resource::IpPool(IpPool {
            metadata: part("metadata", metadata)?,
            spec: part("spec", spec)?,
        }),
        Kind::IpAllocation => Resource::IpAllocation(IpAllocation {
            metadata: part("metadata", metadata)?,
            spec: part("spec", spec)?,
        }),
    })
}

/// Removes `kind` and `apiVersion`, rendering them as calicoctl's error does (a missing or
/// non-string value shows as empty).
fn take_type(map: &mut Map<String, Value>) -> (String, String) {
    let mut take = |key: &str| match map.remove(key) {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => display_scalar(&other),
    };
    let kind = take("kind");
    let version = take("apiVersion");
    (kind, version)
}

fn unknown_type(kind: &str, version: &str) -> ParseError {
    ParseError::new(format!(
        "Unknown resource type ({kind}) and/or version ({version})"
    ))
}

/// Rejects any key of an envelope other than `kind`, `apiVersion` (already taken) and
/// `allowed`.
fn check_fields(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), ParseError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(field) => Err(unknown_field(field, allowed)),
        None => Ok(()),
    }
}

fn unknown_field(field: &str, allowed: &[&str]) -> ParseError {
    let expected = match allowed {
        [] => "there are no fields".to_string(),
        [only] => format!("expected `{only}`"),
        _ => {
            let names: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
            format!("expected one of `kind`, `apiVersion`, {}", names.join(", "))
        }
    };
    ParseError {
        path: field.to_string(),
        ..ParseError::new(format!("unknown field `{field}`, {expected}"))
    }
}

fn not_a_mapping(value: &Value) -> ParseError {
    ParseError::new(format!(
        "a resource must be a mapping with kind, apiVersion, metadata and spec, found {}",
        type_name(value)
    ))
}

/// Deserializes `metadata` or `spec`, naming the path of the offending field on error and,
/// when it is a scalar, its value.
fn part<T: DeserializeOwned>(name: &str, value: Value) -> Result<T, ParseError> {
    // Kept for the error path: deserializing consumes the value.
    let original = value.clone();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let segments: Vec<&serde_path_to_error::Segment> = e.path().iter().collect();
        let offending = lookup(&original, &segments)
            .filter(|v| !v.is_object() && !v.is_array())
            .map(display_scalar);
        let inner = e.inner().to_string();
        // serde's messages often quote the value already ("invalid value: integer `300`").
        let value = offending.filter(|v| !inner.contains(&format!("`{v}`")));
        ParseError {
            path: render_path(name, &segments),
            value,
            ..ParseError::new(inner)
        }
    })
}

fn render_path(root: &str, segments: &[&serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut path = root.to_string();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                path.push('.');
                path.push_str(key);
            }
            Segment::Enum { variant } => {
                path.push('.');
                path.push_str(variant);
            }
            Segment::Unknown => path.push_str(".?"),
        }
    }
    path
}

/// The value at `segments` inside `value`, if it exists.
fn lookup<'v>(value: &'v Value, segments: &[&serde_path_to_error::Segment]) -> Option<&'v Value> {
    use serde_path_to_error::Segment;
    segments
        .iter()
        .try_fold(value, |current, segment| match segment {
            Segment::Seq { index } => current.get(*index),
            Segment::Map { key } => current.get(key.as_str()),
            _ => None,
        })
}

fn join_path(prefix: &str, path: &str) -> String {
    if path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('[') || prefix.is_empty() {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

/// A scalar as the user wrote it (strings without quotes).
fn display_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}
