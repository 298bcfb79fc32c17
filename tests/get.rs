//! `sockit get`: against Python's http.server (HTTP/1.0, a large file) and
//! the project's own test server (tests/httpd.py): chunked bodies,
//! redirects and loops, gzip, ranges and resume, stalls, short bodies,
//! TLS, --fail and the exit codes.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

/// The project's test HTTP server serving `dir`, plain or with TLS.
fn httpd(dir: &Path, tls: Option<(&Path, &Path)>) -> (Proc, String) {
    need("python3");
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/httpd.py")).arg(dir);
    if let Some((cert, key)) = tls {
        cmd.arg("--tls").arg(cert).arg(key);
    }
    let p = Proc::spawn(cmd, 1);
    let base = p.endpoint("httpd", 0).replace("tcp://", if tls.is_some() { "https://" } else { "http://" });
    (p, base)
}

fn get(args: &[&str]) -> Output {
    run(&[&["get"], args].concat(), b"")
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect()
}

#[test]
fn python_http_server_large_file_to_stdout_and_to_a_file() {
    need("python3");
    let dir = tempfile::tempdir().unwrap();
    let body = data(24 << 20);
    std::fs::write(dir.path().join("large.bin"), &body).unwrap();
    let mut cmd = Command::new("python3");
    cmd.args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory"]).arg(dir.path());
    let mut py = Proc::spawn(cmd, 0);
    let line = py.read_stdout_until(") ...");
    let port = line.split(" port ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}/large.bin");

    let out = get(&[&url]);
    assert_ok(&out);
    assert!(out.stdout == body, "{} bytes of {}", out.stdout.len(), body.len());
    assert!(text(&out.stderr).starts_with("HTTP/1.0 200 OK"), "{}", text(&out.stderr));

    let file = dir.path().join("copy.bin");
    let out = get(&["-o", file.to_str().unwrap(), &url]);
    assert_ok(&out);
    assert!(std::fs::read(&file).unwrap() == body);
    assert!(!dir.path().join("copy.bin.part").exists());

    // -O names the file after the URL, in the current directory.
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = sockit();
    cmd.current_dir(cwd.path()).args(["get", "-O", "-s", &url]);
    let out = run_cmd(cmd, b"");
    assert_ok(&out);
    assert!(text(&out.stderr).is_empty(), "-s: {}", text(&out.stderr));
    assert!(std::fs::read(cwd.path().join("large.bin")).unwrap() == body);
}

#[test]
fn chunked_redirects_loops_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, base) = httpd(dir.path(), None);
    let out = get(&[&format!("{base}/chunked")]);
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        [&b"first chunk\n"[..], b"second, a bit longer chunk\n", &[b'x'; 5000], b"\nlast\n"].concat()
    );

    let out = get(&[&format!("{base}/redirect/3")]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "arrived\n");
    let out = get(&["--max-redirects", "2", &format!("{base}/redirect/3")]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out.stderr));
    let out = get(&[&format!("{base}/loop")]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--no-follow"), "{}", text(&out.stderr));
    let out = get(&["--no-follow", &format!("{base}/redirect/1")]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("302 Found") && text(&out.stderr).contains("location: /redirect/0"));

    let text_body = "compress me please\n".repeat(200);
    let out = get(&["--compressed", &format!("{base}/gzip")]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), text_body);
    let asked = text(&get(&["--compressed", &format!("{base}/headers")]).stdout).to_lowercase();
    assert!(asked.contains("accept-encoding: gzip"), "{asked}");
    let out = get(&[&format!("{base}/gzip")]);
    assert_eq!(text(&out.stdout), text_body, "without --compressed nothing is asked for");
    let asked = text(&get(&[&format!("{base}/headers")]).stdout).to_lowercase();
    assert!(!asked.contains("accept-encoding"), "{asked}");
}

#[test]
fn head_include_headers_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "body text\n").unwrap();
    let (_srv, base) = httpd(dir.path(), None);
    let out = get(&["-I", &format!("{base}/files/f.txt")]);
    assert_ok(&out);
    assert!(text(&out.stdout).starts_with("HTTP/1.1 200 OK\r\n") && text(&out.stdout).contains("content-length: 10"));
    assert!(!text(&out.stdout).contains("body text"));
    let out = get(&["-i", &format!("{base}/files/f.txt")]);
    assert!(text(&out.stdout).starts_with("HTTP/1.1 200 OK\r\n") && text(&out.stdout).ends_with("\r\n\r\nbody text\n"));

    let out = get(&["-H", "X-Test: yes", "-A", "tester/1", &format!("{base}/headers")]);
    let echoed = text(&out.stdout).to_lowercase();
    assert!(echoed.contains("x-test: yes") && echoed.contains("user-agent: tester/1"), "{echoed}");
    assert_eq!(get(&["-H", "nonsense", &base]).status.code(), Some(2));

    let out = get(&[&format!("{base}/status/404")]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "status 404\n");
    let out = get(&["--fail", &format!("{base}/status/404")]);
    assert_eq!(out.status.code(), Some(9));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("HTTP 404 Not Found"), "{}", text(&out.stderr));
}

#[test]
fn resume_with_ranges_and_without() {
    let dir = tempfile::tempdir().unwrap();
    let body = data(3 << 20);
    std::fs::write(dir.path().join("big.bin"), &body).unwrap();
    let (_srv, base) = httpd(dir.path(), None);
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("big.bin");
    let part = out_dir.path().join("big.bin.part");

    std::fs::write(&part, &body[..1 << 20]).unwrap();
    let out = get(&["-C", "-o", file.to_str().unwrap(), &format!("{base}/files/big.bin")]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("206 Partial Content") && text(&out.stderr).contains("resuming"));
    assert!(std::fs::read(&file).unwrap() == body);
    assert!(!part.exists());

    // Already complete: the server says 416 and the file is just renamed.
    std::fs::rename(&file, &part).unwrap();
    let out = get(&["-C", "-o", file.to_str().unwrap(), &format!("{base}/files/big.bin")]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("already complete"), "{}", text(&out.stderr));
    assert!(std::fs::read(&file).unwrap() == body);

    // An error instead of the rest: the partial file is left alone.
    std::fs::rename(&file, &part).unwrap();
    let out = get(&["-C", "-o", file.to_str().unwrap(), &format!("{base}/files/gone.bin")]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(std::fs::read(&part).unwrap() == body && !file.exists());
    std::fs::rename(&part, &file).unwrap();

    // A server that ignores ranges: said, and the whole file comes again.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&part, &body[..1 << 20]).unwrap();
    let out = get(&["-C", "-o", file.to_str().unwrap(), &format!("{base}/files/big.bin?norange=1")]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("ignored the range request"), "{}", text(&out.stderr));
    assert!(std::fs::read(&file).unwrap() == body);
}

#[test]
fn stalls_and_short_bodies_fail_and_leave_only_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, base) = httpd(dir.path(), None);
    let out = get(&["--stall-timeout", "1s", &format!("{base}/stall")]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("timed out"));
    let out = get(&["--timeout", "1s", &format!("{base}/slow-head")]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));

    let out = get(&[&format!("{base}/short")]);
    assert_eq!(out.status.code(), Some(11), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("got 500 of 1000 bytes"), "{}", text(&out.stderr));
    let file = dir.path().join("short.out");
    let out = get(&["-o", file.to_str().unwrap(), &format!("{base}/short")]);
    assert_eq!(out.status.code(), Some(11), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("resume with -C"), "{}", text(&out.stderr));
    assert!(!file.exists(), "never a truncated file under the final name");
    assert_eq!(std::fs::read(dir.path().join("short.out.part")).unwrap().len(), 500);
}

#[test]
fn tls_with_a_ca_and_without() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("srv");
    assert_ok(&run(&["cert", "--out", base_path.to_str().unwrap()], b""));
    let (cert, key) = (dir.path().join("srv.pem"), dir.path().join("srv.key"));
    std::fs::write(dir.path().join("f.txt"), "over tls\n").unwrap();
    let (_srv, base) = httpd(dir.path(), Some((&cert, &key)));
    let url = format!("{base}/files/f.txt");
    let out = get(&[&url]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--tls-ca"), "{}", text(&out.stderr));
    let out = get(&["--tls-ca", cert.to_str().unwrap(), &url]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "over tls\n");
    assert_ok(&get(&["--insecure", &url]));
    // TLS to a plain HTTP port is a TLS failure too.
    let (_plain, plain) = httpd(dir.path(), None);
    let out = get(&[&plain.replace("http://", "https://")]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

#[test]
fn bad_urls_and_refused_connections_have_their_own_codes() {
    assert_eq!(get(&["ftp://127.0.0.1/x"]).status.code(), Some(2));
    assert_eq!(get(&["http://exa mple/"]).status.code(), Some(2));
    let out = get(&[&format!("http://127.0.0.1:{}/", free_port())]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot connect"), "{}", text(&out.stderr));
    assert_eq!(get(&["-C", "http://127.0.0.1:1/"]).status.code(), Some(2), "-C needs a file");
}

#[test]
fn http2_with_nginx() {
    need("nginx");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&run(&["cert", "--out", d.join("srv").to_str().unwrap()], b""));
    let body = data(5 << 20);
    std::fs::write(d.join("h2.bin"), &body).unwrap();
    let port = free_port();
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{}}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           server {{ listen 127.0.0.1:{port} ssl http2; ssl_certificate {d}/srv.pem; ssl_certificate_key {d}/srv.key; root {d}; }} }}\n",
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(d.join("nginx.conf")).arg("-p").arg(d);
    let _nginx = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    let url = format!("https://127.0.0.1:{port}/h2.bin");
    let ca = d.join("srv.pem");
    let out = get(&["--tls-ca", ca.to_str().unwrap(), &url]);
    assert_ok(&out);
    assert!(text(&out.stderr).starts_with("HTTP/2.0 200 OK"), "{}", text(&out.stderr));
    assert!(out.stdout == body);
    // Resume over HTTP/2 as well.
    let file = d.join("copy.bin");
    std::fs::write(d.join("copy.bin.part"), &body[..12345]).unwrap();
    let out = get(&["-C", "-o", file.to_str().unwrap(), "--tls-ca", ca.to_str().unwrap(), &url]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("206 Partial Content"), "{}", text(&out.stderr));
    assert!(std::fs::read(&file).unwrap() == body);
}

#[test]
fn a_link_planted_at_the_partial_file_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "downloaded\n").unwrap();
    let (_srv, base) = httpd(dir.path(), None);
    let url = format!("{base}/files/f.txt");
    let shared = tempfile::tempdir().unwrap();
    let victim = shared.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let file = shared.path().join("f.txt");
    let part = shared.path().join("f.txt.part");

    std::os::unix::fs::symlink(&victim, &part).unwrap();
    for resume in [false, true] {
        let out = get(&[if resume { "-C" } else { "-s" }, "-o", file.to_str().unwrap(), &url]);
        assert_eq!(out.status.code(), Some(11), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("symbolic link"), "{}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "written through the link");
        assert!(!file.exists());
    }

    // A hard link to a file of ours is no better.
    std::fs::remove_file(&part).unwrap();
    std::fs::hard_link(&victim, &part).unwrap();
    let out = get(&["-o", file.to_str().unwrap(), &url]);
    assert_eq!(out.status.code(), Some(11), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("other link"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "written through the hard link");

    // Our own partial file is fine, and truncated when not resumed.
    std::fs::remove_file(&part).unwrap();
    std::fs::write(&part, "a much longer stale partial download\n").unwrap();
    assert_ok(&get(&["-o", file.to_str().unwrap(), &url]));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "downloaded\n");
}

#[test]
fn resume_takes_over_a_partial_file_left_at_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let body = data(3 << 20);
    std::fs::write(dir.path().join("big.bin"), &body).unwrap();
    let (_srv, base) = httpd(dir.path(), None);
    let url = format!("{base}/files/big.bin");
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("big.bin");

    // As curl, wget or a browser leave it: the first part, under the name.
    std::fs::write(&file, &body[..1 << 20]).unwrap();
    let out = get(&["-C", "-o", file.to_str().unwrap(), &url]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("206 Partial Content") && text(&out.stderr).contains("resuming"));
    assert!(std::fs::read(&file).unwrap() == body);
    assert!(!out_dir.path().join("big.bin.part").exists());

    // Whole already: nothing to do, nothing moved.
    let out = get(&["-C", "-o", file.to_str().unwrap(), &url]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("already complete"), "{}", text(&out.stderr));
    assert!(std::fs::read(&file).unwrap() == body);

    // An error instead of the rest: the file stays as it was, where it was.
    std::fs::write(&file, &body[..1000]).unwrap();
    let out = get(&["-C", "-o", file.to_str().unwrap(), &format!("{base}/files/gone.bin")]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(std::fs::read(&file).unwrap() == body[..1000]);
    assert!(!out_dir.path().join("big.bin.part").exists());
}

#[test]
fn redirects_to_another_host_send_no_referer() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, base) = httpd(dir.path(), None);
    assert!(base.contains("127.0.0.1"), "{base}");
    let out = get(&[&format!("{base}/xhost?session=secret")]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "referer: (none)\n");
}

#[test]
fn a_head_that_never_ends_is_cut_at_the_head_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, base) = httpd(dir.path(), None);
    for route in ["drip-head", "continue-forever"] {
        let start = std::time::Instant::now();
        let out = get(&["--head-timeout", "2s", &format!("{base}/{route}")]);
        let took = start.elapsed();
        assert_eq!(out.status.code(), Some(8), "{route}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--head-timeout"), "{route}: {}", text(&out.stderr));
        assert!(
            took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(5),
            "{route}: {took:?}"
        );
    }
}
