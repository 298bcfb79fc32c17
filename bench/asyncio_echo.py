"""Python asyncio echo server, TCP and UDP: a peer in bench/compare.

Run: python3 bench/asyncio_echo.py 127.0.0.1 0
"""
import asyncio
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoUdp(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def main(host, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, backlog=4096)
    host, port = server.sockets[0].getsockname()[:2]
    await loop.create_datagram_endpoint(EchoUdp, local_addr=(host, port))
    print(f"listening on tcp://{host}:{port} (asyncio-echo)", file=sys.stderr, flush=True)
    print(f"listening on udp://{host}:{port} (asyncio-echo)", file=sys.stderr, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
