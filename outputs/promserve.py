"""A small HTTP listener for Prometheus: ``GET /metrics`` answers with what a render function
returns (outputs/prometheus.py renders); anything else is 404. It runs in a thread of the output
process, on the standard library's ThreadingHTTPServer; stopping it closes the socket."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from collections.abc import Callable

from common.component import BootError
from outputs.prometheus import CONTENT_TYPE


class MetricsListener:
    def __init__(self, *, host: str, port: int, render: Callable[[], bytes],
                 log: logging.Logger | None = None) -> None:
        log = log or logging.getLogger("log_shuttle")
        self.scrapes = 0

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = render()
                outer.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("prometheus listener: " + fmt, *args)

        server_cls = http.server.ThreadingHTTPServer
        if ":" in host:
            class Server6(http.server.ThreadingHTTPServer):
                address_family = socket.AF_INET6
            server_cls = Server6
        try:
            self.server = server_cls((host, port), Handler)
        except OSError as exc:
            raise BootError(f"prometheus: cannot listen on {host}:{port}: "
                            f"{exc.strerror or exc}") from exc
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.5},
                                       name="prometheus-listener", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
