"""Explore a model live: a local web page with one slider per latent, decoded as you drag.

    server = vaelab.explore.serve("runs/quickstart", port=0)   # serving in a thread
    print(server.url); ...; server.stop()

`vaelab explore RUN` is the same from the command line. The page, its script and style ship inside the
package (``static/``): no CDN, no build step, it works offline.
"""
from .explorer import DEAD_KL, VALUE_LIMIT, Explorer
from .server import ExploreServer, bind, serve

__all__ = ["DEAD_KL", "VALUE_LIMIT", "Explorer", "ExploreServer", "bind", "serve"]
