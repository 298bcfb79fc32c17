//! `sockit serve exec` and `sockit exec`: authentication, no shell unless
//! allowed, the allow list, timeouts that kill whole process groups, the
//! output cap, TLS and client certificates, and bad bytes on the wire.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sockit::auth::wire::Frame as Handshake;
use sockit::services::exec::HANDSHAKE;
use sockit::services::exec::wire::{self, Exit, Frame};

use crate::support::*;

const TOKEN: &str = "correct horse battery staple 42";

/// Starts an exec server on a kernel-chosen loopback port with `extra` flags.
fn server(extra: &[&str]) -> Proc {
    let mut cmd = sockit();
    cmd.args(["serve", "exec", "--listen", "127.0.0.1:0"]).args(extra).env("SOCKIT_TOKEN", TOKEN);
    Proc::spawn(cmd, 1)
}

/// Runs `sockit exec ENDPOINT ARGS…` with the right token.
fn exec(ep: &str, args: &[&str]) -> Output {
    exec_with(ep, Some(TOKEN), args)
}

fn exec_with(ep: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = sockit();
    cmd.arg("exec").arg(ep).args(args).env_remove("SOCKIT_TOKEN");
    if let Some(t) = token {
        cmd.env("SOCKIT_TOKEN", t);
    }
    run_cmd(cmd, b"")
}

#[test]
fn runs_argv_with_status_and_streams_apart() {
    let srv = server(&[]);
    let ep = srv.endpoint("exec", 0);
    let out = exec(&ep, &["--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-out\n");
    assert!(text(&out.stderr).contains("to-err") && !text(&out.stdout).contains("to-err"));

    // Large binary output comes back byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let out = exec(&ep, &["--", "cat", file.to_str().unwrap()]);
    assert_ok(&out);
    assert!(out.stdout == data, "{} bytes back of {}", out.stdout.len(), data.len());

    // A program that does not exist: 127, as a shell says.
    let out = exec(&ep, &["--", "no-such-program-here"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    // Killed by a signal: 128 + N.
    let out = exec(&ep, &["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));
}

#[test]
fn wrong_or_missing_token_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = server(&[]);
    let ep = srv.endpoint("exec", 0);
    let marker = dir.path().join("ran");
    let touch = ["--", "touch", marker.to_str().unwrap()];

    let out = exec_with(&ep, Some("not the token"), &touch);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("authentication failed"), "{}", text(&out.stderr));
    srv.wait_stderr(|l| l.contains("authentication failed") && l.contains("127.0.0.1"));

    let out = exec_with(&ep, None, &touch);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("SOCKIT_TOKEN"));

    // A token file works too (its final newline is not part of the token).
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let out = exec_with(&ep, None, &["--token-file", token_file.to_str().unwrap(), "--", "true"]);
    assert_ok(&out);
    assert!(!marker.exists(), "a refused client ran its command");
}

#[test]
fn failures_make_the_next_attempt_wait_longer() {
    let srv = server(&[]);
    let ep = srv.endpoint("exec", 0);
    let timed = |token: &str| {
        let start = Instant::now();
        let out = exec_with(&ep, Some(token), &["--", "true"]);
        (out.status.code(), start.elapsed())
    };
    let started = Instant::now();
    let (code, _) = timed("wrong");
    assert_eq!(code, Some(6));
    timed("wrong");
    timed("wrong");
    // The first is checked at once; each next one waits its turn: 250 ms
    // after the first's, then 500 ms after that. A slow machine only adds.
    let all = started.elapsed();
    assert!(all >= Duration::from_millis(750), "three wrong guesses in {all:?}");
}

#[test]
fn without_shell_metacharacters_are_inert() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&["--cwd", dir.path().to_str().unwrap()]);
    let ep = srv.endpoint("exec", 0);
    let out = exec(&ep, &["--", "echo", "hi; touch x", "$(touch y)", "`touch z`", "|", "touch", "w"]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "hi; touch x $(touch y) `touch z` | touch w\n");
    let out = exec(&ep, &["--shell", "touch v"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("--shell"), "{}", text(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files appeared: {left:?}");

    // The server's --shell opts in; the environment is clean but for PATH
    // and what --env passes.
    let mut cmd = sockit();
    cmd.args(["serve", "exec", "--listen", "127.0.0.1:0", "--shell", "--env", "KEEP_ME"])
        .env("SOCKIT_TOKEN", TOKEN)
        .env("KEEP_ME", "kept")
        .env("SECRET_THING", "leaked");
    let shell = Proc::spawn(cmd, 1);
    let out = exec(&shell.endpoint("exec", 0), &["--shell", "echo $KEEP_ME-${SECRET_THING:-clean} | tr a-z A-Z"]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "KEPT-CLEAN\n");
}

#[test]
fn only_allowed_programs_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let srv = server(&["--allow-cmd", "echo", "--allow-cmd", "/bin/true"]);
    let ep = srv.endpoint("exec", 0);
    assert_ok(&exec(&ep, &["--", "echo", "ok"]));
    assert_ok(&exec(&ep, &["--", "/bin/true"]));
    let out = exec(&ep, &["--", "touch", marker.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("not allowed"), "{}", text(&out.stderr));
    // The path must match exactly: a look-alike elsewhere is refused.
    let out = exec(&ep, &["--", "/tmp/echo"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(!marker.exists());
}

fn alive(pid: u32) -> bool {
    // A zombie is dead; only its parent has not looked yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Waits (bounded) for `pid` to be gone; fails with `what` if it lives on.
fn wait_dead(pid: u32, what: &str) {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let srv = server(&["--timeout", "1s"]);
    let ep = srv.endpoint("exec", 0);
    let start = Instant::now();
    let out = exec(&ep, &["--", "sh", "-c", "sleep 60 & echo $!; sleep 60"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(text(&out.stderr).contains("timed out"));
    let child: u32 = text(&out.stdout).trim().parse().unwrap();
    wait_dead(child, "the background sleep survived the timeout");
}

#[test]
fn client_leaving_kills_the_command() {
    let srv = server(&[]);
    let ep = srv.endpoint("exec", 0);
    let mut cmd = sockit();
    cmd.args(["exec", &ep, "--", "sh", "-c", "echo $$; sleep 60"]).env("SOCKIT_TOKEN", TOKEN);
    let mut client = Proc::spawn(cmd, 0);
    let pid: u32 = client.read_stdout_until("\n").trim().parse().unwrap();
    assert!(alive(pid));
    client.signal("KILL");
    wait_dead(pid, "the command outlived its client");
}

#[test]
fn output_is_capped_with_a_notice() {
    let srv = server(&["--max-output", "1000"]);
    let out = exec(&srv.endpoint("exec", 0), &["--", "head", "-c", "500000", "/dev/zero"]);
    assert_ok(&out);
    assert_eq!(out.stdout.len(), 1000);
    assert!(text(&out.stderr).contains("output truncated at 1000 bytes"), "{}", text(&out.stderr));
}

#[test]
fn interactive_prompt_runs_line_after_line() {
    let srv = server(&[]);
    let mut cmd = sockit();
    cmd.args(["exec", &srv.endpoint("exec", 0)]).env("SOCKIT_TOKEN", TOKEN);
    let out = run_cmd(cmd, b"echo one 'two  three'\nsh -c 'exit 4'\n\necho $(not expanded)\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one two  three\n$(not expanded)\n");
    assert!(text(&out.stderr).matches("cmd> ").count() >= 4, "{}", text(&out.stderr));
}

#[test]
fn refuses_to_start_unsafely() {
    let out = run(&["serve", "exec", "--listen", "127.0.0.1:0"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs a secret"), "{}", text(&out.stderr));
    let mut cmd = sockit();
    cmd.args(["serve", "exec", "--listen", "0.0.0.0:0"]).env("SOCKIT_TOKEN", TOKEN);
    let out = run_cmd(cmd, b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--allow-plaintext"), "{}", text(&out.stderr));
    // Exec is never in the default set.
    let out = run(&["serve", "--help"], b"");
    assert!(text(&out.stdout).contains("unless named"), "{}", text(&out.stdout));
}

/// The fingerprint a TLS server printed at start.
pub fn fingerprint(p: &Proc) -> String {
    let err = p.stderr();
    let at = err.find("fingerprint: ").unwrap_or_else(|| p.fail("no fingerprint line"));
    err[at + 13..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn over_tls_with_a_pinned_fingerprint_or_client_certificates() {
    let mut cmd = sockit();
    cmd.args(["serve", "exec", "--listen", "tls://127.0.0.1:0"]).env("SOCKIT_TOKEN", TOKEN);
    let srv = Proc::spawn(cmd, 1);
    let ep = srv.endpoint("exec", 0);
    assert!(ep.starts_with("tls://"));
    let out = exec(&ep, &["--tls-fingerprint", &fingerprint(&srv), "--", "echo", "secure"]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "secure\n");
    let out = exec(&ep, &["--", "echo", "unverified"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));

    // Mutual TLS instead of a token.
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    for who in ["server", "client", "stranger"] {
        assert_ok(&run(&["cert", "--out", &path(who)], b""));
    }
    let mut cmd = sockit();
    cmd.args(["serve", "exec", "--listen", "tls://127.0.0.1:0"])
        .args(["--tls-cert", &path("server.pem"), "--tls-key", &path("server.key")])
        .args(["--tls-client-ca", &path("client.pem")])
        .env_remove("SOCKIT_TOKEN");
    let srv = Proc::spawn(cmd, 1);
    let ep = srv.endpoint("exec", 0);
    let as_ = |who: &str| {
        exec_with(
            &ep,
            None,
            &[
                "--tls-ca",
                &path("server.pem"),
                "--tls-cert",
                &path(&format!("{who}.pem")),
                "--tls-key",
                &path(&format!("{who}.key")),
                "--",
                "echo",
                "by certificate",
            ],
        )
    };
    let out = as_("client");
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "by certificate\n");
    let out = as_("stranger");
    assert_ne!(out.status.code(), Some(0), "a certificate the CA did not sign got in");
    let out = exec_with(&ep, None, &["--tls-ca", &path("server.pem"), "--", "echo", "no cert"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn garbage_and_truncated_frames_leave_the_server_serving() {
    let mut srv = server(&["-v"]);
    let ep = srv.endpoint("exec", 0);
    let addr = srv.addr("exec", "tcp://");
    for bad in
        [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[2, 0, 0, 0, 32, 1, 2, 3][..], &[2, 0xff, 0xff, 0xff, 0xff][..]]
    {
        let mut c = tcp(addr);
        c.write_all(bad).unwrap();
        if bad.len() == 8 {
            // A truncated frame: the client goes away mid-frame.
            c.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let back = read_until_closed(&mut c);
        assert!(back.len() >= 39, "the server sends its hello, then closes: {back:?}");
    }
    // Three connections, logged in whatever order they end.
    srv.wait_stderr_all(&[&|l| l.contains("unknown frame type"), &|l| l.contains("inside a frame"), &|l| {
        l.contains("limit")
    }]);
    let out = exec(&ep, &["--", "echo", "still serving"]);
    assert_ok(&out);
    // And the client says what is wrong when the server is not exec.
    let echo = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let out = exec(&echo.endpoint("echo", 0), &["-w", "2s", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}

/// Frames over a raw TCP connection, for tests that play a hostile client
/// or server.
struct RawFrames {
    s: TcpStream,
    buf: BytesMut,
}

impl RawFrames {
    fn new(s: TcpStream) -> RawFrames {
        s.set_read_timeout(Some(WAIT)).unwrap();
        RawFrames { s, buf: BytesMut::new() }
    }

    /// A client that has authenticated with the token, and read nothing
    /// since.
    fn login(addr: SocketAddr) -> RawFrames {
        let mut c = RawFrames::new(tcp(addr));
        let Handshake::Hello { nonce, .. } = c.recv_handshake() else { panic!("no hello") };
        c.send_handshake(&Handshake::Auth { mac: sockit::auth::proof(b"sockit-exec-v1", TOKEN.as_bytes(), &nonce) });
        assert_eq!(c.recv_handshake(), Handshake::Ready);
        c
    }

    fn send_handshake(&mut self, f: &Handshake) {
        let mut out = BytesMut::new();
        HANDSHAKE.encode(f, &mut out);
        self.s.write_all(&out).unwrap();
    }

    fn recv_handshake(&mut self) -> Handshake {
        read_frame(&mut self.s, &mut self.buf, |b| HANDSHAKE.decode(b))
    }

    fn send(&mut self, f: &Frame) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        self.s.write_all(&out).unwrap();
    }

    fn recv(&mut self) -> Frame {
        read_frame(&mut self.s, &mut self.buf, wire::decode)
    }
}

/// Kills a process the test left running on purpose, however the test ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg("-9").arg(self.0.to_string()).status();
    }
}

#[test]
fn timeout_holds_while_the_client_reads_nothing() {
    let srv = server(&["--timeout", "2s"]);
    let mut c = RawFrames::login(srv.addr("exec", "tcp://"));
    let start = Instant::now();
    // `yes` fills every buffer between it and a client that never reads.
    c.send(&Frame::Run(["sh", "-c", "echo $$; exec yes sockit-test-unread-output"].map(|a| a.into()).to_vec()));
    let mut first = Vec::new();
    while !first.contains(&b'\n') {
        match c.recv() {
            Frame::Stdout(b) => first.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    let pid: u32 = text(&first).lines().next().unwrap().trim().parse().unwrap();
    assert!(alive(pid));
    // From here on the client reads nothing.
    let bound = Duration::from_secs(2 + 3);
    while alive(pid) {
        assert!(start.elapsed() < bound, "`yes` still runs {:?} after the start of a 2 s run", start.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
}

#[test]
fn exit_is_reported_when_the_command_exits_and_leftovers_die() {
    need("setsid");
    let srv = server(&["--timeout", "30s"]);
    let ep = srv.endpoint("exec", 0);
    // A background child keeps the output pipes open after the command
    // exits: the exit is reported anyway, and the child is killed.
    let start = Instant::now();
    let out = exec(&ep, &["--", "sh", "-c", "sleep 100 & echo $!; echo done; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines[1], "done", "output written before the exit arrives");
    wait_dead(lines[0].parse().unwrap(), "the background sleep outlived its command");

    // A child that left the process group (setsid) cannot be killed with
    // it, but cannot hold the run open either.
    let start = Instant::now();
    let out = exec(&ep, &["--", "sh", "-c", "setsid sleep 100 & echo $!; exit 0"]);
    let escaped = text(&out.stdout).trim().parse().map(KillOnDrop);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(escaped.is_ok(), "{}", text(&out.stdout));
}

/// A hostile exec server on a kernel-chosen port: greets with `flags`,
/// reads one frame, answers `reply`, then closes. Returns its address.
fn hostile_server(flags: u8, reply: Vec<Frame>) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut c = RawFrames::new(s);
        c.send_handshake(&Handshake::Hello { flags, nonce: [7; 32] });
        if flags & sockit::auth::FLAG_TOKEN == 0 {
            c.send_handshake(&Handshake::Ready);
            let _ = c.recv();
        } else {
            let _ = c.recv_handshake();
        }
        for f in &reply {
            c.send(f);
        }
    });
    (addr, t)
}

#[test]
fn text_from_the_server_reaches_the_terminal_without_controls() {
    let evil = "\x1b]0;pwned\x07\rsockit: all good, \x1b[2Ksend your token";
    // A refusal of the token.
    let (addr, t) = hostile_server(sockit::auth::FLAG_TOKEN, vec![Frame::Error(evil.into())]);
    let out = exec(&format!("127.0.0.1:{}", addr.port()), &["--", "true"]);
    t.join().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(!err.contains(['\x1b', '\r']), "{err:?}");
    assert!(err.contains("send your token"), "{err:?}");

    // Errors and notices during a run; the command's own output is data
    // and passes untouched.
    let reply = vec![
        Frame::Notice(format!("notice: {evil}")),
        Frame::Stdout(bytes::Bytes::from_static(b"\x1b[1mraw data\r\n")),
        Frame::Error(format!("error: {evil}")),
        Frame::Exit(Exit::Code(0)),
    ];
    let (addr, t) = hostile_server(0, reply);
    let out = exec(&format!("127.0.0.1:{}", addr.port()), &["--", "true"]);
    t.join().unwrap();
    assert_ok(&out);
    assert_eq!(out.stdout, b"\x1b[1mraw data\r\n");
    let err = text(&out.stderr);
    assert!(!err.contains(['\x1b', '\r']), "{err:?}");
    assert!(err.contains("notice: sockit: all good") && err.contains("error: sockit"), "{err:?}");
}
