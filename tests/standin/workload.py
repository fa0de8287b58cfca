#!/usr/bin/env python3
"""An IoT Edge workload API stand-in on a unix socket (standard library only).

The contract is shared/reference/iotedge-amqp.md §5.2 (edgelet's workload API):

* `POST /modules/{m}/genid/{g}/sign?api-version=…` with `{"keyId","algo","data"}` answers
  `{"digest": base64(HMAC-SHA256(module key, base64decode(data)))}` (edgelet
  edgelet-http-workload/src/module/data/sign.rs); 404 with `{"message": …}` for another
  module or generation id, 400 for a malformed body.
* `GET /trust-bundle?api-version=…` answers `{"certificate": <the PEM file>}`.

Every request goes to `--record` as a JSON line, flushed: {"kind": "request", "method",
"path", "api_version", "content_type", "key_id", "algo", "data" (the decoded string-to-sign,
e.g. "<sr>\n<se>": no secret), "status", "time"}; never the key or the digest. A request
without api-version gets 400 (edgelet requires it). Anything unexpected is written to stderr.
Prints `READY` when listening; stops on SIGTERM.
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
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--key-base64", "--module-key-base64", dest="module_key_base64",
                   required=True, help="the module's key, base64")
    p.add_argument("--device", help="the device id (recorded only: not in the API paths)")
    p.add_argument("--module", required=True)
    p.add_argument("--generation-id", required=True)
    p.add_argument("--trust-bundle", required=True)
    p.add_argument("--record", required=True)
    return p.parse_args()


ARGS = None
RECORD = None
RECORD_LOCK = threading.Lock()  # the server answers on several threads


def warn(text):
    print("workload stand-in: " + text, file=sys.stderr, flush=True)


def record(**fields):
    fields["time"] = time.time()
    if ARGS.device:
        fields["device"] = ARGS.device
    with RECORD_LOCK:
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
        api_version = urllib.parse.parse_qs(url.query).get("api-version", [None])[0]
        status, obj = 404, {"message": "not found: %s" % url.path}
        if not api_version:
            status, obj = 400, {"message": "api-version is missing"}
        elif url.path == "/trust-bundle":
            with open(ARGS.trust_bundle) as f:
                status, obj = 200, {"certificate": f.read()}
        if status != 200:
            warn("GET %s answered %d" % (self.path, status))
        record(kind="request", method="GET", path=url.path, api_version=api_version,
               status=status)
        self.answer(status, obj)

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        api_version = urllib.parse.parse_qs(url.query).get("api-version", [None])[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")]
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = None
        data = None
        status, obj = 200, None
        # /modules/{m}/genid/{g}/sign (edgelet's route, ref §5.2)
        if len(parts) != 6 or parts[1] != "modules" or parts[3] != "genid" or parts[5] != "sign":
            status, obj = 404, {"message": "not found: %s" % url.path}
        elif not api_version:
            status, obj = 400, {"message": "api-version is missing"}
        elif parts[2] != ARGS.module or parts[4] != ARGS.generation_id:
            status, obj = 404, {"message": "Module not found: %s (generation %s)" % (parts[2], parts[4])}
        elif body is None or not isinstance(body.get("data"), str):
            status, obj = 400, {"message": "malformed sign request"}
        else:
            try:
                data = base64.b64decode(body["data"], validate=True)
            except ValueError:
                status, obj = 400, {"message": "data is not base64"}
        if status == 200:
            key = base64.b64decode(ARGS.module_key_base64)
            digest = base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode()
            obj = {"digest": digest}
        else:
            warn("POST %s answered %d: %s" % (self.path, status, obj["message"]))
        record(
            kind="request",
            method="POST",
            path=url.path,
            api_version=api_version,
            content_type=self.headers.get("Content-Type"),
            key_id=(body or {}).get("keyId"),
            algo=(body or {}).get("algo"),
            data=data.decode("utf-8", "replace") if data is not None else None,
            status=status,
        )
        self.answer(status, obj)


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
