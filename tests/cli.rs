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

#[test]
fn out_of_range_numbers_are_usage_errors_naming_the_range() {
    // Each flag with a value past its range (or before it), and the range
    // the error must name. Endpoints are on loopback and nothing listens on
    // port 9, so a value wrongly accepted ends in a refused connect (or is
    // killed after WAIT), never in traffic elsewhere.
    let srv = ["--listen", "127.0.0.1:0"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["serve", "greet", "--max-conns", "18446744073709551615"], "1 to 1000000"),
        (vec!["serve", "greet", "--max-conns", "0"], "1 to 1000000"),
        (vec!["serve", "chat", "--max-queue", "4611686018427387904"], "1 to 65536"),
        (vec!["serve", "chat", "--raw", "--max-queue", "65537"], "1 to 65536"),
        (vec!["serve", "chat", "--quiet-above", "99999999999"], "0 to 1000000"),
        (vec!["serve", "chat", "--rate", "99999999999/s"], "1 to 1000000"),
        (vec!["serve", "greet", "--max-line", "100TiB"], "1 to 16 MiB"),
        (vec!["serve", "greet", "--max-line", "17MiB"], "1 to 16 MiB"),
        (vec!["serve", "greet", "--idle-timeout", "1000years"], "0s to 365d"),
        (vec!["serve", "greet", "--grace", "1e19"], "0s to 365d"),
        (vec!["serve", "files", "--max-size", "17TiB"], "1 to 16 TiB"),
        (vec!["serve", "files", "--partial-ttl", "400d"], "0s to 365d"),
        (vec!["serve", "exec", "--timeout", "400d"], "0s to 365d"),
        (vec!["serve", "exec", "--max-output", "100TiB"], "0 to 16 GiB"),
        (vec!["relay", "127.0.0.1:0", "127.0.0.1:9", "--max-conns", "18446744073709551616"], "1 to 1000000"),
        (vec!["relay", "udp://127.0.0.1:0", "udp://127.0.0.1:9", "--max-conns", "1000001"], "1 to 1000000"),
        (vec!["relay", "127.0.0.1:0", "127.0.0.1:9", "-w", "1e19"], "0s to 365d"),
        (vec!["connect", "udp://127.0.0.1:9", "-w", "1e19"], "0s to 365d"),
        (vec!["connect", "udp://127.0.0.1:9", "-q", "1e19"], "0s to 365d"),
        (vec!["listen", "127.0.0.1:0", "-q", "1e19"], "0s to 365d"),
        (vec!["bench", "echo", "127.0.0.1:9", "-c", "18446744073709551615"], "1 to 100000"),
        (vec!["bench", "echo", "127.0.0.1:9", "-s", "100TiB"], "1 to 4 MiB"),
        (vec!["bench", "echo", "127.0.0.1:9", "-d", "1e19"], "0s to 1d"),
        (vec!["bench", "echo", "127.0.0.1:9", "--depth", "18446744073709551615"], "1 to 4096"),
        (vec!["bench", "stream", "127.0.0.1:9", "--bytes", "17TiB"], "1 to 16 TiB"),
        (vec!["bench", "stream", "127.0.0.1:9", "-c", "100000"], "1 to 1024"),
        (vec!["bench", "chat", "127.0.0.1:9", "-c", "18446744073709551615"], "2 to 100000"),
        (vec!["bench", "chat", "127.0.0.1:9", "--senders", "18446744073709551615"], "1 to 100000"),
        (vec!["bench", "chat", "127.0.0.1:9", "-s", "100TiB"], "1 to 1 MiB"),
        (vec!["bench", "chat", "127.0.0.1:9", "-d", "1e19"], "0s to 1d"),
        (vec!["bench", "chat", "127.0.0.1:9", "--rate", "18446744073709551615"], "1 to 10000000"),
        (vec!["bench", "conns", "127.0.0.1:9", "-c", "18446744073709551615"], "1 to 1000000"),
        (vec!["bench", "conns", "127.0.0.1:9", "--hold", "1e19"], "0s to 1d"),
        (vec!["bench", "conns", "127.0.0.1:9", "--server-pid", "99999999999"], "1 to 4194304"),
        (vec!["send", "Cargo.toml", "--to", "127.0.0.1:9", "--limit-rate", "100PiB"], "1 to 1 TiB"),
        (vec!["send", "Cargo.toml", "--to", "127.0.0.1:9", "-w", "1e19"], "0s to 365d"),
        (vec!["get", "http://127.0.0.1:9/", "--max-redirects", "18446744073709551615"], "0 to 100"),
        (vec!["get", "http://127.0.0.1:9/", "-m", "1e19"], "0s to 365d"),
        (vec!["get", "http://127.0.0.1:9/", "--connect-timeout", "1e19"], "0s to 365d"),
        (vec!["get", "http://127.0.0.1:9/", "--stall-timeout", "1e19"], "0s to 365d"),
        (vec!["exec", "127.0.0.1:9", "-w", "1e19", "--", "true"], "0s to 365d"),
    ];
    // All at once: a value wrongly accepted may run until WAIT kills it.
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(mut args, range)| {
            if args[0] == "serve" {
                args.extend(srv);
            }
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            std::thread::spawn(move || {
                let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"");
                let err = text(&out.stderr);
                let ok =
                    out.status.code() == Some(2) && err.contains(&format!("({range})")) && !err.contains("panicked");
                (!ok).then(|| {
                    format!(
                        "{args:?}: exit {:?}, wanted 2 naming ({range}): {}",
                        out.status,
                        err.lines().next().unwrap_or("")
                    )
                })
            })
        })
        .collect();
    let failed: Vec<String> = runs.into_iter().filter_map(|t| t.join().unwrap()).collect();
    assert!(failed.is_empty(), "{} flags not range-checked:\n{}", failed.len(), failed.join("\n"));
}
