"""Little HTTP services for the tracing tests, run as real processes:

    python services.py backend PORT LOG
    python services.py frontend PORT BACKEND_PORT LOG
    python services.py eventloop PORT LOG

backend and frontend are ThreadingHTTPServers (a thread per connection) whose handler writes one
log line per step through the logging module's FileHandler (one write(2) per line); the
frontend calls the backend over HTTP for each request. eventloop is an asyncio server that
interleaves its requests on one thread (each waits a little before it answers) and logs the same
way. Every log line names the request's id (the last part of its path). The service prints
"ready" once it listens.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import random
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def logger(path: str) -> logging.Logger:
    log = logging.getLogger("svc")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return log


def serve(port: int, log: logging.Logger, backend: int = 0) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            rid = self.path.rsplit("/", 1)[-1]
            status = 500 if "fail" in rid else 200
            if backend:
                log.info("frontend got id=%s", rid)
                conn = http.client.HTTPConnection("127.0.0.1", backend, timeout=10)
                conn.request("GET", "/back/" + rid)
                resp = conn.getresponse()
                resp.read()
                conn.close()
                log.info("frontend backend answered %d id=%s", resp.status, rid)
            else:
                log.info("backend handled id=%s", rid)
            body = f"{rid}\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


async def eventloop(port: int, log: logging.Logger) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                rid = line.split()[1].decode().rsplit("/", 1)[-1]
                log.info("eventloop start id=%s", rid)
                await asyncio.sleep(random.uniform(0.001, 0.02))
                log.info("eventloop end id=%s", rid)
                body = f"{rid}\n".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                log.info("eventloop sent id=%s", rid)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "frontend":
        serve(port, logger(sys.argv[4]), backend=int(sys.argv[3]))
    elif kind == "backend":
        serve(port, logger(sys.argv[3]))
    else:
        asyncio.run(eventloop(port, logger(sys.argv[3])))


if __name__ == "__main__":
    main()
