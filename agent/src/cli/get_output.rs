//! The `-o` formats of `get`: `ps` and `wide` tables, `yaml` and `json` lists.

use crate::model::{Kind, Resource};

use super::endpoint_lookup::ContainerNames;
use super::{columns, tabwriter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Ps,
    Wide,
    Yaml,
    Json,
}

impl OutputFormat {
    /// Reads `-o`. The error is the message to print as it is.
    pub fn parse(text: &str) -> Result<OutputFormat, String> {
        match text {
            "ps" => Ok(OutputFormat::Ps),
            "wide" => Ok(OutputFormat::Wide),
            "yaml" => Ok(OutputFormat::Yaml),
            "json" => Ok(OutputFormat::Json),
            _ if ["custom-columns=", "go-template=", "go-template-file="]
                .iter()
                .any(|prefix| text.starts_with(prefix)) =>
            {
                Err(format!(
                    "output format '{text}' is not supported by palisade: use ps, wide, yaml or json"
                ))
            }
            _ => Err(format!("unrecognized output format '{text}'")),
        }
    }
}

/// The resources one query found, printed as one table in `ps`/`wide` output.
pub struct Found {
    pub kind: Kind,
    pub resources: Vec<Resource>,
}

/// Renders everything found, as calicoctl prints it (the text ends with a newline).
///
/// Workload endpoint tables get a CONTAINER column when Docker names some of them.
pub fn render(
    format: OutputFormat,
    found: &[Found],
    containers: &ContainerNames,
) -> Result<String, String> {
    let all = || found.iter().flat_map(|f| f.resources.iter());
    match format {
        OutputFormat::Ps | OutputFormat::Wide => {
            let wide = format == OutputFormat::Wide;
            let mut out = String::new();
            for table in found {
                let mut rows = vec![
                    columns::headings(table.kind, wide)
                        .iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>(),
                ];
                rows.extend(table.resources.iter().map(|r| columns::cells(r, wide)));
                let container = |r: &Resource| match r {
                    Resource::WorkloadEndpoint(w) => containers.of_endpoint(w),
                    _ => None,
                };
                if table.resources.iter().any(|r| container(r).is_some()) {
                    for (row, resource) in rows
                        .iter_mut()
                        .zip(std::iter::once(None).chain(table.resources.iter().map(Some)))
                    {
                        row.push(match resource {
                            None => "CONTAINER".to_string(),
                            Some(r) => container(r).unwrap_or_default().to_string(),
                        });
                    }
                }
                out.push_str(&tabwriter::render(&rows));
                // calicoctl leaves a blank line after each table.
                out.push('\n');
            }
            Ok(out)
        }
        OutputFormat::Yaml => {
            let mut value = as_go_json(all().collect())?;
            // calicoctl's YAML goes through JSON maps, so its keys come out sorted.
            sort_keys(&mut value);
            serde_yaml_ng::to_string(&value).map_err(|e| e.to_string())
        }
        OutputFormat::Json => {
            let value = as_go_json(all().collect())?;
            let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
            Ok(text + "\n")
        }
    }
}

/// The resources as a JSON value with numbers written as Go's encoding/json writes a
/// float64: `100`, not `100.0` (policy `order` is a float).
fn as_go_json(resources: Vec<&Resource>) -> Result<serde_json::Value, String> {
    let mut value = serde_json::to_value(resources).map_err(|e| e.to_string())?;
    integral_floats_as_integers(&mut value);
    Ok(value)
}

fn integral_floats_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                // Beyond 2^53 a float no longer stands for one integer; Go switches to
                // exponent form at 1e21 anyway.
                && float.fract() == 0.0
                && float.abs() < 9.0e15
            {
                *number = serde_json::Number::from(float as i64);
            }
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

fn sort_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn output_formats() {
        assert_eq!(OutputFormat::parse("wide"), Ok(OutputFormat::Wide));
        assert_eq!(
            OutputFormat::parse("xml"),
            Err("unrecognized output format 'xml'".to_string())
        );
        assert!(
            OutputFormat::parse("go-template={{.Metadata.Name}}")
                .unwrap_err()
                .contains("not supported by palisade")
        );
    }

    #[test]
    fn empty_yaml_and_json_are_empty_lists() {
        let none = ContainerNames::default();
        assert_eq!(render(OutputFormat::Yaml, &[], &none).unwrap(), "[]\n");
        assert_eq!(render(OutputFormat::Json, &[], &none).unwrap(), "[]\n");
    }
}
