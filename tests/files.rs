//! `sockit serve files` and `sockit send`: trees with modes and times, a
//! 1 GiB file by hash, resume after the sender or the server is killed,
//! never a partial file under its final name, confinement against
//! hand-crafted frames, overwrite rules, size and space limits, garbage on
//! the port, token and TLS.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sockit::auth::wire::Frame as Handshake;
use sockit::services::files::HANDSHAKE;
use sockit::services::files::wire::{self, Frame, Meta};

use crate::support::*;

/// A files server on a kernel-chosen port storing into `dir`.
fn server(dir: &Path, extra: &[&str]) -> Proc {
    let mut cmd = sockit();
    cmd.args(["serve", "files", "--listen", "127.0.0.1:0", "--dir"]).arg(dir).args(extra).env_remove("SOCKIT_TOKEN");
    Proc::spawn(cmd, 1)
}

fn send(ep: &str, paths: &[&Path], extra: &[&str]) -> Output {
    let mut cmd = sockit();
    cmd.arg("send").args(paths).args(["--to", ep]).args(extra).env_remove("SOCKIT_TOKEN");
    run_cmd(cmd, b"")
}

/// Starts `sockit send PATH` at `rate` bytes per second, in the background.
fn slow_send(path: &Path, ep: &str, rate: &str) -> Proc {
    let mut cmd = sockit();
    cmd.arg("send").arg(path).args(["--to", ep, "--limit-rate", rate]);
    Proc::spawn(cmd, 0)
}

/// Deterministic, incompressible-looking bytes.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn write_big(path: &Path, mib: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = pattern(1 << 20, 7);
    for i in 0..mib {
        let mut b = block.clone();
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&b).unwrap();
    }
}

/// A temporary directory holding a `mib` MiB file `name`, and the path a
/// server should receive into (not yet created).
fn big_source(name: &str, mib: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(name);
    write_big(&file, mib);
    let dest = tmp.path().join("in");
    (tmp, file, dest)
}

fn hash(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    h.finalize()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)))
}

fn partials(dir: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(dir.join(".sockit-partial"))
        .map(|rd| rd.flatten().map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0))).collect())
        .unwrap_or_default()
}

/// Waits (bounded) until a partial file in `dir` holds at least `bytes`.
fn wait_partial(dir: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while partials(dir).iter().all(|(_, n)| *n < bytes) {
        assert!(Instant::now() < deadline, "no partial file reached {bytes} bytes: {:?}", partials(dir));
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Watches `path` on another thread: it must never exist with a size other
/// than `size`. Returns a flag to stop watching and the thread to join.
fn never_partial(path: PathBuf, size: u64) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if let Ok(m) = std::fs::metadata(&path) {
                assert_eq!(m.len(), size, "a partial file appeared under its final name");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    (stop, t)
}

#[test]
fn tree_with_modes_times_and_an_empty_file_then_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::fs::write(src.join("a.txt"), "hello\n").unwrap();
    std::fs::write(src.join("empty"), "").unwrap();
    std::fs::write(src.join("sub/deep/b.bin"), pattern(3 << 20, 1)).unwrap();
    std::fs::write(src.join("sub/c.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("sub/c.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    // Wider than the server's umask lets a new file be: set after creating.
    std::fs::set_permissions(src.join("a.txt"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    let old = std::time::UNIX_EPOCH + Duration::new(1_500_000_000, 123_456_789);
    std::fs::File::options().write(true).open(src.join("a.txt")).unwrap().set_modified(old).unwrap();
    let dest = tmp.path().join("received");
    let mut srv = server(&dest, &[]);
    let ep = srv.endpoint("files", 0);

    let out = send(&ep, &[&src], &["--json"]);
    assert_ok(&out);
    let j = json(&out);
    assert_eq!((j["files"].as_u64(), j["stored"].as_u64(), j["dirs"].as_u64()), (Some(4), Some(4), Some(4)), "{j}");
    assert!(text(&out.stderr).contains("symlink; skipped"), "{}", text(&out.stderr));
    for f in ["a.txt", "empty", "sub/deep/b.bin", "sub/c.sh"] {
        assert_eq!(std::fs::read(dest.join("tree").join(f)).unwrap(), std::fs::read(src.join(f)).unwrap(), "{f}");
    }
    assert!(dest.join("tree/empty-dir").is_dir());
    assert!(!dest.join("tree/link").exists());
    let m = std::fs::metadata(dest.join("tree/sub/c.sh")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o750);
    let m = std::fs::metadata(dest.join("tree/a.txt")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 123_456_789));
    assert_eq!(m.permissions().mode() & 0o777, 0o666);
    // Every file stored is logged, small (gathered per batch) and big.
    srv.wait_stderr_all(&[&|l: &str| l.contains("stored") && l.contains("tree/a.txt"), &|l: &str| {
        l.contains("stored") && l.contains("tree/sub/deep/b.bin")
    }]);

    // Again: everything is there and identical, nothing is written.
    let out = send(&ep, &[&src], &["--json"]);
    assert_ok(&out);
    let j = json(&out);
    assert_eq!((j["stored"].as_u64(), j["same"].as_u64()), (Some(0), Some(4)), "{j}");
    assert!(partials(&dest).is_empty(), "{:?}", partials(&dest));

    // One directory named twice in one command: the second copy finds the
    // first (in a directory the session itself made) and is "already there".
    let out = send(&ep, &[&src.join("sub"), &src.join("sub")], &["--json"]);
    assert_ok(&out);
    let j = json(&out);
    assert_eq!((j["stored"].as_u64(), j["same"].as_u64()), (Some(2), Some(2)), "{j}");
    assert_eq!(std::fs::read(dest.join("sub/c.sh")).unwrap(), b"#!/bin/sh\n");
}

#[test]
fn one_gib_arrives_identical_by_hash() {
    let (_tmp, file, dest) = big_source("gib.bin", 1024);
    let _srv = server(&dest, &[]);
    let (stop, watch) = never_partial(dest.join("gib.bin"), 1 << 30);
    let out = send(&_srv.endpoint("files", 0), &[&file], &[]);
    stop.store(true, Ordering::Relaxed);
    watch.join().unwrap();
    assert_ok(&out);
    assert!(text(&out.stderr).contains("sent 1 file (1 stored)"), "{}", text(&out.stderr));
    assert_eq!(hash(&dest.join("gib.bin")), hash(&file));
}

#[test]
fn sender_killed_half_way_resumes_with_the_same_command() {
    let (_tmp, file, dest) = big_source("data.bin", 48);
    let mut srv = server(&dest, &[]);
    let ep = srv.endpoint("files", 0);
    let (stop, watch) = never_partial(dest.join("data.bin"), 48 << 20);

    let mut sender = slow_send(&file, &ep, "16MiB");
    wait_partial(&dest, 8 << 20);
    sender.signal("KILL");
    sender.wait_exit();
    assert!(!dest.join("data.bin").exists());

    let out = send(&ep, &[&file], &["--json"]);
    stop.store(true, Ordering::Relaxed);
    watch.join().unwrap();
    assert_ok(&out);
    let j = json(&out);
    let sent = j["bytes_sent"].as_u64().unwrap();
    assert!(sent < 44 << 20, "resumed, so less than the whole file went again: {j}");
    srv.wait_stderr(|l| l.contains("resuming"));
    assert_eq!(hash(&dest.join("data.bin")), hash(&file));
    assert!(partials(&dest).is_empty(), "{:?}", partials(&dest));
}

#[test]
fn server_killed_half_way_resumes_after_restart() {
    let (_tmp, file, dest) = big_source("data.bin", 40);
    let srv = server(&dest, &[]);
    let ep = srv.endpoint("files", 0);
    let mut sender = slow_send(&file, &ep, "16MiB");
    wait_partial(&dest, 8 << 20);
    srv.signal("KILL");
    let status = sender.wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(sender.stderr().contains("run the same command again to resume"), "{}", sender.stderr());
    assert!(!dest.join("data.bin").exists());
    drop(srv);

    let mut srv = server(&dest, &[]);
    let out = send(&srv.endpoint("files", 0), &[&file], &["--json"]);
    assert_ok(&out);
    assert!(json(&out)["bytes_sent"].as_u64().unwrap() < 36 << 20, "{}", text(&out.stdout));
    srv.wait_stderr(|l| l.contains("resuming"));
    assert_eq!(hash(&dest.join("data.bin")), hash(&file));
}

/// A raw client: reads Hello and Ready (no token), then speaks frames.
struct Raw {
    s: std::net::TcpStream,
    buf: BytesMut,
}

impl Raw {
    fn connect(ep: &str) -> Raw {
        let s = tcp(ep.trim_start_matches("tcp://").parse().unwrap());
        let mut r = Raw { s, buf: BytesMut::new() };
        assert!(matches!(r.recv_handshake(), Handshake::Hello { flags: 0, .. }));
        assert_eq!(r.recv_handshake(), Handshake::Ready);
        r
    }

    fn recv_handshake(&mut self) -> Handshake {
        read_frame(&mut self.s, &mut self.buf, |b| HANDSHAKE.decode(b))
    }

    fn handshake(&mut self, f: &Handshake) {
        let mut out = BytesMut::new();
        HANDSHAKE.encode(f, &mut out);
        self.s.write_all(&out).unwrap();
    }

    fn recv(&mut self) -> Frame {
        read_frame(&mut self.s, &mut self.buf, wire::decode)
    }

    /// Reads and drops `n` bytes of raw file data.
    fn skip(&mut self, n: u64) {
        let buffered = self.buf.len().min(n as usize);
        let _ = self.buf.split_to(buffered);
        let left = n - buffered as u64;
        let copied = std::io::copy(&mut std::io::Read::take(&mut self.s, left), &mut std::io::sink()).unwrap();
        assert_eq!(copied, left, "the sender stopped sending file data");
    }

    fn send_file(&mut self, path: &[u8], data: &[u8]) -> Frame {
        let mut out = BytesMut::new();
        let meta = Meta { mode: 0o644, mtime: 0, mtime_ns: 0 };
        Frame::File { size: data.len() as u64, meta, flags: 0, path: path.to_vec() }.encode(&mut out);
        out.extend_from_slice(data);
        Frame::Done(*blake3::hash(data).as_bytes()).encode(&mut out);
        self.s.write_all(&out).unwrap();
        self.recv()
    }
}

#[test]
fn hand_crafted_paths_cannot_leave_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("in");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
    let srv = server(&dest, &[]);
    let mut raw = Raw::connect(&srv.endpoint("files", 0));
    let refused = |f: Frame, why: &str| match f {
        Frame::Refused(_, t) => assert!(t.contains(why), "{t:?} lacks {why:?}"),
        other => panic!("expected a refusal with {why:?}, got {other:?}"),
    };
    refused(raw.send_file(b"../escape", b"x"), "'..'");
    refused(raw.send_file(b"a/../../escape", b"x"), "'..'");
    refused(raw.send_file(tmp.path().join("abs").to_str().unwrap().as_bytes(), b"x"), "absolute");
    refused(raw.send_file(b"link/escape", b"x"), "symlink");
    refused(raw.send_file(b"nul\0name", b"x"), "NUL");
    refused(raw.send_file(b".sockit-partial/x.part", b"x"), "server's own");
    // The session goes on after refusals, and a good name is stored.
    assert_eq!(raw.send_file(b"fine.txt", b"ok"), Frame::Stored(b"fine.txt".to_vec()));
    // Pipelined entries are answered in order, refusals included.
    let mut out = BytesMut::new();
    for (path, data) in [(&b"p1.txt"[..], &b"one"[..]), (b"../p2", b"two"), (b"p3.txt", b"three")] {
        Frame::File { size: data.len() as u64, meta: Meta::default(), flags: 0, path: path.to_vec() }.encode(&mut out);
        out.extend_from_slice(data);
        Frame::Done(*blake3::hash(data).as_bytes()).encode(&mut out);
    }
    raw.s.write_all(&out).unwrap();
    assert_eq!(raw.recv(), Frame::Stored(b"p1.txt".to_vec()));
    refused(raw.recv(), "'..'");
    assert_eq!(raw.recv(), Frame::Stored(b"p3.txt".to_vec()));
    // Bytes that do not match their hash are never stored.
    let mut out = BytesMut::new();
    Frame::File { size: 2, meta: Meta::default(), flags: 0, path: b"bad.txt".to_vec() }.encode(&mut out);
    out.extend_from_slice(b"no");
    Frame::Done([0; 32]).encode(&mut out);
    raw.s.write_all(&out).unwrap();
    refused(raw.recv(), "BLAKE3 mismatch");
    assert!(!dest.join("bad.txt").exists());

    let leaked: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    assert!(!tmp.path().join("escape").exists() && !tmp.path().join("abs").exists());
    assert_eq!(std::fs::read(dest.join("fine.txt")).unwrap(), b"ok");
}

#[test]
fn existing_files_are_not_overwritten_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("in");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("notes.txt"), "old\n").unwrap();
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, "new!\n").unwrap();
    let srv = server(&dest, &[]);
    let ep = srv.endpoint("files", 0);

    let out = send(&ep, &[&file], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("exists on the server"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(dest.join("notes.txt")).unwrap(), "old\n");

    let out = send(&ep, &[&file], &["--rename"]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("stored as notes (1).txt"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(dest.join("notes (1).txt")).unwrap(), "new!\n");
    drop(srv);

    let srv = server(&dest, &["--overwrite"]);
    assert_ok(&send(&srv.endpoint("files", 0), &[&file], &[]));
    assert_eq!(std::fs::read_to_string(dest.join("notes.txt")).unwrap(), "new!\n");
}

#[test]
fn size_and_space_limits_say_why_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("two-mib.bin");
    std::fs::write(&file, pattern(2 << 20, 3)).unwrap();
    let dest = tmp.path().join("in");
    let srv = server(&dest, &["--max-size", "1MiB"]);
    let out = send(&srv.endpoint("files", 0), &[&file], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("over the server's --max-size 1 MiB"), "{}", text(&out.stderr));
    assert!(!dest.join("two-mib.bin").exists() && partials(&dest).is_empty());
    drop(srv);

    // A really small filesystem, where this machine lets us mount one.
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("note: cannot mount a tmpfs here; the full-disk case is covered by --max-size only");
        return;
    }
    let srv = server(&small, &[]);
    let ep = srv.endpoint("files", 0);
    let five = tmp.path().join("five-mib.bin");
    std::fs::write(&five, pattern(5 << 20, 4)).unwrap();
    let out = send(&ep, &[&five], &[]);
    let listing: Vec<_> = std::fs::read_dir(&small).unwrap().flatten().map(|e| e.file_name()).collect();
    let parts = partials(&small);
    // Two files that each fit the free space, but not both: the disk fills
    // up in the middle of one of them.
    let halves: Vec<PathBuf> = (0..2)
        .map(|i| {
            let p = tmp.path().join(format!("part{i}.bin"));
            std::fs::write(&p, pattern(5 << 19, 10 + i)).unwrap();
            p
        })
        .collect();
    let senders: Vec<_> = halves.iter().map(|p| slow_send(p, &ep, "2MiB")).collect();
    let mut failures = Vec::new();
    for mut s in senders {
        if !s.wait_exit().success() {
            // The exit can be seen before the last stderr line is read.
            failures.push(s.wait_stderr(|l| l.starts_with("sockit:")));
        }
    }
    let after: Vec<_> = std::fs::read_dir(&small).unwrap().flatten().map(|e| e.file_name()).collect();
    let parts_after = partials(&small);
    drop(srv);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not enough space on the server"), "{}", text(&out.stderr));
    assert_eq!(listing, [std::ffi::OsString::from(".sockit-partial")]);
    assert!(parts.is_empty(), "{parts:?}");
    assert!(!failures.is_empty() && failures.iter().all(|f| f.contains("disk is full")), "{failures:?}");
    assert_eq!(after.len(), 3 - failures.len(), "only what was stored whole: {after:?}");
    assert!(parts_after.is_empty(), "no debris: {parts_after:?}");
}

#[test]
fn garbage_on_the_port_is_an_error_and_the_server_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("in");
    let mut srv = server(&dest, &[]);
    let ep = srv.endpoint("files", 0);
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[5, 0xff, 0xff, 0xff, 0xff], &[0u8; 64]] {
        let mut s = tcp(ep.trim_start_matches("tcp://").parse().unwrap());
        s.write_all(junk).unwrap();
        let _ = read_until_closed(&mut s);
        srv.wait_stderr(|l| l.contains("closed with error"));
    }
    let file = tmp.path().join("after.txt");
    std::fs::write(&file, "still here").unwrap();
    assert_ok(&send(&ep, &[&file], &[]));
    assert_eq!(std::fs::read_to_string(dest.join("after.txt")).unwrap(), "still here");
}

#[test]
fn token_and_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "files-secret-0123456789\n").unwrap();
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, "secret payload").unwrap();
    let dest = tmp.path().join("in");
    let mut cmd = sockit();
    cmd.args(["serve", "files", "--listen", "tls://127.0.0.1:0", "--dir"])
        .arg(&dest)
        .arg("--token-file")
        .arg(&token)
        .env_remove("SOCKIT_TOKEN");
    let srv = Proc::spawn(cmd, 1);
    let ep = srv.endpoint("files", 0);
    let fp = crate::exec::fingerprint(&srv);

    let out = send(&ep, &[&file], &["--tls-fingerprint", &fp]);
    assert_eq!(out.status.code(), Some(2), "no token: {}", text(&out.stderr));
    let bad = tmp.path().join("bad");
    std::fs::write(&bad, "wrong").unwrap();
    let out = send(&ep, &[&file], &["--tls-fingerprint", &fp, "--token-file", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let out = send(&ep, &[&file], &["--token-file", token.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "unverified TLS: {}", text(&out.stderr));
    assert!(!dest.join("f.txt").exists());
    let out = send(&ep, &[&file], &["--tls-fingerprint", &fp, "--token-file", token.to_str().unwrap()]);
    assert_ok(&out);
    assert_eq!(std::fs::read_to_string(dest.join("f.txt")).unwrap(), "secret payload");
}

impl Raw {
    fn frame(&mut self, f: &Frame) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        self.s.write_all(&out).unwrap();
    }
}

/// The server's peak resident memory, in bytes, from /proc.
fn peak_rss(srv: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.child.id())).unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB");
    kib.trim().parse::<u64>().unwrap() * 1024
}

#[test]
fn six_hundred_idle_sessions_do_not_stop_a_send() {
    // More sessions than the runtime has blocking threads (512): each one
    // only reads the greeting and then says nothing.
    sockit::sys::raise_open_file_limit();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("in");
    let srv = server(&dest, &[]);
    let ep = srv.endpoint("files", 0);
    let idle: Vec<Raw> = (0..600).map(|_| Raw::connect(&ep)).collect();
    let file = tmp.path().join("small.txt");
    std::fs::write(&file, "through").unwrap();
    let began = Instant::now();
    let out = send(&ep, &[&file], &[]);
    assert_ok(&out);
    assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
    assert_eq!(std::fs::read_to_string(dest.join("small.txt")).unwrap(), "through");
    drop(idle);
}

#[test]
fn transfers_past_max_transfers_are_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("in");
    let srv = server(&dest, &["--max-transfers", "2"]);
    let ep = srv.endpoint("files", 0);
    // Hostile half-open sessions: one entry each, then silence. The answer
    // to the entry shows the session holds its slot.
    let mut holders: Vec<Raw> = (0..2)
        .map(|i| {
            let mut r = Raw::connect(&ep);
            let path = format!("held{i}").into_bytes();
            r.frame(&Frame::Dir { meta: Meta { mode: 0o755, mtime: 0, mtime_ns: 0 }, path: path.clone() });
            assert_eq!(r.recv(), Frame::Stored(path));
            r
        })
        .collect();
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, "later").unwrap();
    let out = send(&ep, &[&file], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("server busy: 2 transfers at once; try again later"), "{}", text(&out.stderr));
    assert!(!dest.join("f.txt").exists());
    // A session that only connected holds no slot, and one that leaves
    // gives its slot back.
    let _idle = Raw::connect(&ep);
    drop(holders.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let out = send(&ep, &[&file], &[]);
        if out.status.success() {
            break;
        }
        assert!(text(&out.stderr).contains("server busy"), "{}", text(&out.stderr));
        assert!(Instant::now() < deadline, "the slot never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(dest.join("f.txt")).unwrap(), "later");
}

#[test]
fn one_address_cannot_take_every_transfer_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("in");
    let srv = server(&dest, &["--max-transfers-per-address", "1"]);
    let ep = srv.endpoint("files", 0);
    let mut holder = Raw::connect(&ep);
    let path = b"held".to_vec();
    holder.frame(&Frame::Dir { meta: Meta { mode: 0o755, mtime: 0, mtime_ns: 0 }, path: path.clone() });
    assert_eq!(holder.recv(), Frame::Stored(path));
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, "mine").unwrap();
    let out = send(&ep, &[&file], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("server busy: your address has 1 transfers going already"), "{err}");
    drop(holder);
    let deadline = Instant::now() + WAIT;
    while !send(&ep, &[&file], &[]).status.success() {
        assert!(Instant::now() < deadline, "the address's place never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(dest.join("f.txt")).unwrap(), "mine");
}

/// A path of 16 directories, 4095 bytes in all: as long as a path may be.
fn longest_dir_path() -> Vec<u8> {
    let parts: Vec<String> = (0..16).map(|i| format!("{i:x}").repeat(255)).collect();
    let p = parts.join("/").into_bytes();
    assert_eq!(p.len(), 4095);
    p
}

#[test]
fn repeated_dir_frames_hold_no_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("in");
    let srv = server(&dest, &[]);
    let mut raw = Raw::connect(&srv.endpoint("files", 0));
    let path = longest_dir_path();
    const N: usize = 20_000;
    // Answers are read on another thread while the frames go out.
    let mut reader = Raw { s: raw.s.try_clone().unwrap(), buf: BytesMut::new() };
    let p = path.clone();
    let answers = std::thread::spawn(move || {
        for _ in 0..N {
            assert_eq!(reader.recv(), Frame::Stored(p.clone()));
        }
    });
    let mut out = BytesMut::new();
    let meta = Meta { mode: 0o755, mtime: 0, mtime_ns: 0 };
    for i in 0..N {
        Frame::Dir { meta, path: path.clone() }.encode(&mut out);
        if out.len() > 1 << 20 || i == N - 1 {
            raw.s.write_all(&out).unwrap();
            out.clear();
        }
    }
    answers.join().unwrap();
    let peak = peak_rss(&srv);
    assert!(peak < 48 << 20, "{N} frames naming one {}-byte path: peak RSS {} MiB", path.len(), peak >> 20);
    let first = path.split(|&b| b == b'/').next().unwrap();
    assert!(dest.join(std::str::from_utf8(first).unwrap()).is_dir());
}

#[test]
fn distinct_dirs_past_max_dirs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("in");
    std::fs::create_dir_all(dest.join("there")).unwrap();
    let srv = server(&dest, &["--max-dirs", "100"]);
    let mut raw = Raw::connect(&srv.endpoint("files", 0));
    let meta = Meta { mode: 0o755, mtime: 0, mtime_ns: 0 };
    // Directories that exist already cost nothing, however often named.
    for _ in 0..300 {
        raw.frame(&Frame::Dir { meta, path: b"there".to_vec() });
        assert_eq!(raw.recv(), Frame::Stored(b"there".to_vec()));
    }
    for i in 0..100 {
        let path = format!("new{i}").into_bytes();
        raw.frame(&Frame::Dir { meta, path: path.clone() });
        assert_eq!(raw.recv(), Frame::Stored(path));
    }
    // The same ones again are collapsed into what is held.
    raw.frame(&Frame::Dir { meta, path: b"new7".to_vec() });
    assert_eq!(raw.recv(), Frame::Stored(b"new7".to_vec()));
    raw.frame(&Frame::Dir { meta, path: b"one-too-many".to_vec() });
    match raw.recv() {
        Frame::Refused(_, why) => assert!(why.contains("100 directories") && why.contains("--max-dirs"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!dest.join("one-too-many").exists());
    // A file in a new directory past the cap is refused too; in one the
    // session made, or one that was there, it is stored.
    match raw.send_file(b"there/another/f.txt", b"x") {
        Frame::Refused(_, why) => assert!(why.contains("--max-dirs"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(raw.send_file(b"new3/f.txt", b"x"), Frame::Stored(b"new3/f.txt".to_vec()));
    assert_eq!(raw.send_file(b"there/f.txt", b"x"), Frame::Stored(b"there/f.txt".to_vec()));
}

#[test]
fn existing_directories_keep_their_mode_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    std::fs::create_dir_all(src.join("old")).unwrap();
    std::fs::create_dir_all(src.join("new")).unwrap();
    std::fs::write(src.join("new/f.txt"), "f").unwrap();
    let sent_time = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for (d, mode) in [("old", 0o777), ("new", 0o750), ("", 0o777)] {
        let p = src.join(d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::File::open(&p).unwrap().set_modified(sent_time).unwrap();
    }
    let dest = tmp.path().join("in");
    std::fs::create_dir_all(dest.join("tree/old")).unwrap();
    let own_time = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for d in ["tree/old", "tree"] {
        std::fs::set_permissions(dest.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::File::open(dest.join(d)).unwrap().set_modified(own_time).unwrap();
    }
    let srv = server(&dest, &[]);
    assert_ok(&send(&srv.endpoint("files", 0), &[&src], &[]));
    let m = std::fs::metadata(dest.join("tree/old")).unwrap();
    assert_eq!((m.permissions().mode() & 0o777, m.mtime()), (0o700, 1_000_000_000), "an existing directory");
    let m = std::fs::metadata(dest.join("tree")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o700, "an existing directory");
    assert_ne!(m.mtime(), 1_600_000_000, "an existing directory");
    let m = std::fs::metadata(dest.join("tree/new")).unwrap();
    assert_eq!((m.permissions().mode() & 0o777, m.mtime()), (0o750, 1_600_000_000), "a new directory");
    assert_eq!(std::fs::read_to_string(dest.join("tree/new/f.txt")).unwrap(), "f");
}

#[test]
fn a_rerun_takes_over_from_a_stalled_holder_of_the_file() {
    let (_tmp, file, dest) = big_source("data.bin", 8);
    let srv = server(&dest, &[]);
    let ep = srv.endpoint("files", 0);
    // A sender that began the same file and then went silent without
    // closing (killed behind a NAT, a cable pulled): the server still
    // holds the file for it.
    let m = std::fs::metadata(&file).unwrap();
    let meta = Meta { mode: m.permissions().mode() & 0o7777, mtime: m.mtime(), mtime_ns: m.mtime_nsec() as u32 };
    let mut stalled = Raw::connect(&ep);
    stalled.frame(&Frame::File { size: m.len(), meta, flags: 0, path: b"data.bin".to_vec() });
    assert_eq!(stalled.recv(), Frame::Send(0));
    let data = std::fs::read(&file).unwrap();
    stalled.s.write_all(&data[..2 << 20]).unwrap();
    wait_partial(&dest, 2 << 20);

    let out = send(&ep, &[&file], &["--json"]);
    assert_ok(&out);
    let j = json(&out);
    assert_eq!(j["stored"].as_u64(), Some(1), "{j}");
    assert!(j["bytes_sent"].as_u64().unwrap() <= 6 << 20, "resumed from the stalled one's data: {j}");
    assert_eq!(hash(&dest.join("data.bin")), hash(&file));
    // The stalled session was told why it ended.
    match stalled.recv() {
        Frame::Error(why) => assert!(why.contains("took over"), "{why}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn two_senders_of_one_file_at_once_both_succeed() {
    let (_tmp, file, dest) = big_source("data.bin", 32);
    let srv = server(&dest, &[]);
    let ep = srv.endpoint("files", 0);
    let mut first = slow_send(&file, &ep, "16MiB");
    wait_partial(&dest, 4 << 20);
    let out = send(&ep, &[&file], &["--json"]);
    assert_ok(&out);
    let j = json(&out);
    assert_eq!((j["stored"].as_u64(), j["same"].as_u64()), (Some(0), Some(1)), "{j}");
    assert!(j["bytes_sent"].as_u64().unwrap() < 1 << 20, "no second upload: {j}");
    assert!(first.wait_exit().success(), "{}", first.stderr());
    assert_eq!(hash(&dest.join("data.bin")), hash(&file));
}

#[test]
fn server_text_is_cleaned_before_the_sender_prints_it() {
    // A hand-made files server whose every word is hostile.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let evil = "\x1b]0;pwned\x07\x1b[2K\rforged";
    let peer = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut r = Raw { s, buf: BytesMut::new() };
        r.handshake(&Handshake::Hello { flags: 0, nonce: [0; 32] });
        r.handshake(&Handshake::Ready);
        let mut answers =
            vec![Frame::Stored(format!("renamed{evil}.txt").into_bytes()), Frame::refused(format!("refused{evil}"))]
                .into_iter();
        loop {
            match r.recv() {
                Frame::File { .. } | Frame::Dir { .. } => {}
                Frame::Done(_) => {
                    let next = answers.next().unwrap_or(Frame::Same);
                    r.frame(&next);
                }
                Frame::End => {
                    r.frame(&Frame::Error(format!("ended{evil}")));
                    break;
                }
                _ => {}
            }
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.txt"), tmp.path().join("b.txt"));
    std::fs::write(&a, "").unwrap();
    std::fs::write(&b, "").unwrap();
    let out = send(&ep, &[&a, &b], &[]);
    peer.join().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("renamedforged.txt") && err.contains("refusedforged") && err.contains("endedforged"),
        "{err:?}"
    );
    assert!(!err.contains('\x1b') && !err.contains('\r') && !err.contains('\x07'), "{err:?}");
}

#[test]
fn a_mismatch_after_resuming_is_sent_again_whole_whatever_the_words() {
    // A hand-made files server that offers to resume, then refuses with the
    // mismatch reason in words the sender has never seen: the code decides.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let size = 2 << 20;
    let peer = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut r = Raw { s, buf: BytesMut::new() };
        r.handshake(&Handshake::Hello { flags: 0, nonce: [0; 32] });
        r.handshake(&Handshake::Ready);
        let mut offers = vec![1 << 20, 0].into_iter();
        let mut offset = 0;
        let mut whole = false;
        loop {
            match r.recv() {
                Frame::File { path, .. } => {
                    assert_eq!(path, b"big.bin");
                    offset = offers.next().expect("sent at most twice");
                    r.frame(&Frame::Send(offset));
                    r.skip(size - offset);
                }
                Frame::Done(_) if offset > 0 => {
                    r.frame(&Frame::Refused(wire::Reason::Mismatch, "big.bin: nope, start over".into()))
                }
                Frame::Done(_) => {
                    whole = true;
                    r.frame(&Frame::Stored(b"big.bin".to_vec()));
                }
                Frame::End => {
                    r.frame(&Frame::Bye);
                    break;
                }
                f => panic!("unexpected {f:?}"),
            }
        }
        whole
    });
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, pattern(size as usize, 7)).unwrap();
    let out = send(&ep, &[&big], &[]);
    let err = text(&out.stderr);
    assert!(peer.join().unwrap(), "sent again from 0: {err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("sending again whole"), "{err}");
}
