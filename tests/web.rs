//! The chat's page in a real browser: Debian's chromium and chromium-driver
//! over WebDriver (tests/browser_chat.py, with python3-selenium), and a
//! real nc in the same room.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Where the page's screenshot is written, for a person to look at.
fn screenshot() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chat-page.png")
}

#[test]
fn two_browsers_and_nc_chat_then_the_pages_reconnect_by_themselves() {
    need("chromium");
    need("chromedriver");
    need("nc");
    let (chat, web) = (free_port(), free_port());
    let (chat_ep, web_ep) = (format!("127.0.0.1:{chat}"), format!("127.0.0.1:{web}"));
    let args = ["serve", "chat", "--listen", chat_ep.as_str(), "--web", web_ep.as_str()];
    let mut server = Proc::start(&args, 2);
    let shot = screenshot();
    let _ = std::fs::remove_file(&shot);
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser_chat.py"))
        .args([&format!("http://{web_ep}/"), "127.0.0.1", &chat.to_string()])
        .arg(&shot);
    let mut browsers = Proc::spawn(cmd, 0);
    browsers.read_stdout_until_within("restart\n", Duration::from_secs(90));
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let _server = Proc::start(&args, 2);
    browsers.stdin().write_all(b"restarted\n").unwrap();
    browsers.read_stdout_until_within("ok\n", Duration::from_secs(60));
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "no screenshot at {}", shot.display());
}

#[test]
fn limits_hold_for_web_clients() {
    // --deny: the connection is closed before any byte is read.
    let s =
        Proc::start(&["serve", "chat", "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0", "--deny", "127.0.0.0/8"], 2);
    let ws = s.endpoint("web", 0);
    let origin = format!("http://{}", ws.trim_start_matches("ws://").trim_end_matches("/ws"));
    let mut py = Command::new("/usr/bin/python3");
    py.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_peer.py")).args(["origin", &ws, &origin]);
    assert_eq!(text(&run_cmd(py, b"").stdout).trim(), "dropped");
    // --max-conns 1: with one web client in, the next is told 503.
    let s = Proc::start(&["serve", "chat", "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0", "--max-conns", "1"], 2);
    let ws = s.endpoint("web", 0);
    let mut hold = Command::new("/usr/bin/python3");
    hold.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_peer.py")).args(["hold", &ws, "20"]);
    let mut first = Proc::spawn(hold, 0);
    first.read_stdout_until("connected\n");
    let mut py = Command::new("/usr/bin/python3");
    py.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_peer.py")).args(["origin", &ws, "http://127.0.0.1"]);
    assert_eq!(text(&run_cmd(py, b"").stdout).trim(), "refused 503");
}

#[test]
fn the_page_health_and_a_cross_site_upgrade() {
    let s = Proc::start(&["serve", "chat", "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"], 2);
    let ws = s.endpoint("web", 0);
    assert!(ws.ends_with("/ws"), "{ws}");
    let host = ws.trim_start_matches("ws://").trim_end_matches("/ws").to_string();
    let get = |path: &str| {
        let mut c = tcp(host.parse().unwrap());
        write!(c, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        text(&read_to_eof(&mut c))
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200 ") && page.contains("<title>sockit chat</title>"), "{page}");
    assert!(page.contains("script-src 'self'"), "the page has a CSP that runs no inline script: {page}");
    assert!(get("/app.js").contains("textContent"));
    assert!(get("/health").starts_with("HTTP/1.1 200 "));
    let mut py = Command::new("/usr/bin/python3");
    py.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_peer.py")).args(["origin", &ws, "http://evil.example"]);
    assert_eq!(text(&run_cmd(py, b"").stdout).trim(), "refused 403");
}
