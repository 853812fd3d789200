"""A webhook receiver for tests/webhooks.rs, in a process of its own.

Verifies every delivery with the `standardwebhooks` package from PyPI (an independent
implementation of the Standard Webhooks spec) against each secret in the file named by
--secrets (one a line, re-read for every request, so a test can write them after starting
it), and appends what it got to --log as one JSON line per request:
{"id", "timestamp", "signature", "body" (the raw body, text), "verified": [bool per secret],
"answered": status}. Answers 500 to the first --fail-first requests, then 200. Prints
"listening on PORT" once ready.
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("--secrets", required=True)
parser.add_argument("--log", required=True)
parser.add_argument("--fail-first", type=int, default=0)
args = parser.parse_args()

lock = threading.Lock()
seen = 0


def verified(body: bytes, headers: dict) -> list:
    try:
        with open(args.secrets) as f:
            secrets = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        secrets = []
    out = []
    for secret in secrets:
        try:
            Webhook(secret).verify(body, headers)
            out.append(True)
        except WebhookVerificationError:
            out.append(False)
    return out


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with lock:
            seen += 1
            status = 500 if seen <= args.fail_first else 200
            record = {
                "id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "signature": headers.get("webhook-signature"),
                "contentType": headers.get("content-type"),
                "body": body.decode("utf-8", "replace"),
                "verified": verified(body, headers),
                "answered": status,
            }
            with open(args.log, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
