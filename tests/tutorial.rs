//! The tutorial clients, unchanged, against sockit's services.

use std::process::Command;

use crate::support::*;

fn python(code: &str, args: &[String]) -> String {
    need("python3");
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(code).args(args);
    let out = run_cmd(cmd, b"");
    assert_ok(&out);
    text(&out.stdout)
}

#[test]
fn greeting_client_without_newlines() {
    let p = Proc::start(&["serve", "greet", "--listen", "127.0.0.1:0"], 1);
    let port = p.addr("greet", "tcp://").port().to_string();
    let out = python(
        r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(('127.0.0.1', int(sys.argv[1])))
print(s.recv(1024).decode('utf-8'))
for data in [b'michael', b'tracy', b'sarah']:
    s.send(data)
    print(s.recv(1024).decode('utf-8'))
s.send(b'exit')
s.close()
"#,
        &[port],
    );
    assert_eq!(out, "Welcome!\n\nHello, michael!\n\nHello, tracy!\n\nHello, sarah!\n\n");
}

#[test]
fn socketserver_style_client_new_connection_per_message() {
    let p = Proc::start(&["serve", "stamp", "--listen", "127.0.0.1:0"], 1);
    let port = p.addr("stamp", "tcp://").port().to_string();
    let out = python(
        r#"
import socket, sys
for i in range(5):
    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)
    s.sendall(b'data\r\n')
    print(s.recv(1024).decode('utf-8'), end='')
    s.close()
"#,
        &[port],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines.iter().all(|l| l.starts_with('[') && l.ends_with("] data")), "{out}");
}

#[test]
fn udp_stamp_client() {
    let p = Proc::start(&["serve", "stamp", "--listen", "udp://127.0.0.1:0"], 1);
    let port = p.addr("stamp", "udp://").port().to_string();
    let out = python(
        r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
for data in [b'michael', b'tracy']:
    s.sendto(data, ('127.0.0.1', int(sys.argv[1])))
    print(s.recv(1024).decode('utf-8'))
"#,
        &[port],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with('[') && lines[0].ends_with("] michael"), "{out}");
    assert!(lines[1].ends_with("] tracy"), "{out}");
}
