//! TLS on every TCP server and client, against sockit itself and real
//! peers (ncat --ssl, openssl-free), and --allow/--deny address rules.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;

use crate::exec::fingerprint;
use crate::support::*;

fn tls_echo() -> (Proc, String, String) {
    let srv = Proc::start(&["serve", "echo", "--listen", "tls://127.0.0.1:0"], 1);
    let ep = srv.endpoint("echo", 0);
    let fp = fingerprint(&srv);
    (srv, ep, fp)
}

#[test]
fn self_signed_with_a_pinned_fingerprint() {
    let (srv, ep, fp) = tls_echo();
    assert!(ep.starts_with("tls://127.0.0.1:"), "{ep}");
    assert!(srv.stderr().contains("(ephemeral, self-signed)"));
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let out = run(&["connect", &ep, "--tls-fingerprint", &fp], &data);
    assert_ok(&out);
    assert!(out.stdout == data, "{} bytes back of {}", out.stdout.len(), data.len());
    // Colons and case do not matter.
    let bare = fp.replace(':', "").to_lowercase();
    assert_ok(&run(&["connect", &ep, "--tls-fingerprint", &bare], b"x"));

    let mut wrong = fp.clone();
    wrong.replace_range(0..2, if fp.starts_with("00") { "11" } else { "00" });
    let out = run(&["connect", &ep, "--tls-fingerprint", &wrong], b"secret");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not the pinned one"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());

    // Unpinned, the self-signed certificate is not trusted, and the error
    // says what to do; --insecure skips the check.
    let out = run(&["connect", &ep], b"secret");
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("--tls-fingerprint"), "{}", text(&out.stderr));
    assert_eq!(run(&["connect", &ep, "--insecure"], b"ok").stdout, b"ok");
}

#[test]
fn real_tls_peers_interoperate() {
    need("ncat");
    let (_srv, ep, _) = tls_echo();
    let addr: SocketAddr = ep.trim_start_matches("tls://").parse().unwrap();
    let mut cmd = Command::new("ncat");
    cmd.args(["--ssl", &addr.ip().to_string(), &addr.port().to_string()]);
    let out = run_cmd(cmd, b"through ncat --ssl\n");
    assert_eq!(text(&out.stdout), "through ncat --ssl\n", "{}", text(&out.stderr));

    // sockit connect to ncat's own TLS server (its ephemeral certificate:
    // --insecure), which prints what arrives.
    let port = free_port();
    let mut cmd = Command::new("ncat");
    cmd.args(["--ssl", "-l", "127.0.0.1", &port.to_string()]);
    let mut ncat = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    let out = run(&["connect", &format!("tls://127.0.0.1:{port}"), "--insecure"], b"to ncat --ssl -l\n");
    assert_ok(&out);
    assert_eq!(ncat.read_stdout_until("\n"), "to ncat --ssl -l\n");
}

#[test]
fn wrong_protocol_either_way_fails_cleanly() {
    let (mut srv, ep, fp) = tls_echo();
    let addr: SocketAddr = ep.trim_start_matches("tls://").parse().unwrap();
    // Plaintext to a TLS port: no echo of it, a closed connection, a log line.
    let mut c = tcp(addr);
    c.write_all(b"hello in the clear\n").unwrap();
    let back = read_until_closed(&mut c);
    assert!(!text(&back).contains("hello"), "{back:?}");
    srv.wait_stderr(|l| l.contains("TLS handshake failed"));
    assert_ok(&run(&["connect", &ep, "--tls-fingerprint", &fp], b"still up"));

    // TLS to a plaintext port.
    let plain =
        Proc::start(&["serve", "echo", "greet", "--listen", "echo=127.0.0.1:0", "--listen", "greet=127.0.0.1:0"], 2);
    for svc in ["echo", "greet"] {
        let tls_ep = plain.endpoint(svc, 0).replace("tcp://", "tls://");
        let out = run(&["connect", &tls_ep, "--insecure", "-w", "5s"], b"x");
        assert_eq!(out.status.code(), Some(5), "{svc}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("TLS handshake failed"), "{}", text(&out.stderr));
    }
}

#[test]
fn cert_files_and_ca_verification() {
    let dir = tempfile::tempdir().unwrap();
    let out_base = dir.path().join("srv");
    let out = run(&["cert", "--out", out_base.to_str().unwrap(), "--name", "localhost"], b"");
    assert_ok(&out);
    assert!(text(&out.stdout).starts_with("SHA-256 fingerprint: "));
    let (pem, key) = (dir.path().join("srv.pem"), dir.path().join("srv.key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // It does not overwrite without --force.
    let again = run(&["cert", "--out", out_base.to_str().unwrap()], b"");
    assert_eq!(again.status.code(), Some(2));

    let srv = Proc::start(
        &[
            "serve",
            "greet",
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            pem.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        1,
    );
    assert!(!srv.stderr().contains("ephemeral"));
    let port = srv.endpoint("greet", 0).rsplit(':').next().unwrap().to_string();
    let ca = pem.to_str().unwrap();
    let out = run(&["connect", &format!("tls://localhost:{port}"), "--tls-ca", ca], b"ada\n");
    assert_eq!(text(&out.stdout), "Welcome!\nHello, ada!\n", "{}", text(&out.stderr));
    // The certificate names localhost only: 127.0.0.1 does not match it.
    let out = run(&["connect", &format!("tls://127.0.0.1:{port}"), "--tls-ca", ca], b"ada\n");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

#[test]
fn relay_terminates_and_originates_tls() {
    let plain = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let front = Proc::start(&["relay", "tls://127.0.0.1:0", &plain.endpoint("echo", 0)], 1);
    let out = run(&["connect", &front.endpoint("relay", 0), "--tls-fingerprint", &fingerprint(&front)], b"via tls");
    assert_eq!(out.stdout, b"via tls", "{}", text(&out.stderr));

    let (_tls, tls_ep, fp) = tls_echo();
    let back = Proc::start(&["relay", "127.0.0.1:0", &tls_ep, "--tls-fingerprint", &fp], 1);
    let out = run(&["connect", &back.endpoint("relay", 0)], b"to tls");
    assert_eq!(out.stdout, b"to tls", "{}", text(&out.stderr));
}

fn tcp_from(local: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{local}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

#[test]
fn allow_and_deny_by_address() {
    let mut srv = Proc::start(
        &["serve", "echo", "-v", "--listen", "127.0.0.1:0", "--allow", "127.0.0.0/8", "--deny", "127.0.0.2"],
        1,
    );
    let addr = srv.addr("echo", "tcp://");
    let mut ok = tcp_from("127.0.0.1", addr);
    ok.write_all(b"in").unwrap();
    assert_eq!(read_n(&mut ok, 2), b"in");
    let mut denied = tcp_from("127.0.0.2", addr);
    let _ = denied.write_all(b"let me in");
    assert!(read_until_closed(&mut denied).is_empty());
    srv.wait_stderr(|l| l.contains("refused: address not allowed") && l.contains("127.0.0.2"));

    // Only the allowed block gets in.
    let only = Proc::start(&["serve", "greet", "--listen", "127.0.0.1:0", "--allow", "10.0.0.0/8"], 1);
    let mut c = tcp(only.addr("greet", "tcp://"));
    let mut buf = [0u8; 16];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "a peer outside --allow was served");

    // UDP: a denied sender's datagrams are dropped.
    let mut udp = Proc::start(&["serve", "echo", "-vv", "--listen", "udp://127.0.0.1:0", "--deny", "127.0.0.2/32"], 1);
    let server = udp.addr("echo", "udp://");
    let bad = UdpSocket::bind("127.0.0.2:0").unwrap();
    bad.send_to(b"x", server).unwrap();
    udp.wait_stderr(|l| l.contains("dropped: address not allowed"));
    let good = UdpSocket::bind("127.0.0.1:0").unwrap();
    good.set_read_timeout(Some(WAIT)).unwrap();
    good.send_to(b"y", server).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(good.recv(&mut buf).unwrap(), 1);

    let out = run(&["serve", "--allow", "10.0.0.0/33"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("prefix length"), "{}", text(&out.stderr));
}
