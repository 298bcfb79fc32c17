//! The command line as a user meets it: help, version, completions, man.

use crate::support::*;

#[test]
fn help_teaches_with_examples() {
    for sub in [&["--help"][..], &["serve", "--help"], &["connect", "--help"], &["listen", "--help"]] {
        let out = run(sub, b"");
        assert_ok(&out);
        let help = text(&out.stdout);
        assert!(help.contains("Examples:"), "{sub:?}: {help}");
    }
    let out = run(&["connect", "--help"], b"");
    assert!(text(&out.stdout).contains("Close model"));
}

#[test]
fn version_completions_and_man() {
    let out = run(&["--version"], b"");
    assert_ok(&out);
    assert!(text(&out.stdout).starts_with("sockit "));
    let out = run(&["completions", "bash"], b"");
    assert_ok(&out);
    assert!(text(&out.stdout).contains("_sockit()"));
    let out = run(&["man"], b"");
    assert_ok(&out);
    assert!(text(&out.stdout).contains(".TH sockit"));
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["serve", "nosuch"], b"");
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["serve", "greet", "--listen", "udp://127.0.0.1:0"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("greet speaks TCP and Unix streams, not UDP"));
}
