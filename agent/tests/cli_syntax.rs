//! Command-line syntax: calicoctl's "Invalid option" message, help and version.

#![allow(clippy::unwrap_used)]

mod cli_support;

use cli_support::{Palisade, both_backends};

#[test]
fn bad_syntax_gets_calicoctl_message() {
    let p = Palisade::new();
    let datastore = p.datastore_url();
    for args in [
        vec!["bogus"],
        vec!["get"],
        vec!["create"],
        vec!["get", "policy", "-o"],
        vec!["delete", "policy", "p", "--no-such-flag"],
        vec!["get", "policy", "-f", "x.yaml"],
    ] {
        let run = p.run(&args);
        // calicoctl's message with clap's reason in it, and nothing else: one mistake,
        // one message.
        let start = format!(
            "Invalid option: 'palisade --datastore {datastore} {}': ",
            args.join(" ")
        );
        let end = ". Use flag '--help' to read about a specific subcommand.\n";
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stdout.starts_with(&start) && run.stdout.ends_with(end),
            "{run:?}"
        );
        assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
        assert_eq!(run.stderr, "", "{run:?}");
    }
    let run = p.run(&["apply"]);
    assert!(
        run.stdout
            .contains("the following required arguments were not provided: --filename <FILENAME>"),
        "{run:?}"
    );
}

#[test]
fn help_and_version() {
    let p = Palisade::new();
    let help = p.run(&["--help"]);
    assert_eq!(help.code, 0);
    for command in [
        "create", "apply", "replace", "delete", "get", "profile", "endpoint", "selector", "trace",
        "agent", "version",
    ] {
        assert!(
            help.stdout.contains(command),
            "{command} missing from {help:?}"
        );
    }
    let create_help = p.run(&["create", "--help"]);
    assert_eq!(create_help.code, 0);
    assert!(
        create_help.stdout.contains("never partial success"),
        "{create_help:?}"
    );
    assert!(
        create_help.stdout.contains("--skip-exists"),
        "{create_help:?}"
    );

    let version = p.run(&["version"]);
    assert_eq!(version.code, 0);
    assert!(version.stdout.starts_with("palisade "), "{version:?}");
    assert_eq!(p.run(&["--version"]).stdout, version.stdout);
}

both_backends! {
fn the_datastore_comes_from_the_environment_too() {
    let p = Palisade::new();
    p.apply("apiVersion: v1\nkind: profile\nmetadata: {name: a}\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["get", "profile", "a"])
        .env("PALISADE_DATASTORE", p.datastore_url())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "NAME   \na      \n\n"
    );
}
}
