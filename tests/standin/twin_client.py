#!/usr/bin/env python3
"""A bare module-twin client made with Qpid Proton, for the stand-in's own tests: it does what
the Node SDK never does (two different channel correlation ids, requests without a
correlation-id, reported patches edgeHub refuses, DELETE), so that the stand-in's edgeHub
rules can be checked too.

  twin_client.py --port P --key-base64 K --hub H --device D --module M
                 --sender-channel twin:A --receiver-channel twin:B
                 --requests '[{"operation": "PATCH", "resource": "...", "body": "...",
                               "correlation_id": "c1"}, ...]' --linger SECS

Connects over TLS (no peer check: a test certificate), puts a SAS token for the module on
$cbs, attaches the twin receiver, then the twin sender (each with its channel id), sends
each request (sent settled, one data section; correlation_id null: none), then prints one
JSON line per message it receives on the twin receiver (`{"correlation_id", "status",
"body"}`) for --linger seconds, `{"detached": "receiver"|"sender", "condition"}` for a twin
link the stand-in closed, and `done`. Prints `ready` once the requests are sent.
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.parse

from proton import Endpoint, Message, SSLDomain, symbol
from proton.reactor import LinkOption
from proton.utils import BlockingConnection, LinkDetached


class Props(LinkOption):
    def __init__(self, channel):
        self.channel = channel

    def apply(self, link):
        link.properties = {symbol("com.microsoft:channel-correlation-id"): self.channel}
        link.snd_settle_mode = link.SND_SETTLED
        link.rcv_settle_mode = link.RCV_FIRST


def main():
    p = argparse.ArgumentParser()
    for a in ("--port", "--key-base64", "--hub", "--device", "--module", "--sender-channel",
              "--receiver-channel"):
        p.add_argument(a, required=True)
    p.add_argument("--requests", default="[]")
    p.add_argument("--linger", type=float, default=1.0)
    args = p.parse_args()

    sr = urllib.parse.quote("%s/devices/%s/modules/%s" % (args.hub, args.device, args.module),
                            safe="")
    se = str(int(time.time()) + 3600)
    sig = base64.b64encode(hmac.new(base64.b64decode(args.key_base64),
                                    (sr + "\n" + se).encode(), hashlib.sha256).digest())
    token = "SharedAccessSignature sr=%s&sig=%s&se=%s" % (
        sr, urllib.parse.quote(sig.decode(), safe=""), se)

    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_peer_authentication(SSLDomain.ANONYMOUS_PEER)
    conn = BlockingConnection("amqps://127.0.0.1:%s" % args.port, ssl_domain=domain,
                              timeout=10, allowed_mechs="ANONYMOUS")
    cbs_in = conn.create_receiver("$cbs", name="cbs-receiver", credit=1)
    cbs_out = conn.create_sender("$cbs", name="cbs-sender")
    cbs_out.send(Message(id="put-1", reply_to="$cbs", body=token, properties={
        "operation": "put-token", "type": "servicebus.windows.net:sastoken",
        "name": urllib.parse.unquote(sr)}))
    reply = cbs_in.receive(timeout=10)
    cbs_in.accept()
    if reply.properties.get("status-code") != 200:
        print("put-token failed: %r" % (reply.properties,), file=sys.stderr)
        sys.exit(1)

    try:
        twin(args, conn)
    except LinkDetached as e:
        print(json.dumps({"detached": str(e)}), flush=True)
    print("done", flush=True)
    try:
        conn.close()
    except Exception:
        pass


def twin(args, conn):
    node = "/devices/%s/modules/%s/twin" % (args.device, args.module)
    twin_in = conn.create_receiver(node, name="twin-receiver", credit=10,
                                   options=Props(args.receiver_channel))
    twin_out = conn.create_sender(node, name="twin-sender",
                                  options=Props(args.sender_channel))
    for r in json.loads(args.requests):
        ann = {symbol("operation"): r["operation"]}
        if r.get("resource"):
            ann[symbol("resource")] = r["resource"]
        twin_out.send(Message(correlation_id=r.get("correlation_id"), annotations=ann,
                              body=r.get("body", " ").encode(), inferred=True))
    print("ready", flush=True)
    end = time.time() + args.linger
    while time.time() < end:
        try:
            m = twin_in.receive(timeout=max(0.05, end - time.time()))
        except Exception as e:  # proton.utils Timeout, or the link closed by the stand-in
            if isinstance(e, LinkDetached):
                raise
            break
        body = m.body
        print(json.dumps({
            "correlation_id": None if m.correlation_id is None else str(m.correlation_id),
            "status": (m.annotations or {}).get("status"),
            "body": bytes(body).decode() if isinstance(body, (bytes, memoryview)) else body,
        }), flush=True)
    for name, link in (("receiver", twin_in.link), ("sender", twin_out.link)):
        if link.state & Endpoint.REMOTE_CLOSED:
            cond = link.remote_condition
            print(json.dumps({"detached": name,
                              "condition": cond.name if cond else None}), flush=True)


if __name__ == "__main__":
    main()
