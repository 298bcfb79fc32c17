#!/usr/bin/python3
"""An independent WebSocket peer for the tests: Debian's python3-websockets.

  ws_peer.py echo URL            binary and text round trips through an echo
  ws_peer.py bulk URL N          N random bytes out in 64 KiB binary messages,
                                 the same bytes back (sha256 compared)
  ws_peer.py over URL SIZE       one SIZE-byte message (0: none); prints the
                                 close code and reason
  ws_peer.py origin URL ORIGIN   prints 'ok' or 'refused STATUS'
  ws_peer.py hold URL SECS       says nothing for SECS (pongs answer pings);
                                 prints 'connected', then 'open' or
                                 'closed CODE'
  ws_peer.py lines URL L1 L2…    sends each line as a text message, prints
                                 each text reply until 1 s of quiet
  ws_peer.py server              a server: greets, then answers each message
                                 upper-cased; prints its `listening on` line
A wss:// URL is not verified (the server's certificate is self-signed).
"""
import asyncio, hashlib, os, ssl, sys
import websockets

def ssl_for(url):
    if not url.startswith("wss://"):
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx

def connect(url, **kw):
    return websockets.connect(url, ssl=ssl_for(url), max_size=None, open_timeout=10, **kw)

async def echo(url):
    async with connect(url) as ws:
        await ws.send(b"bin\x00\xff")
        assert await ws.recv() == b"bin\x00\xff"
        await ws.send("text")
        got = await ws.recv()
        assert got in (b"text", "text"), got
    print("ok")

async def bulk(url, n):
    data = os.urandom(n)
    async with connect(url) as ws:
        async def send():
            for i in range(0, n, 65536):
                await ws.send(data[i:i + 65536])
        sender = asyncio.create_task(send())
        got = bytearray()
        while len(got) < n:
            got += await asyncio.wait_for(ws.recv(), 20)
        await sender
    print("ok" if hashlib.sha256(got).digest() == hashlib.sha256(data).digest() else "MISMATCH")

async def over(url, size):
    async with connect(url) as ws:
        if size > 0:
            await ws.send(b"x" * size)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as e:
            print(e.rcvd.code if e.rcvd else "none", e.rcvd.reason if e.rcvd else "")

async def hold(url, secs):
    async with connect(url) as ws:
        print("connected", flush=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + secs
        try:
            while loop.time() < end:
                await asyncio.wait_for(ws.recv(), end - loop.time())
        except asyncio.TimeoutError:
            pass
        except websockets.ConnectionClosed as e:
            return print("closed", e.rcvd.code if e.rcvd else "none")
        print("open")

async def origin(url, org):
    try:
        async with connect(url, origin=org) as ws:
            print("ok")
    except websockets.exceptions.InvalidHandshake as e:
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        print("refused", status) if status else print("dropped")
    except (OSError, EOFError, websockets.exceptions.ConnectionClosed) as e:
        print("dropped")

async def lines(url, msgs):
    async with connect(url) as ws:
        for m in msgs:
            await ws.send(m)
        try:
            while True:
                print(await asyncio.wait_for(ws.recv(), 1), flush=True)
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            pass

async def server():
    async def handler(ws):
        await ws.send("hello from python\n")
        async for m in ws:
            await ws.send(m.upper() if isinstance(m, (bytes, str)) else m)
    async with websockets.serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}/ (python)", file=sys.stderr, flush=True)
        await asyncio.Future()

mode, args = sys.argv[1], sys.argv[2:]
if mode == "echo": asyncio.run(echo(args[0]))
elif mode == "bulk": asyncio.run(bulk(args[0], int(args[1])))
elif mode == "over": asyncio.run(over(args[0], int(args[1])))
elif mode == "hold": asyncio.run(hold(args[0], float(args[1])))
elif mode == "origin": asyncio.run(origin(args[0], args[1]))
elif mode == "lines": asyncio.run(lines(args[0], args[1:]))
elif mode == "server": asyncio.run(server())
else: sys.exit(f"unknown mode {mode}")
