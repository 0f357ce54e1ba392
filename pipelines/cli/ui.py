"""CLI verb ``taxifare ui``: serve the local runs' pages on loopback.

The runs folder is ``build/local/runs`` by default (``make run`` / ``taxifare run --local`` with
the default work dir ``build/local``): a folder per run with its page (``index.html``), its record
(``run.json``) and its task logs (``logs/``). The pages link to the artifacts in kfp.local's
pipeline root next to it (``build/local/pipeline_root``), so the server's document root is the
runs folder's parent, the work dir, and the URL printed is that of the runs index
(``/runs/``). The index is written again on each visit, so runs that finish while the server is
up appear. Only ``127.0.0.1`` is bound, never another interface.
"""

from __future__ import annotations

import functools
import http.server
import mimetypes
import socketserver
from pathlib import Path

import typer
from rich.console import Console

DEFAULT_RUNS = Path("build/local/runs")
DEFAULT_PORT = 8765
HOST = "127.0.0.1"

console = Console()
err_console = Console(stderr=True)


class RunsHandler(http.server.SimpleHTTPRequestHandler):
    """Files under the work dir; ``/`` sends to the runs index, which is rewritten on each visit;
    kfp.local's artifacts have no file extension, so their type is read from their first bytes."""

    runs_name = "runs"  # the runs folder, under the document root

    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0]
        if route == "/":
            self.send_response(302)
            self.send_header("Location", f"/{self.runs_name}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route in (f"/{self.runs_name}/", f"/{self.runs_name}/index.html"):
            from pipelines.local import page

            page.write_index(Path(self.directory) / self.runs_name)
        super().do_GET()

    def guess_type(self, path) -> str:
        known, _ = mimetypes.guess_type(str(path))
        if known:
            return "text/html; charset=utf-8" if known == "text/html" else known
        return sniff_type(Path(path))

    def log_message(self, format, *args) -> None:
        pass  # quiet: the user asked for pages, not an access log


def sniff_type(path: Path) -> str:
    """text/html for an HTML document, text/plain for UTF-8 text, else application/octet-stream."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2048)
    except OSError:
        return "application/octet-stream"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "text/html; charset=utf-8"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return "application/octet-stream"
    return "text/plain; charset=utf-8"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(runs: Path, port: int = DEFAULT_PORT) -> tuple[http.server.HTTPServer, str]:
    """A server of the runs folder's parent on 127.0.0.1:`port` (0: any free port), and the URL of
    the runs index."""
    runs = Path(runs).resolve()
    handler = functools.partial(type("Handler", (RunsHandler,), {"runs_name": runs.name}), directory=str(runs.parent))
    server = _Server((HOST, port), handler)
    return server, f"http://{HOST}:{server.server_address[1]}/{runs.name}/"


def ui_command(
    runs: Path = typer.Option(DEFAULT_RUNS, "--runs", help="The runs folder (WORKDIR/runs of `taxifare run`)."),
    port: int = typer.Option(DEFAULT_PORT, help="Port on 127.0.0.1 (0: any free port)."),
) -> None:
    """Serve the local runs' pages (a page per run, an index comparing them) on 127.0.0.1; prints the URL."""
    from pipelines.local import page

    runs = runs.resolve()
    if not runs.is_dir():
        err_console.print(
            f"error: no runs folder at {runs}; `make run` makes one (or pass --runs)", markup=False, highlight=False
        )
        raise typer.Exit(code=2)
    page.write_index(runs)
    try:
        server, url = make_server(runs, port)
    except OSError as exc:
        err_console.print(
            f"error: cannot listen on {HOST}:{port}: {exc.strerror}; try --port 0", markup=False, highlight=False
        )
        raise typer.Exit(code=2) from None
    console.print(f"serving {runs} at {url}  (Ctrl-C stops)", markup=False, highlight=False, soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
