//! WebSocket endpoints against an independent implementation (Debian's
//! python3-websockets, in tests/ws_peer.py) and through the relay.

use std::io::{Read, Write};
use std::process::Command;

use crate::support::*;

/// Runs tests/ws_peer.py with Debian's python3 (where python3-websockets is).
fn peer(args: &[&str]) -> String {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_peer.py")).args(args);
    let out = run_cmd(cmd, b"");
    assert_ok(&out);
    text(&out.stdout)
}

fn http_base(ws: &str) -> String {
    ws.replacen("ws://", "", 1).split('/').next().unwrap().to_string()
}

#[test]
fn echo_over_ws_and_wss_with_python_websockets() {
    let s = Proc::start(&["serve", "echo", "--listen", "ws://127.0.0.1:0/", "--listen", "wss://127.0.0.1:0/echo"], 2);
    let ws = s.endpoint("echo", 0);
    let wss = s.endpoint("echo", 1);
    assert!(ws.starts_with("ws://") && wss.starts_with("wss://") && wss.ends_with("/echo"), "{ws} {wss}");
    assert_eq!(peer(&["echo", &ws]).trim(), "ok");
    assert_eq!(peer(&["echo", &wss]).trim(), "ok");
}

#[test]
fn connect_talks_to_a_python_websockets_server_and_keeps_half_close_with_ours() {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_peer.py")).arg("server");
    let py = Proc::spawn(cmd, 1);
    let url = py.endpoint("python", 0);
    // A foreign server answers our close at once (as RFC 6455 lets it), so
    // replies are read before stdin ends.
    let mut c = Proc::start(&["connect", "--ws-text", &url], 0);
    assert_eq!(c.read_stdout_until("\n"), "hello from python\n");
    c.stdin().write_all(b"abc\n").unwrap();
    assert_eq!(c.read_stdout_until("\n"), "ABC\n");
    c.stdin().write_all(b"second line\n").unwrap();
    assert_eq!(c.read_stdout_until("\n"), "SECOND LINE\n");
    c.close_stdin();
    assert!(c.wait_exit().success());
    // Our own echo: the reply to the last bytes comes after stdin's EOF.
    let s = Proc::start(&["serve", "echo", "--listen", "ws://127.0.0.1:0"], 1);
    let out = run(&["connect", &s.endpoint("echo", 0)], b"hi after EOF");
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "hi after EOF");
}

#[test]
fn relay_carries_16_mib_both_ways_between_tcp_and_websocket() {
    const N: usize = 16 << 20;
    // TCP clients → relay → ws:// echo.
    let echo = Proc::start(&["serve", "echo", "--listen", "ws://127.0.0.1:0/"], 1);
    let relay = Proc::start(&["relay", "127.0.0.1:0", &echo.endpoint("echo", 0)], 1);
    let data: Vec<u8> = (0..N).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut c = tcp(relay.addr("relay", "tcp://"));
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let back = read_to_eof(&mut c);
    writer.join().unwrap();
    assert!(back == data, "got {} bytes, not the {N} sent", back.len());
    // WebSocket clients → relay → TCP echo.
    let tcp_echo = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let to = tcp_echo.endpoint("echo", 0);
    let relay = Proc::start(&["relay", "ws://127.0.0.1:0/", &to], 1);
    assert_eq!(peer(&["bulk", &relay.endpoint("relay", 0), &N.to_string()]).trim(), "ok");
    // Half-close through it: the client's close reaches the TCP echo as
    // EOF, and the reply still comes back before the close is answered.
    let out = run(&["connect", &relay.endpoint("relay", 0)], b"last words");
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "last words");
}

#[test]
fn line_services_take_a_message_as_a_line_and_close_over_the_limit_with_1009() {
    let s = Proc::start(&["serve", "greet", "--listen", "ws://127.0.0.1:0", "--max-line", "100", "--ws-text"], 1);
    let url = s.endpoint("greet", 0);
    assert_eq!(peer(&["lines", &url, "michael", "exit"]), "Welcome!\nHello, michael!\n");
    let closed = peer(&["over", &url, "1000"]);
    assert!(closed.starts_with("1009 ") && closed.contains("--max-line"), "{closed}");
}

#[test]
fn a_server_limit_closing_the_connection_says_which() {
    let s = Proc::start(&["serve", "echo", "--listen", "ws://127.0.0.1:0", "--idle-timeout", "1s"], 1);
    let closed = peer(&["over", &s.endpoint("echo", 0), "0"]);
    assert!(closed.starts_with("1008 ") && closed.contains("--idle-timeout"), "{closed}");
}

#[test]
fn pongs_keep_a_quiet_peer_from_the_idle_timeout() {
    let args = ["serve", "echo", "--listen", "ws://127.0.0.1:0", "--idle-timeout", "2s", "--ws-ping", "1s"];
    let s = Proc::start(&args, 1);
    assert_eq!(peer(&["hold", &s.endpoint("echo", 0), "4"]), "connected\nopen\n");
}

#[test]
fn browser_origins_health_and_plain_http() {
    let s = Proc::start(&["serve", "echo", "--listen", "ws://127.0.0.1:0/ws"], 1);
    let url = s.endpoint("echo", 0);
    let host = http_base(&url);
    assert_eq!(peer(&["origin", &url, &format!("http://{host}")]).trim(), "ok");
    assert_eq!(peer(&["origin", &url, "http://evil.example"]).trim(), "refused 403");
    let mut c = tcp(host.parse().unwrap());
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("ok\n"), "{answer}");
    let mut c = tcp(host.parse().unwrap());
    c.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let s2 = Proc::start(&["serve", "echo", "--listen", "ws://127.0.0.1:0/", "--web-origin", "http://evil.example"], 1);
    assert_eq!(peer(&["origin", &s2.endpoint("echo", 0), "http://evil.example"]).trim(), "ok");
}
