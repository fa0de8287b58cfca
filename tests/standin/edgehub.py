#!/usr/bin/python3
"""An edgeHub stand-in made with Qpid Proton, for the integration tests.

It does what edgeHub does on its AMQP head, as far as a module sees it
(shared/reference/iotedge-amqp.md, §3 and §6):

* TLS on 127.0.0.1 with a server certificate issued by a test CA; no SASL or ANONYMOUS.
* A `$cbs` node: a put-token request (amqp-value string body = the SAS token, string
  application properties operation/type/name) is answered on the client's `$cbs` receiver
  link with status-code 200 (int) and status-description "OK", correlation-id = the
  request's message-id. Like edgeHub (CbsNode.cs) it does not check the token then: it
  keeps it for the connection.
* When a link attaches to `/devices/{d}/modules/{m}/messages/events`, the connection's
  token is checked as edgeHub checks it (DeviceScopeTokenAuthenticator, SharedAccessSignature):
  HMAC-SHA256 with the module key over `sr` exactly as sent + "\\n" + se, audience
  `{hub or gateway}/devices/{d}/modules/{m}` after url-decoding, not expired. A bad token
  refuses the attach with amqp:unauthorized-access.
* Messages on that link are settled per `--outcomes` (accept, release, reject, modify, drop),
  then accepted. A transfer that arrives after the connection's newest token expired closes
  the connection with amqp:unauthorized-access, so a client that does not renew is caught.

Everything it sees goes to `--record` as JSON lines (never the token or its signature).
Prints `READY <port>` on stdout when listening. Stops on SIGTERM.
"""

import argparse
import base64
import hashlib
import hmac
import json
import signal
import socket
import sys
import time
import urllib.parse
import uuid

from proton import Condition, Delivery, Message, int32, symbol
from proton.handlers import MessagingHandler
from proton.reactor import Container


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--module-key-base64", required=True)
    p.add_argument("--hub", required=True, help="IoT Hub host name the audience may name")
    p.add_argument("--gateway", default="localhost", help="edge host name the audience may name")
    p.add_argument("--device", required=True)
    p.add_argument("--module", required=True)
    p.add_argument("--outcomes", default="", help="comma list: accept,release,reject,modify,drop")
    p.add_argument("--clock-skew-secs", type=int, default=0)
    p.add_argument("--record", required=True)
    return p.parse_args()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def type_name(v):
    if v is None:
        return "null"
    if isinstance(v, symbol):
        return "symbol"
    if isinstance(v, str):
        return "string"
    if isinstance(v, uuid.UUID):
        return "uuid"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return type(v).__name__  # int32, ulong, long, int ...
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "binary"
    return type(v).__name__


def plain(v):
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return str(v)


def typed_map(m):
    """A map with the AMQP type of each key and value."""
    if not m:
        return {}
    return {
        str(k): {"key_type": type_name(k), "value": plain(v), "value_type": type_name(v)}
        for k, v in m.items()
    }


def props(m):
    return {str(k): plain(v) for k, v in (m or {}).items()}


def settle_mode(v):
    return None if v is None else int(v)


class EdgeHub(MessagingHandler):
    def __init__(self, args, url):
        super().__init__(auto_accept=False, auto_settle=True)
        self.args = args
        self.url = url
        self.key = base64.b64decode(args.module_key_base64)
        self.outcomes = [o for o in args.outcomes.split(",") if o]
        self.record_file = open(args.record, "a", buffering=1)
        self.conns = {}  # connection -> state
        self.refusals = {}  # link -> reason, closed once open
        self.next_conn = 0
        self.events_path = "/devices/%s/modules/%s/messages/events" % (args.device, args.module)

    # ------------------------------------------------------------ plumbing

    def record(self, **fields):
        fields["time"] = time.time()
        self.record_file.write(json.dumps(fields, sort_keys=True) + "\n")

    def state(self, connection):
        s = self.conns.get(connection)
        if s is None:
            self.next_conn += 1
            s = {"id": self.next_conn, "token": None, "cbs_senders": []}
            self.conns[connection] = s
        return s

    def on_start(self, event):
        event.container.ssl.server.set_credentials(self.args.cert, self.args.key, None)
        event.container.listen(self.url)
        print("READY %d" % self.args.port, flush=True)

    def on_connection_opened(self, event):
        c = event.connection
        t = event.transport
        s = self.state(c)
        idle = t.remote_idle_timeout
        self.record(
            kind="connection",
            conn=s["id"],
            hostname=c.remote_hostname,
            container_id=c.remote_container,
            idle_timeout_ms=None if not idle else int(round(idle * 1000)),
            max_frame_size=t.remote_max_frame_size,
        )

    def on_transport_closed(self, event):
        c = event.connection
        if c in self.conns:
            self.record(kind="disconnect", conn=self.conns[c]["id"])
            del self.conns[c]

    # ------------------------------------------------------------ links

    def address_of(self, link):
        term = link.remote_target if link.is_receiver else link.remote_source
        return term.address

    def path_of(self, address):
        if not address:
            return ""
        return urllib.parse.urlparse(address).path if "://" in address else address

    def on_link_opening(self, event):
        link = event.link
        s = self.state(link.connection)
        address = self.address_of(link)
        refused = None
        if link.is_receiver and self.path_of(address) not in ("$cbs",):
            path = urllib.parse.unquote(self.path_of(address))
            if path != self.events_path:
                refused = "unknown address %s" % address
            else:
                refused = self.check_token(s["token"])
        self.record(
            kind="attach",
            conn=s["id"],
            role="receiver" if link.is_sender else "sender",
            name=link.name,
            address=address,
            source=link.remote_source.address,
            target=link.remote_target.address,
            properties=typed_map(link.remote_properties),
            snd_settle_mode=settle_mode(link.remote_snd_settle_mode),
            rcv_settle_mode=settle_mode(link.remote_rcv_settle_mode),
            refused=refused,
        )
        if refused:
            # edgeHub: "Unable to open ... link as the connection could not be authenticated":
            # the attach is answered, then the link is detached with the error. Proton sends
            # the detach only once the link is open on both sides (on_link_opened).
            self.refusals[link] = refused
            link.open()
            return
        if link.is_sender and self.path_of(address) == "$cbs":
            s["cbs_senders"].append(link)
        if link.is_receiver:
            link.flow(100)

    def on_link_opened(self, event):
        reason = self.refusals.pop(event.link, None)
        if reason:
            event.link.condition = Condition("amqp:unauthorized-access", reason)
            event.link.close()

    # ------------------------------------------------------------ tokens

    def check_token(self, tok):
        """None when the token is good, else the reason (what edgeHub would refuse for)."""
        if tok is None:
            return "no token was put on this connection"
        if tok.get("error"):
            return tok["error"]
        if tok["expiry"] + self.args.clock_skew_secs < time.time():
            return "token expired"
        return None

    def parse_token(self, token):
        out = {"expiry": 0, "audience": None, "error": None}
        if not isinstance(token, str) or not token.startswith("SharedAccessSignature "):
            out["error"] = "not a SharedAccessSignature token"
            return out
        fields = {}
        for part in token[len("SharedAccessSignature "):].split("&"):
            k, _, v = part.partition("=")
            fields[k] = v
        sr, sig, se = fields.get("sr"), fields.get("sig"), fields.get("se")
        if not (sr and sig and se):
            out["error"] = "sr, sig or se missing"
            return out
        try:
            out["expiry"] = int(se)
        except ValueError:
            out["error"] = "se is not a number"
            return out
        out["audience"] = urllib.parse.unquote(sr)
        expected = base64.b64encode(
            hmac.new(self.key, (sr + "\n" + se).encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(urllib.parse.unquote(sig), expected):
            out["error"] = "signature does not match the module key"
            return out
        allowed = {
            "%s/devices/%s/modules/%s" % (h, self.args.device, self.args.module)
            for h in (self.args.hub, self.args.gateway)
        }
        if out["audience"] not in allowed:
            out["error"] = "audience %s is not the module's" % out["audience"]
        return out

    def put_token(self, event, msg):
        s = self.state(event.connection)
        ap = msg.properties or {}
        token = self.parse_token(msg.body)
        s["token"] = token
        reason = self.check_token(token)
        self.record(
            kind="put-token",
            conn=s["id"],
            operation=plain(ap.get("operation")),
            type=plain(ap.get("type")),
            name=plain(ap.get("name")),
            app_property_types={str(k): type_name(v) for k, v in ap.items()},
            body_type=type_name(msg.body),
            audience=token["audience"],
            expiry=token["expiry"],
            token_valid=reason is None,
            reason=reason,
            status=200,
            message_id=plain(msg.id),
            message_id_type=type_name(msg.id),
            reply_to=msg.reply_to,
        )
        reply = Message(
            correlation_id=msg.id,
            properties={"status-code": int32(200), "status-description": "OK"},
        )
        target = None
        for link in s["cbs_senders"]:
            if msg.reply_to and link.remote_source.address == msg.reply_to:
                target = link
        if target is None and s["cbs_senders"]:
            target = s["cbs_senders"][0]
        if target is None:
            print("edgehub stand-in: put-token with no $cbs receiver to reply to", file=sys.stderr)
            return
        target.send(reply)

    # ------------------------------------------------------------ messages

    def on_message(self, event):
        link = event.link
        msg = event.message
        address = self.path_of(self.address_of(link))
        if address == "$cbs":
            self.accept(event.delivery)
            if (msg.properties or {}).get("operation") == "put-token":
                self.put_token(event, msg)
            return
        s = self.state(event.connection)
        expired = self.check_token(s["token"])
        if expired:
            self.record(kind="closed", conn=s["id"], reason=expired)
            event.connection.condition = Condition("amqp:unauthorized-access", expired)
            event.connection.close()
            return
        outcome = self.outcomes.pop(0) if self.outcomes else "accept"
        self.record(
            kind="message",
            conn=s["id"],
            address=self.address_of(link),
            message_id=plain(msg.id),
            message_id_type=type_name(msg.id),
            to=msg.address,
            content_type=None if str(msg.content_type) in ("None", "") else str(msg.content_type),
            content_encoding=None
            if str(msg.content_encoding) in ("None", "")
            else str(msg.content_encoding),
            annotations=typed_map(msg.annotations),
            application_properties=props(msg.properties),
            body_section="data" if msg.inferred and isinstance(msg.body, (bytes, memoryview)) else "value",
            body=plain(msg.body),
            outcome=outcome,
        )
        d = event.delivery
        if outcome == "accept":
            self.accept(d)
        elif outcome == "release":
            self.release(d, delivered=False)
        elif outcome == "modify":
            d.local.failed = True
            d.update(Delivery.MODIFIED)
            d.settle()
        elif outcome == "reject":
            d.local.condition = Condition(
                "amqp:not-allowed", "Message size exceeds the limit (stand-in rejection)"
            )
            d.update(Delivery.REJECTED)
            d.settle()
        elif outcome == "drop":
            event.connection.close()
        else:
            print("edgehub stand-in: unknown outcome %r" % outcome, file=sys.stderr)
            self.accept(d)


def main():
    args = parse_args()
    if args.port == 0:
        args.port = free_port()
    url = "amqps://127.0.0.1:%d" % args.port
    handler = EdgeHub(args, url)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        Container(handler).run()
    except SystemExit:
        pass


if __name__ == "__main__":
    main()
