//! Independent peers: nc, ncat and socat as clients of sockit's services,
//! and as servers for `sockit connect`.

use std::io::Write;
use std::process::Command;

use crate::support::*;

fn peer(tool: &str, args: &[&str], input: &[u8]) -> String {
    need(tool);
    let mut cmd = Command::new(tool);
    cmd.args(args);
    let out = run_cmd(cmd, input);
    assert_ok(&out);
    text(&out.stdout)
}

#[test]
fn nc_ncat_socat_as_clients() {
    let p =
        Proc::start(&["serve", "echo", "greet", "--listen", "echo=127.0.0.1:0", "--listen", "greet=127.0.0.1:0"], 2);
    let echo = p.addr("echo", "tcp://");
    let greet = p.addr("greet", "tcp://");
    let (eport, gport) = (echo.port().to_string(), greet.port().to_string());

    // Each client half-closes at stdin EOF; sockit answers, then closes.
    assert_eq!(peer("nc", &["-N", "127.0.0.1", &gport], b"michael\n"), "Welcome!\nHello, michael!\n");
    assert_eq!(peer("ncat", &["127.0.0.1", &gport], b"tracy\nexit\n"), "Welcome!\nHello, tracy!\n");
    let target = format!("TCP:127.0.0.1:{gport}");
    assert_eq!(peer("socat", &["-t", "5", "-", &target], b"sarah\n"), "Welcome!\nHello, sarah!\n");

    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert!(peer("nc", &["-N", "127.0.0.1", &eport], &blob).as_bytes() == text(&blob).as_bytes());
    let target = format!("TCP:127.0.0.1:{eport}");
    let back = peer("socat", &["-t", "5", "-", &target], b"socat echo\n");
    assert_eq!(back, "socat echo\n");
}

#[test]
fn ncat_udp_client_of_stamp() {
    need("ncat");
    let p = Proc::start(&["serve", "stamp", "--listen", "udp://127.0.0.1:0"], 1);
    let port = p.addr("stamp", "udp://").port().to_string();
    // ncat -u quits at stdin EOF without waiting for replies: keep it open.
    let mut cmd = Command::new("ncat");
    cmd.args(["-u", "127.0.0.1", &port]);
    let mut client = Proc::spawn(cmd, 0);
    client.stdin().write_all(b"hello\n").unwrap();
    let out = client.read_stdout_until("hello\n");
    assert!(out.starts_with('[') && out.ends_with("] hello\n"), "{out:?}");
}

#[test]
fn connect_to_socat_waits_for_the_reply() {
    // socat's child answers only at its stdin's EOF, so `sockit connect` must
    // half-close and then wait for the reply.
    need("socat");
    let port = free_port();
    let mut cmd = Command::new("socat");
    cmd.args([&format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"), "SYSTEM:tr a-z A-Z"]);
    let _server = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    let out = run(&["connect", &format!("127.0.0.1:{port}")], b"hello from sockit\n");
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "HELLO FROM SOCKIT\n");
}

#[test]
fn connect_to_ncat_both_ways() {
    need("ncat");
    let port = free_port();
    let mut cmd = Command::new("ncat");
    cmd.args(["-l", "127.0.0.1", &port.to_string()]);
    let mut server = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    let mut client = Proc::start(&["connect", &format!("127.0.0.1:{port}")], 0);
    server.stdin().write_all(b"from ncat\n").unwrap();
    assert_eq!(client.read_stdout_until("\n"), "from ncat\n");
    client.stdin().write_all(b"from sockit\n").unwrap();
    assert_eq!(server.read_stdout_until("\n"), "from sockit\n");
    // sockit's stdin ends: it half-closes; ncat (which closes on EOF from
    // the network) goes, and sockit exits cleanly.
    client.close_stdin();
    assert_eq!(client.wait_exit().code(), Some(0), "{}", client.stderr());
}

#[test]
fn connect_to_nc_that_closes_first() {
    need("nc");
    let port = free_port();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("printf 'from nc\\n' | nc -N -l 127.0.0.1 {port}"));
    let _nc = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    // stdin stays open (a live Proc's pipe): sockit must exit because the
    // peer closed, not because stdin ended.
    let mut client = Proc::start(&["connect", &format!("127.0.0.1:{port}")], 0);
    assert_eq!(client.read_stdout(8), b"from nc\n");
    assert!(client.wait_exit().success(), "{}", client.stderr());
}
