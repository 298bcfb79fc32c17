//! Helpers for tests that run the real `sockit` binary on loopback: start a
//! process, wait (bounded) for its `listening on` lines to learn the ports
//! the kernel chose, talk to it, and kill it on drop. Failures print the
//! command and everything it wrote to stderr.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn sockit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockit"))
}

/// A running sockit (or peer) process.
pub struct Proc {
    pub child: Child,
    cmdline: String,
    stderr_rx: Receiver<String>,
    stderr_log: Arc<Mutex<Vec<String>>>,
    stdout_rx: Option<Receiver<Vec<u8>>>,
    /// `(service, endpoint)` from each `listening on` line seen.
    pub listeners: Vec<(String, String)>,
}

impl Proc {
    /// Starts `sockit ARGS` with piped stdio and waits for `n` listening lines.
    pub fn start(args: &[&str], n: usize) -> Proc {
        let mut cmd = sockit();
        cmd.args(args);
        Proc::spawn(cmd, n)
    }

    pub fn spawn(mut cmd: Command, n: usize) -> Proc {
        let (mut child, cmdline) = spawn_piped(&mut cmd);
        let (tx, stderr_rx) = channel();
        let stderr_log = Arc::new(Mutex::new(Vec::new()));
        let log = stderr_log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (otx, orx) = channel();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || otx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc { child, cmdline, stderr_rx, stderr_log, stdout_rx: Some(orx), listeners: vec![] };
        for _ in 0..n {
            let line = p.wait_stderr(|l| l.contains("listening on "));
            let rest = &line[line.find("listening on ").unwrap() + 13..];
            let (ep, svc) = rest.split_once(" (").unwrap();
            let svc = svc.split(')').next().unwrap();
            p.listeners.push((svc.to_string(), ep.to_string()));
        }
        p
    }

    /// Waits (bounded) for a stderr line matching `pred`, returning it.
    pub fn wait_stderr(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.stderr_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => self.fail("timed out waiting for a stderr line"),
                Err(RecvTimeoutError::Disconnected) => self.fail("process closed stderr before the line came"),
            }
        }
    }

    /// Waits (bounded) until each predicate has matched some stderr line,
    /// in whatever order the lines come: events from separate connections
    /// or tasks are logged in any order. Returns the matching lines, in the
    /// predicates' order.
    pub fn wait_stderr_all(&mut self, preds: &[&dyn Fn(&str) -> bool]) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut found: Vec<Option<String>> = vec![None; preds.len()];
        while found.iter().any(Option::is_none) {
            match self.stderr_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    for (slot, pred) in found.iter_mut().zip(preds) {
                        if slot.is_none() && pred(&line) {
                            *slot = Some(line.clone());
                        }
                    }
                }
                Err(e) => {
                    let missing: Vec<usize> = (0..found.len()).filter(|&i| found[i].is_none()).collect();
                    let why = match e {
                        RecvTimeoutError::Timeout => "timed out",
                        RecvTimeoutError::Disconnected => "process closed stderr",
                    };
                    self.fail(&format!("{why} waiting for stderr lines; predicates {missing:?} never matched"))
                }
            }
        }
        found.into_iter().flatten().collect()
    }

    /// The endpoint of the `n`th listener of `service` (in start order).
    pub fn endpoint(&self, service: &str, n: usize) -> String {
        self.listeners
            .iter()
            .filter(|(s, _)| s == service)
            .nth(n)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no listener #{n} for {service} in {:?}", self.listeners))
    }

    /// `HOST:PORT` of the first listener of `service` whose endpoint starts
    /// with `scheme` (`tcp://` or `udp://`).
    pub fn addr(&self, service: &str, scheme: &str) -> SocketAddr {
        let ep = self
            .listeners
            .iter()
            .find(|(s, e)| s == service && e.starts_with(scheme))
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no {scheme} listener for {service} in {:?}", self.listeners));
        ep[scheme.len()..].parse().unwrap()
    }

    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().unwrap()
    }

    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Reads stdout until `want` bytes have come (bounded).
    pub fn read_stdout(&mut self, want: usize) -> Vec<u8> {
        self.read_stdout_while(&format!("{want} bytes"), WAIT, |got| got.len() < want)
    }

    /// Reads stdout until it contains `needle` (bounded).
    pub fn read_stdout_until(&mut self, needle: &str) -> String {
        self.read_stdout_until_within(needle, WAIT)
    }

    /// [`Proc::read_stdout_until`] for a step known to take longer (a
    /// browser session).
    pub fn read_stdout_until_within(&mut self, needle: &str, wait: Duration) -> String {
        text(&self.read_stdout_while(&format!("{needle:?}"), wait, |got| !text(got).contains(needle)))
    }

    fn read_stdout_while(&mut self, what: &str, wait: Duration, more: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while more(&got) {
            match self.stdout_rx.as_ref().unwrap().recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(chunk) => got.extend(chunk),
                Err(_) => self.fail(&format!("stdout gave {:?}, wanted {what}", text(&got))),
            }
        }
        got
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Waits (bounded) for the process to exit; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.fail("did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_log.lock().unwrap().join("\n")
    }

    pub fn fail(&self, what: &str) -> ! {
        std::thread::sleep(Duration::from_millis(100));
        panic!("{what}\ncommand: {}\nstderr:\n{}", self.cmdline, self.stderr())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sockit ARGS` with `input` on stdin to its end (bounded).
pub fn run(args: &[&str], input: &[u8]) -> Output {
    let mut cmd = sockit();
    cmd.args(args);
    run_cmd(cmd, input)
}

/// Starts `cmd` with all three stdio streams piped; returns it and its
/// command line, for failure messages.
fn spawn_piped(cmd: &mut Command) -> (Child, String) {
    let cmdline = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    (child, cmdline)
}

/// Runs a command with `input` on stdin to its end, killing it after [`WAIT`].
pub fn run_cmd(mut cmd: Command, input: &[u8]) -> Output {
    let (mut child, _) = spawn_piped(&mut cmd);
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (done_tx, done_rx) = channel::<()>();
    let killer = std::thread::spawn(move || {
        if done_rx.recv_timeout(WAIT).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    killer.join().unwrap();
    writer.join().unwrap();
    out
}

/// Panics with the whole story unless `out` succeeded.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A TCP connection with read timeouts, for raw-byte protocol checks.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Reads until `want` bytes or EOF (bounded by the socket's read timeout).
pub fn read_n(s: &mut impl Read, want: usize) -> Vec<u8> {
    let mut got = vec![0u8; want];
    let mut n = 0;
    while n < want {
        match s.read(&mut got[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("read after {n} of {want} bytes: {e} (got {:?})", text(&got[..n])),
        }
    }
    got.truncate(n);
    got
}

/// Reads one `\n`-terminated line (bounded).
pub fn read_line(s: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) => panic!("read_line after {:?}: {e}", text(&line)),
        }
    }
    text(&line)
}

/// Reads until EOF (bounded); panics if the peer does not close.
pub fn read_to_eof(s: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap_or_else(|e| panic!("no EOF ({e}); got {:?}", text(&all)));
    all
}

/// Reads until EOF or a reset (bounded): for a server that closes with our
/// input unread, where the kernel answers with RST.
pub fn read_until_closed(s: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("no close ({e}); got {:?}", text(&all)),
        }
    }
}

/// A port that was free a moment ago, for peers that cannot report the port
/// they bound (ncat, socat, nc). Pair it with [`wait_tcp_listening`].
///
/// Picked below the kernel's ephemeral range: a port the kernel hands out
/// for port 0 (another test's server, any outgoing connection's source
/// port) could be taken between this check and the peer's bind, and a peer
/// that then fails to bind leaves the test talking to a stranger. Below the
/// range only another pick could take it, and a counter keeps this
/// process's picks apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (base, span) = (low.saturating_sub(12_000).max(1025), 10_000.min(low.saturating_sub(1025)).max(1));
    for _ in 0..span {
        let port = (base + (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port below the ephemeral range")
}

/// Waits (bounded) until some socket listens on TCP `port`, by reading
/// /proc/net/tcp — no probe connection, which would use up a one-shot peer.
pub fn wait_tcp_listening(port: u16) {
    let needle = format!(":{port:04X} ");
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let t = std::fs::read_to_string(table).unwrap_or_default();
            // Field 2 is local_address; state 0A is LISTEN.
            if t.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && format!("{} ", f[1]).ends_with(&needle) && f[3] == "0A"
            }) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listened on port {port} in time");
}

/// Panics (the test fails) when a peer program the tests need is missing;
/// the README's test command installs them.
pub fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run the README's test command, which installs it");
}

/// Parses the JSON objects of a `--log-format json` stderr.
pub fn json_events(stderr: &str) -> Vec<HashMap<String, String>> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"));
            let mut m = HashMap::new();
            for (k, val) in v["fields"].as_object().unwrap() {
                m.insert(k.clone(), val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string()));
            }
            m
        })
        .collect()
}

/// A line client of the chat service.
pub struct ChatClient {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
    pub nick: String,
}

impl ChatClient {
    /// Connects and reads the welcome line, which names the guest nick.
    pub fn join(addr: SocketAddr) -> ChatClient {
        let s = tcp(addr);
        let mut c = ChatClient { w: s.try_clone().unwrap(), r: BufReader::new(s), nick: String::new() };
        let welcome = c.line();
        assert!(welcome.starts_with("Welcome to sockit chat, guest-") && welcome.contains("/help"), "{welcome}");
        c.nick = welcome["Welcome to sockit chat, ".len()..].split('!').next().unwrap().to_string();
        c
    }

    pub fn send(&mut self, line: &str) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line (bounded by the read timeout); panics at EOF.
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap_or_else(|e| panic!("read: {e}"));
        assert!(!l.is_empty(), "the server closed the connection");
        l.trim_end_matches('\n').to_string()
    }

    /// The next line that is not a join/leave notice.
    pub fn next_said(&mut self) -> String {
        loop {
            let l = self.line();
            if !(l.starts_with("* ") && (l.ends_with(" joined") || l.ends_with(" left"))) {
                return l;
            }
        }
    }

    /// Reads lines until one equals `want`.
    pub fn expect(&mut self, want: &str) {
        let mut seen = vec![];
        loop {
            let l = self.line();
            if l == want {
                return;
            }
            seen.push(l);
            assert!(seen.len() < 50, "never got {want:?}; got {seen:?}");
        }
    }

    /// `/nick NICK`, and its confirmation.
    pub fn rename(&mut self, nick: &str) {
        self.send(&format!("/nick {nick}"));
        self.expect(&format!("* {} is now {nick}", self.nick));
        self.nick = nick.to_string();
    }
}

/// Reads from `s` into `buf` until `decode` yields a whole frame; panics
/// if the peer closes first (reads are bounded by the socket's timeout).
pub fn read_frame<F, E: std::fmt::Debug>(
    s: &mut impl Read,
    buf: &mut bytes::BytesMut,
    decode: impl Fn(&mut bytes::BytesMut) -> Result<Option<F>, E>,
) -> F {
    loop {
        if let Some(f) = decode(buf).unwrap() {
            return f;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the peer closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `sockit serve chat` on a free port, with `extra` flags.
pub fn start_chat(extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["serve", "chat", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let p = Proc::start(&args, 1);
    let addr = p.addr("chat", "tcp://");
    (p, addr)
}
