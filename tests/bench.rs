//! `sockit bench` counts what it claims to, against servers whose answers
//! are known. Behaviour only: no timing is asserted.

use std::process::Command;

use crate::support::*;

fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run(&all, b"");
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn echo_tcp_and_udp_count_messages_without_errors() {
    let p = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0", "--listen", "udp://127.0.0.1:0"], 2);
    for (ep, depth) in [(p.endpoint("echo", 0), "1"), (p.endpoint("echo", 1), "4")] {
        let r = bench_json(&["echo", &ep, "-c", "3", "-s", "100", "-d", "500ms", "--depth", depth]);
        assert!(r["messages"].as_u64().unwrap() > 0, "{r}");
        assert_eq!((r["errors"].as_u64(), r["failed_conns"].as_u64()), (Some(0), Some(0)), "{ep}: {r}");
        assert!(r["latency_us"]["p50"].as_f64().unwrap() > 0.0);
        assert_eq!(r["size"], 100);
    }
}

#[test]
fn echo_counts_wrong_replies_and_failed_connections() {
    // stamp answers, but not with the same bytes: every reply is an error.
    let p = Proc::start(&["serve", "stamp", "--listen", "127.0.0.1:0"], 1);
    let r = bench_json(&["echo", &p.endpoint("stamp", 0), "-c", "2", "-s", "40", "-d", "300ms"]);
    assert!(r["errors"].as_u64().unwrap() >= 2, "{r}");
    // Nothing listening: every connection fails.
    let port = free_port();
    let r = bench_json(&["echo", &format!("127.0.0.1:{port}"), "-c", "4", "-d", "200ms"]);
    assert_eq!((r["failed_conns"].as_u64(), r["messages"].as_u64()), (Some(4), Some(0)), "{r}");
}

#[test]
fn stream_moves_exactly_the_bytes_asked() {
    let p = Proc::start(
        &["serve", "discard", "chargen", "--listen", "discard=127.0.0.1:0", "--listen", "chargen=127.0.0.1:0"],
        2,
    );
    let r = bench_json(&["stream", &p.endpoint("discard", 0), "--bytes", "10MiB", "-c", "2"]);
    assert_eq!(r["bytes"], 10 << 20, "{r}");
    assert_eq!(r["errors"], 0);
    let r = bench_json(&["stream", &p.endpoint("chargen", 0), "--bytes", "3MiB", "--recv"]);
    assert_eq!((r["bytes"].as_u64(), r["direction"].as_str()), (Some(3 << 20), Some("received")), "{r}");
}

#[test]
fn conns_counts_held_and_dropped_and_reads_server_memory() {
    // --max-conns 20: the server accepts, then closes, the other 30.
    let p = Proc::start(&["serve", "echo", "--max-conns", "20", "--listen", "127.0.0.1:0"], 1);
    let pid = p.child.id().to_string();
    let r = bench_json(&["conns", &p.endpoint("echo", 0), "-c", "50", "--hold", "300ms", "--server-pid", &pid]);
    assert_eq!((r["held"].as_u64(), r["dropped"].as_u64()), (Some(20), Some(30)), "{r}");
    assert!(r["rss_bytes"].as_u64().unwrap() > 1 << 20, "{r}");
}

#[test]
fn chat_through_ncat_broker_delivers_every_line_to_every_other_client() {
    need("ncat");
    let port = free_port();
    let mut cmd = Command::new("ncat");
    cmd.args(["--broker", "-l", "127.0.0.1", &port.to_string()]);
    let _broker = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    let r = bench_json(&[
        "chat",
        &format!("127.0.0.1:{port}"),
        "-c",
        "5",
        "--senders",
        "2",
        "-d",
        "300ms",
        "--rate",
        "200",
    ]);
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0, "{r}");
    assert_eq!(r["deliveries"].as_u64(), Some(sent * 4), "every line reaches the 4 other clients: {r}");
}

#[test]
fn table_output_by_default() {
    let p = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let out = run(&["bench", "echo", &p.endpoint("echo", 0), "-c", "1", "-d", "200ms"], b"");
    assert_ok(&out);
    let t = text(&out.stdout);
    assert!(t.starts_with("bench echo tcp://127.0.0.1:") && t.contains("  latency      p50 "), "{t}");
}
