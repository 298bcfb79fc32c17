#!/usr/bin/env python3
"""The project's own HTTP test server, for `sockit get` tests and benchmarks.

    httpd.py DIR [--tls CERT KEY]

Listens on a kernel-chosen loopback port and prints
`listening on tcp://127.0.0.1:PORT (httpd)` on stderr. Routes:

  /files/NAME       a file from DIR (sendfile), with ranges; ?norange=1 ignores them
  /chunked          a chunked body
  /redirect/N       N redirects, then 200 "arrived"
  /loop             redirects to itself
  /gzip             gzip-encoded when asked for (Accept-Encoding)
  /stall            headers, 10 bytes of 100, then nothing for 60 s
  /slow-head        nothing for 60 s
  /short            announces 1000 bytes, sends 500, closes
  /status/CODE      that status, body "status CODE"
  /headers          the request's headers as the body
  /xhost            redirects to /referer on another host name (localhost)
  /referer          the request's Referer header as the body, "(none)" without
  /continue-forever "100 Continue" interim responses, 5 a second, for 2 min
  /drip-head        a status line, then a header one byte every 0.5 s, for 2 min
"""
import gzip
import os
import re
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(sys.argv[1])
CHUNKS = [b"first chunk\n", b"second, a bit longer chunk\n", b"x" * 5000 + b"\n", b"last\n"]
TEXT = b"compress me please\n" * 200


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body, headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path.startswith("/files/"):
            return self.file(os.path.join(ROOT, os.path.basename(path[7:])), "norange=1" not in query)
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for c in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        m = re.fullmatch(r"/redirect/(\d+)", path)
        if m:
            n = int(m.group(1))
            if n == 0:
                return self.reply(200, b"arrived\n")
            return self.reply(302, b"", [("Location", f"/redirect/{n - 1}")])
        if path == "/loop":
            return self.reply(302, b"", [("Location", "/loop")])
        if path == "/gzip":
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                return self.reply(200, gzip.compress(TEXT), [("Content-Encoding", "gzip")])
            return self.reply(200, TEXT)
        if path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            time.sleep(60)
            return
        if path == "/slow-head":
            time.sleep(60)
            return
        if path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"s" * 500)
            self.wfile.flush()
            self.close_connection = True
            return
        m = re.fullmatch(r"/status/(\d+)", path)
        if m:
            return self.reply(int(m.group(1)), b"status %s\n" % m.group(1).encode())
        if path == "/headers":
            return self.reply(200, str(self.headers).encode())
        if path == "/xhost":
            port = self.server.server_address[1]
            return self.reply(302, b"", [("Location", f"http://localhost:{port}/referer")])
        if path == "/referer":
            return self.reply(200, b"referer: %s\n" % self.headers.get("Referer", "(none)").encode())
        if path == "/continue-forever":
            return self.drip(b"", b"HTTP/1.1 100 Continue\r\n\r\n", 0.2, 600)
        if path == "/drip-head":
            return self.drip(b"HTTP/1.1 200 OK\r\nX-Drip: ", b"a", 0.5, 240)
        self.reply(404, b"no such route\n")

    def drip(self, first, piece, every, times):
        """Sends `first`, then `piece` every `every` seconds, `times` times at
        most (the client gives up long before), never finishing the head."""
        self.close_connection = True
        try:
            self.wfile.write(first)
            for _ in range(times):
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(every)
        except OSError:
            pass

    def file(self, name, ranges):
        try:
            f = open(name, "rb")
        except OSError:
            return self.reply(404, b"no such file\n")
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end, code = 0, size, 200
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")) if ranges else None
            if m:
                start = int(m.group(1))
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code = 206
            self.send_response(code)
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes" if ranges else "none")
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            self.wfile.flush()
            offset = start
            if isinstance(self.connection, ssl.SSLSocket):
                f.seek(start)
                while offset < end:
                    piece = f.read(min(end - offset, 1 << 20))
                    if not piece:
                        break
                    self.wfile.write(piece)
                    offset += len(piece)
            while offset < end:
                sent = os.sendfile(self.connection.fileno(), f.fileno(), offset, min(end - offset, 1 << 24))
                if sent == 0:
                    break
                offset += sent


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if "--tls" in sys.argv:
        i = sys.argv.index("--tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[i + 1], sys.argv[i + 2])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening on tcp://127.0.0.1:{server.server_address[1]} (httpd)", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
