//! Resource files, as `palisade apply -f` reads them: any text (YAML or JSON, several
//! documents, lists, arrays) either parses or fails with a message; validation never
//! panics; and what parsed re-serialises (as one YAML sequence, as a JSON array, and as a
//! stream of YAML documents) and parses back to the same resources.

use palisade::model::parse::parse_documents;
use palisade::model::validate::validate;

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let resources = match parse_documents(text) {
        Ok(resources) => resources,
        Err(err) => {
            assert!(!err.to_string().is_empty(), "an error without a message");
            return;
        }
    };
    for resource in &resources {
        if let Err(err) = validate(resource) {
            assert!(
                !err.to_string().is_empty(),
                "a validation error without a message"
            );
        }
    }
    let yaml = serde_yaml_ng::to_string(&resources)
        .unwrap_or_else(|err| panic!("cannot write {resources:?} as YAML: {err}"));
    let json = serde_json::to_string(&resources)
        .unwrap_or_else(|err| panic!("cannot write {resources:?} as JSON: {err}"));
    let mut stream = String::new();
    for resource in &resources {
        stream.push_str("---\n");
        stream.push_str(
            &serde_yaml_ng::to_string(resource)
                .unwrap_or_else(|err| panic!("cannot write {resource:?} as YAML: {err}")),
        );
    }
    for (form, written) in [
        ("YAML", &yaml),
        ("JSON", &json),
        ("YAML documents", &stream),
    ] {
        match parse_documents(written) {
            Ok(back) => assert_eq!(
                back, resources,
                "{text:?} parsed, was written as {form}\n{written}\nand read back differently"
            ),
            Err(err) => panic!(
                "{text:?} parsed, was written as {form}\n{written}\nand does not read back: {err}"
            ),
        }
    }
}
