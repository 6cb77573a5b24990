"""The explorer's web server: the standard library's ThreadingHTTPServer, the page and its script and
style from the package (a fixed list, read once at start: no request names a file), and a small JSON API.

    GET /                      the page (also /index.html)
    GET /static/explore.js     its script; /static/explore.css its style
    GET /api/info              the run, its latents (KL order, ranges, factor labels), factors, UG-VAE parts
    GET /api/image?index=I     image I: its code, factors, the image and its reconstruction (PNG data URLs)
    GET /api/decode?z=a,b,...[&beta=...]   the decoded image of a code
    GET /api/find?NAME=CLASS...            an image with those factor classes (the nearest if none has all)
    GET /api/component?k=K[&beta=...]      UG-VAE: the mean code of mixture component K

Anything else is 404; a bad or out-of-range parameter is 400 with ``{"error": "..."}``; the server keeps
serving after both. On a loopback address it answers only requests whose Host header names a loopback
host (so a web page elsewhere cannot reach it through DNS rebinding).
"""
from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

from ..errors import VaelabError
from .explorer import Explorer

# The only files the server sends: URL path -> (packaged file, content type).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/explore.js": ("explore.js", "text/javascript; charset=utf-8"),
    "/static/explore.css": ("explore.css", "text/css; charset=utf-8"),
}
# Everything the page needs is on this server; images arrive as data: URLs.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
MAX_QUERY = 16_384  # characters; a code of a few hundred latents fits many times over


def load_static() -> dict[str, bytes]:
    """The packaged files, by name (read once)."""
    folder = resources.files("vaelab.explore") / "static"
    return {name: (folder / name).read_bytes() for name in {f for f, _ in STATIC.values()}}


class BadRequest(ValueError):
    pass


def _params(query: str, allowed) -> dict[str, str]:
    if len(query) > MAX_QUERY:
        raise BadRequest(f"query too long ({len(query):,} characters, at most {MAX_QUERY:,})")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=256,
                          errors="strict")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed query: {str(e)[:80]}") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise BadRequest(f"parameter {k!r} given twice")
        if allowed is not None and k not in allowed:
            raise BadRequest(f"unknown parameter {k[:40]!r}; this request takes {', '.join(sorted(allowed)) or 'none'}")
        out[k] = v
    return out


def _numbers(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")] if text != "" else []
    except ValueError:
        raise BadRequest(f"{what} must be comma-separated numbers") from None


def _required(p: dict, key: str) -> str:
    if key not in p:
        raise BadRequest(f"missing parameter {key!r}")
    return p[key]


class Handler(BaseHTTPRequestHandler):
    server: "ExploreServer"
    protocol_version = "HTTP/1.1"  # keep-alive: the page's decodes reuse one connection
    # headers and body go out in two writes; with Nagle's algorithm the second waits for the client's
    # delayed ACK, 40 ms per request on Linux (measured: 48 ms round trips for a 2 ms decode)
    disable_nagle_algorithm = True
    server_version = "vaelab-explore"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        if self.server.verbose:
            sys.stderr.write(f"vaelab explore: {self.address_string()} {format % args}\n")

    # ------------------------------------------------------------------ responses
    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if ctype.startswith("text/html"):
            self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj):
        self._send(status, json.dumps(obj, separators=(",", ":")).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str):
        self._json(status, {"error": message})

    # ------------------------------------------------------------------ routing
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        try:
            self._route()
        except BadRequest as e:
            self._error(400, str(e))
        except ValueError as e:  # the explorer's checks of values (index out of range, ...)
            self._error(400, str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug: answer, say so on stderr, keep serving
            sys.stderr.write(f"vaelab explore: internal error on {self.path[:120]}: {type(e).__name__}: {e}\n")
            try:
                self._error(500, f"internal error: {type(e).__name__}")
            except OSError:
                self.close_connection = True

    def _route(self):
        if not self.server.host_ok(self.headers.get("Host", "")):
            return self._error(403, "unexpected Host header: open the explorer at the URL it printed")
        parts = urlsplit(self.path)
        path, query = parts.path, parts.query
        if path in STATIC:
            name, ctype = STATIC[path]
            _params(query, None)
            return self._send(200, self.server.static[name], ctype, cache=True)
        ex = self.server.explorer
        if path == "/api/info":
            _params(query, set())
            return self._json(200, ex.info())
        if path == "/api/image":
            p = _params(query, {"index"})
            return self._json(200, ex.image(_required(p, "index")))
        if path == "/api/decode":
            p = _params(query, {"z", "beta"})
            z = _numbers(_required(p, "z"), "z")
            beta = _numbers(p["beta"], "beta") if "beta" in p else None
            return self._json(200, ex.decode(z, beta))
        if path == "/api/find":
            names = {f["name"] for f in ex.info()["factors"]}
            p = _params(query, names)
            return self._json(200, ex.find(p))
        if path == "/api/component":
            p = _params(query, {"k", "beta"})
            beta = _numbers(p["beta"], "beta") if "beta" in p else None
            return self._json(200, ex.component(_required(p, "k"), beta))
        return self._error(404, f"not found: {path[:120]}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExploreServer(ThreadingHTTPServer):
    """The explorer's server. ``serve_forever()`` to run (in a thread for tests), ``shutdown()`` and
    ``server_close()`` to stop; ``url`` is its address."""

    daemon_threads = True
    allow_reuse_address = True  # a restart right after Ctrl-C may reuse the port (TIME_WAIT)

    def __init__(self, explorer: Explorer | None, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)
        self.explorer = explorer
        self.verbose = verbose
        self.static = load_static()
        self.host = host
        self.loopback = _is_loopback(host)
        self._thread = None

    def handle_error(self, request, client_address):
        """A connection that fails outside a request's handling (the browser closed it, a reset): one line
        when ``verbose``, never a traceback; the server keeps serving."""
        exc = sys.exc_info()[1]
        if self.verbose or not isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            sys.stderr.write(f"vaelab explore: connection from {client_address[0]} failed: "
                             f"{type(exc).__name__}: {exc}\n")

    def server_bind(self):
        """Bind as HTTPServer does, without its reverse DNS look-up of the address (slow or hanging on
        machines without a resolver; the name is never used here)."""
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        h = self.host
        if h in ("0.0.0.0", "::", ""):
            h = "127.0.0.1" if h != "::" else "::1"  # the URL to open on this machine
        return f"http://[{h}]:{self.port}/" if ":" in h else f"http://{h}:{self.port}/"

    def host_ok(self, header: str) -> bool:
        if not self.loopback:
            return True  # the user chose to serve beyond this machine (and was warned)
        h = header.strip()
        if h.startswith("["):
            h = h[1:h.find("]")] if "]" in h else h
        else:
            h = h.rsplit(":", 1)[0] if h.count(":") == 1 else h
        return _is_loopback(h)

    def start(self) -> "ExploreServer":
        """Serve in a daemon thread (tests, notebooks); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="vaelab-explore", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving (from another thread than the one serving) and close the socket."""
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self.stop()
        else:
            self.server_close()


def bind(host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> ExploreServer:
    """A bound server without an explorer yet (the CLI binds before the slow model set-up, so a port in
    use fails at once). Raises :class:`VaelabError` when the address cannot be used."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise VaelabError(f"port must be an integer 0..65535 (0: a free one), got {port!r}")
    try:
        return ExploreServer(None, host, port, verbose)
    except OSError as e:
        import errno

        if e.errno == errno.EADDRINUSE:
            raise VaelabError(f"port {port} on {host} is in use: choose another with --port, or leave --port out "
                              f"for a free one") from None
        if e.errno == errno.EACCES:
            raise VaelabError(f"no permission to listen on port {port} of {host}: choose a port above 1023") from None
        raise VaelabError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(run, host: str = "127.0.0.1", port: int = 0, step: int | None = None, device: str = "cpu",
          start: bool = True, verbose: bool = False, seed: int = 0) -> ExploreServer:
    """Open ``run`` (a run folder or :class:`~vaelab.training.run.Run`) for exploring and serve it.

    Returns the server, already serving in a daemon thread when ``start`` (the default): read ``.url``,
    and call ``.stop()`` when done (or use it as a context manager). With ``start=False`` call
    ``serve_forever()`` yourself."""
    from ..viz.common import open_run

    r = open_run(run, step=step, device=device)
    server = bind(host, port, verbose)
    try:
        server.explorer = Explorer(r, seed=seed)
    except BaseException:
        server.server_close()
        raise
    return server.start() if start else server
