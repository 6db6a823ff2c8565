//! Reading resources from `-f FILE` or `-f -` (stdin): the whole input is parsed and
//! validated before any command acts on it, so a bad document anywhere writes nothing.

use std::io::Read;

use crate::model::Resource;
use crate::model::parse::parse_documents;
use crate::model::validate::validate;

/// Reads, parses and validates every resource of `filename` (`-` is stdin). The error is
/// the text calicoctl prints after `Failed to execute command: `.
pub fn read_resources(filename: &str) -> Result<Vec<Resource>, String> {
    let text = read_text(filename)?;
    let resources = parse_documents(&text).map_err(|e| e.to_string())?;
    for (index, resource) in resources.iter().enumerate() {
        validate(resource).map_err(|e| {
            // In a file of several, say which resource, as parse errors do (`[1].spec...`).
            if resources.len() > 1 {
                format!("[{index}] {}: {e}", resource.key())
            } else {
                e.to_string()
            }
        })?;
    }
    Ok(resources)
}

fn read_text(filename: &str) -> Result<String, String> {
    if filename == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        Ok(text)
    } else {
        // Go's os.Open error reads `open <file>: <reason>`; keep that shape.
        std::fs::read_to_string(filename).map_err(|e| format!("open {filename}: {e}"))
    }
}

/// [`read_resources`], printing calicoctl's message on failure.
pub fn read_resources_or_report(filename: &str) -> Option<Vec<Resource>> {
    match read_resources(filename) {
        Ok(resources) => Some(resources),
        Err(err) => {
            println!("Failed to execute command: {err}");
            None
        }
    }
}
