"""Serve the page and the exports on loopback: python web/serve.py [--port 8000].

The repository root is served (the page at /web/, the exports at /exports/), with the JavaScript
and WebAssembly MIME types module workers need, and the cross-origin isolation headers that let
onnxruntime-web use threads. Standard library only.
"""

import argparse
import functools
import http.server
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                      ".json": "application/json", ".onnx": "application/octet-stream"}

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


def server(port=8000, root=ROOT, quiet=False) -> http.server.ThreadingHTTPServer:
    """A server bound to 127.0.0.1 (port 0: any free port; see .server_address)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=str(root)))
    httpd.quiet = quiet
    return httpd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    httpd = server(args.port)
    print(f"the zoo page: http://127.0.0.1:{httpd.server_address[1]}/web/  (Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
