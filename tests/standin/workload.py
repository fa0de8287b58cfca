#!/usr/bin/python3
"""An IoT Edge workload API stand-in on a unix socket (standard library only).

* `POST /modules/{m}/genid/{g}/sign?api-version=…` with `{"keyId","algo","data"}` answers
  `{"digest": base64(HMAC-SHA256(module key, base64decode(data)))}` (edgelet
  edgelet-http-workload/src/module/data/sign.rs); 404 with `{"message": …}` for another
  module or generation id, 400 for a malformed body.
* `GET /trust-bundle?api-version=…` answers `{"certificate": <the PEM file>}`.

Every request goes to `--record` as a JSON line (method, path, content type, keyId, algo;
never the digest). Prints `READY` when listening; stops on SIGTERM.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import socketserver
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--module-key-base64", required=True)
    p.add_argument("--module", required=True)
    p.add_argument("--generation-id", required=True)
    p.add_argument("--trust-bundle", required=True)
    p.add_argument("--record", required=True)
    return p.parse_args()


ARGS = None
RECORD = None


def record(**fields):
    fields["time"] = time.time()
    RECORD.write(json.dumps(fields, sort_keys=True) + "\n")
    RECORD.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):
        return "unix"

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        record(kind="request", method="GET", path=url.path, api_version=query.get("api-version", [None])[0])
        if url.path == "/trust-bundle":
            with open(ARGS.trust_bundle) as f:
                self.answer(200, {"certificate": f.read()})
        else:
            self.answer(404, {"message": "not found: %s" % url.path})

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")]
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record(
            kind="request",
            method="POST",
            path=url.path,
            api_version=query.get("api-version", [None])[0],
            content_type=self.headers.get("Content-Type"),
            key_id=(body or {}).get("keyId"),
            algo=(body or {}).get("algo"),
        )
        # /modules/{m}/genid/{g}/sign
        if len(parts) != 6 or parts[1] != "modules" or parts[3] != "genid" or parts[5] != "sign":
            return self.answer(404, {"message": "not found: %s" % url.path})
        if parts[2] != ARGS.module or parts[4] != ARGS.generation_id:
            return self.answer(404, {"message": "Module not found"})
        if not isinstance(body, dict) or "data" not in body:
            return self.answer(400, {"message": "malformed sign request"})
        try:
            data = base64.b64decode(body["data"], validate=True)
        except ValueError:
            return self.answer(400, {"message": "data is not base64"})
        key = base64.b64decode(ARGS.module_key_base64)
        digest = base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode()
        self.answer(200, {"digest": digest})


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    global ARGS, RECORD
    ARGS = parse_args()
    RECORD = open(ARGS.record, "a")
    if os.path.exists(ARGS.socket):
        os.unlink(ARGS.socket)
    server = Server(ARGS.socket, Handler)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print("READY", flush=True)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()
        try:
            os.unlink(ARGS.socket)
        except OSError:
            pass


if __name__ == "__main__":
    main()
