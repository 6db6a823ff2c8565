//! `palisade selector test`.

#![allow(clippy::unwrap_used)]

mod cli_support;

use cli_support::Palisade;

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

#[test]
fn matching_and_not_matching() {
    let p = Palisade::new();
    let run = p.run(&[
        "selector",
        "test",
        "role == 'db'",
        "--labels",
        r#"{"role": "db"}"#,
    ]);
    assert_eq!((run.code, last_line(&run.stdout)), (0, "true"), "{run:?}");
    assert!(
        run.stdout.contains(r#"role == "db""#),
        "canonical form: {run:?}"
    );

    let run = p.run(&[
        "selector",
        "test",
        "role == 'db'",
        "--labels",
        r#"{"role": "web"}"#,
    ]);
    assert_eq!((run.code, last_line(&run.stdout)), (0, "false"), "{run:?}");

    let run = p.run(&["selector", "test", "role == 'db'"]);
    assert_eq!((run.code, last_line(&run.stdout)), (0, "false"), "{run:?}");
}

#[test]
fn richer_selectors() {
    let p = Palisade::new();
    let labels = r#"{"role": "db", "tier": "backend"}"#;
    for (selector, expected) in [
        ("has(role) && !has(frontend)", "true"),
        ("role in {'db', 'cache'} && tier != 'frontend'", "true"),
        ("all()", "true"),
        ("role == 'db' && tier == 'frontend'", "false"),
    ] {
        let run = p.run(&["selector", "test", selector, "--labels", labels]);
        assert_eq!(
            (run.code, last_line(&run.stdout)),
            (0, expected),
            "{selector}: {run:?}"
        );
    }
}

#[test]
fn invalid_selector_shows_where() {
    let p = Palisade::new();
    let run = p.run(&["selector", "test", "role == 'db"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("position"), "{run:?}");
    assert!(run.stderr.contains("role == 'db"), "{run:?}");
    assert!(
        run.stderr.lines().last().unwrap().trim_end().ends_with('^'),
        "{run:?}"
    );
    assert!(!run.stdout.ends_with("true\n") && !run.stdout.ends_with("false\n"));
}

#[test]
fn invalid_labels_name_the_option() {
    let p = Palisade::new();
    for labels in ["[1]", "{\"a\": 1}", "not json"] {
        let run = p.run(&["selector", "test", "has(a)", "--labels", labels]);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains("--labels"), "{run:?}");
    }
}
