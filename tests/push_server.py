"""A real local HTTP server that speaks enough of ntfy's publish API to record what we push."""

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class PushServer:
    url: str
    received: list[dict] = field(default_factory=list)
    # Status codes to answer, one per request, before answering 200 again.
    next_statuses: list[int] = field(default_factory=list)


def start_push_server() -> tuple[PushServer, ThreadingHTTPServer]:
    state = PushServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            status = state.next_statuses.pop(0) if state.next_statuses else 200
            if status == 200:
                state.received.append(
                    {"topic": self.path.lstrip("/"), "title": self.headers.get("Title"), "body": body}
                )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"id": "sandbox"}')

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state, server
