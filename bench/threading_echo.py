"""Python socketserver.ThreadingTCPServer echo: the tutorial's server, a peer
in bench/compare.

Run: python3 bench/threading_echo.py 127.0.0.1 0
"""
import socket
import socketserver
import sys


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = self.request.recv(4096)
            if not data:
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096


if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    with Server((host, port), Handler) as server:
        host, port = server.server_address[:2]
        print(f"listening on tcp://{host}:{port} (threading-echo)", file=sys.stderr, flush=True)
        server.serve_forever()
