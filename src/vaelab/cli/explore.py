"""`vaelab explore RUN`: a local web page with one slider per latent, decoded as you drag."""
from __future__ import annotations

import sys


def register(sub):
    p = sub.add_parser("explore", help="explore a model live in the browser: a slider per latent",
                       description="Serve a local web page for RUN: pick a data image (by index, at random or by "
                                   "its factors), see its reconstruction, and move one slider per latent (ordered "
                                   "by KL, labelled with the factor each carries where `vaelab evaluate` scored "
                                   "the run); the image is decoded as you drag. Ctrl-C stops it.")
    p.add_argument("run", metavar="RUN", help="run folder made by `vaelab train`")
    p.add_argument("--step", type=int, help="use the checkpoint of this step (default: the newest)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; the page has no "
                        "authentication)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N | auto")
    p.add_argument("--verbose", action="store_true", help="log every request on stderr")
    p.set_defaults(func=run_explore)


def run_explore(args) -> int:
    from ..errors import VaelabError
    from ..explore.explorer import Explorer
    from ..explore.server import _is_loopback, bind
    from ..viz.common import open_run

    if not 0 <= args.port <= 65535:
        raise VaelabError(f"--port must be 0..65535 (0: a free one), got {args.port}")
    run = open_run(args.run, step=args.step, device=args.device)  # no checkpoint, bad step: one line, exit 2
    server = bind(args.host, args.port, verbose=args.verbose)  # port in use: one line, exit 2, before the slow part
    try:
        if not _is_loopback(args.host):
            sys.stderr.write(f"vaelab: warning: serving on {args.host}: the explorer has no authentication; anyone "
                             f"who can reach port {server.port} can use it\n")
        server.explorer = Explorer(run)
        print(f"vaelab explore: {run.path} (step {run.step:,}) at {server.url}  (Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            _open_browser(server.url)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:  # Ctrl-C or kill (cli.main turns SIGINT and SIGTERM into it)
        print("vaelab explore: stopped", flush=True)
        return 0
    finally:
        server.server_close()
    return 0


def _open_browser(url: str):
    """Open the page in a thread: a slow or console browser must not hold the server up."""
    import threading
    import webbrowser

    def go():
        try:
            if not webbrowser.open(url):
                sys.stderr.write(f"vaelab: warning: no browser found; open {url} yourself\n")
        except Exception:  # a broken browser set-up is not the explorer's failure
            sys.stderr.write(f"vaelab: warning: could not open a browser; open {url} yourself\n")

    threading.Thread(target=go, daemon=True).start()
