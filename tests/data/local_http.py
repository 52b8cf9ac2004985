"""A tiny HTTP server on 127.0.0.1 for the download tests (no network needed)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    """Serves `routes` (path -> body, or path -> ("redirect", url)); records request headers."""

    routes: dict[str, bytes | tuple[str, str]]
    auth: str | None
    seen: list[tuple[str, dict[str, str]]]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server_address[1]}{path}"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers.items())))
        if self.server.auth and self.headers.get("Authorization") != self.server.auth:
            self.send_error(401, "Unauthorized")
            return
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
        elif isinstance(route, tuple):
            self.send_response(302)
            self.send_header("Location", route[1])
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(route)))
            self.end_headers()
            self.wfile.write(route)

    def log_message(self, format: str, *args: object) -> None:
        pass
