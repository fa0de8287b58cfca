#!/usr/bin/env python3
"""An edgeHub stand-in made with Qpid Proton (python-qpid-proton), for the integration tests.

It plays edgeHub's AMQP head as far as a module sees it. The wire contract is
shared/reference/iotedge-amqp.md (cited below as "ref §n"); the Proton specifics are in
shared/reference/auditd-here.md part B.

* TLS on 127.0.0.1 (`--port`, 0 = a free port), server certificate `--cert` (PEM, may be a
  chain) and `--key`. Prints one line `READY <port>` on stdout once listening.
* SASL: Proton's server autodetects the client's protocol header, so both a SASL layer
  (without Cyrus, Proton's server offers only ANONYMOUS: auditd-here.md B.3.1) and no SASL at
  all (the AMQP header straight after TLS, as the C# SDK and our module do) are accepted.
  The connection record says which was used (`sasl`: "ANONYMOUS" or null).
* `$cbs` (ref §3.4): a put-token request (amqp-value string body = SAS token; string
  application properties operation/type/name) is answered on the client's `$cbs` receiver
  link with application properties status-code (int) 200 and status-description "OK",
  correlation-id = the request's message-id (CbsNode.cs). Like edgeHub, the token is NOT
  checked then: it is stored for the connection (the newest one counts). A malformed request
  (no string body, no name, unknown type) gets 400 like edgeHub's BadRequest.
* Link attach on `/devices/{d}/modules/{m}/messages/events` (ref §3.5; the address may be
  absolute, `amqps://host[:port]/devices/...`: edgeHub matches `uri.AbsolutePath`, ids
  url-decoded): the connection's newest token is checked as edgeHub checks it when a link
  opens (ref §5.3: DeviceScopeTokenAuthenticator, SharedAccessSignature): the signature is
  base64(HMAC-SHA256(module key, `sr` exactly as sent + "\\n" + se)) compared with the
  url-decoded `sig`; the url-decoded `sr` must be `{hub}/devices/{d}/modules/{m}` with hub =
  `--hub` or `--gateway` and the ids of the link path; `se` + `--clock-skew-secs` must not be
  in the past. On failure the link is detached with amqp:unauthorized-access and the reason
  as the description (edgeHub: "Unable to open ... link as the connection could not be
  authenticated"). `--module` may name several modules (a comma list; one key for all), e.g.
  the module, the echo and the Node SDK's modules. Other addresses are refused (the stand-in
  serves no methods or C2D) and logged on stderr.
* A module's inputs (docs/edgehub-inputs.md; edgeHub's ModuleMessageLinkHandler): a link on
  the same `/devices/{d}/modules/{m}/messages/events` address with the client a receiver,
  authorised by the token as the events link; the stand-in sends unsettled, receiver settle
  mode first (AtLeastOnce). The newest such link of a module receives.
* Routes (edgeHub's route syntax, no WHERE), added by the control command `{"cmd": "route",
  "route": "FROM <source> INTO <sink>"}` (`{"cmd": "routes", "routes": [...]}` replaces the
  table): source `/*`, `/messages/*`, `/messages/modules/*`, `/messages/modules/<m>/*` (with
  or without an output name), `/messages/modules/<m>/outputs/*` (any output name) or
  `/messages/modules/<m>/outputs/<name>` (the application property `iothub-outputname`);
  sink `$upstream` or `BrokeredEndpoint("/modules/<m>/inputs/<input>")`. Without a route
  table a message goes upstream only (what the stand-in did before it routed). A message the
  stand-in accepts (its `--outcomes`) goes to each matching route's sink once (RoutingEdgeHub);
  for a module sink it is converted as AmqpMessageConverter.FromMessage does: the body in one
  data section, message-id / to / correlation-id / content-type / content-encoding as the
  sender set them, the sender's application properties but `iothub-outputname` (a system
  property in edgeHub), the annotations `x-opt-input-name`, `iothub-connection-device-id`,
  `iothub-connection-module-id`, `x-opt-sequence-number` (ulong, from 1, one per routed
  delivery), `iothub-enqueuedtime` (timestamp), `x-opt-lock-token` (also the delivery tag),
  and NOT `iothub-interface-id`. Each target module gets one message at a time, queued until
  its inputs link has credit (store and forward), the next only after the disposition
  (DeviceMessageHandler.SendMessageAsync holds a per-module lock around each send and its
  feedback wait): Accepted completes it; Rejected, Released, Modified, no answer within 30 s
  (MessageResponseTimeout) or the link going away are not final: ProcessMessageFeedbackAsync
  fails the send with EdgeHubIOException (a timeout with TimeoutException), which
  ModuleEndpoint counts as retryable, so the routing executor sends the same message again
  (same sequence number, a new lock token) before any later one, after a back-off
  (RETRY_SECS here; edgeHub's retry policy until the message's time to live). Each delivery
  is recorded (`routed`) and so is its outcome (`routed-outcome`, with `retry`).
* The module twin (ref §4; edgeHub's TwinReceivingLinkHandler / TwinSendingLinkHandler,
  DeviceMessageHandler, AmqpTwinMessageConverter): a sender and a receiver link on
  `/devices/{d}/modules/{m}/twin`, authorised by the token as the events link ("Unable to open
  Twin link ..." otherwise). edgeHub's side sends settled, receives settle-first (AtMostOnce).
  Requests are read from the `operation` annotation (`resource` is ignored, as edgeHub does)
  and the string of properties.correlation-id. Answers go to the client's twin receiver link
  with the same channel-correlation-id (text after the first ':'): correlation-id (string) +
  annotation `status` (int), one data section: GET 200 + `{"desired":{…,"$version":n},
  "reported":{…,"$version":m}}`; PATCH (reported) merged (null removes a key), reported
  `$version` + 1, 204; PUT 200 (subscribe), DELETE 200 (unsubscribe); all with an empty body
  but GET. A reported patch edgeHub's ReportedPropertiesValidator refuses (names with
  `.$#`/space/control characters, depth > 10, values > 4096 B, ints beyond ±2^52, doc > 32 KiB)
  gets 400 and changes nothing. GET/PUT/DELETE without a correlation id are dropped; a PATCH
  without one is applied but not answered; an unknown operation is not answered. Opening the
  twin receiver link subscribes the connection to desired patches (edgeHub does so in
  TwinSendingLinkHandler.OnOpenAsync). Desired patches go to every subscribed connection:
  no correlation-id, no annotations, body = the patch with `$version`. The twin (initial
  desired: `--twin-desired`, default `{"$version": 1}`; reported `{"$version": 1}`) lives as
  long as the process, across connections. As edgeHub's ClientConnectionHandler, a new twin
  link closes the connection's older one of the same role, and the one of the other role when
  their channel correlation ids (text after the first ':') differ (`link-closed` record).
* `--control FILE` (polled every 50 ms; one JSON command a line, each applied once, in order,
  and recorded as a `control` record with its `id`, `result`, `error` and the `twin` after
  it): `{"cmd": "desired", "patch": {…}, "version": n?, "push": true?}` (merge into the desired,
  `$version` = n or the next one, push unless `push` is false), `{"cmd": "fail", "operation":
  "GET"|"PATCH"|"PUT"|"DELETE"|"*", "status": 429 | null (never answer), "count": 1}` (the
  next `count` such requests; an error reply has an empty body, as edgeHub's), `{"cmd":
  "state"}` (only the record: reads the twin back). Commands already in the file when the
  stand-in starts are applied before it accepts a connection.
* Messages on the events link are settled as `--outcomes` says, one outcome per transfer
  (accept, release, reject, modify, drop), then accept. `reject` carries the error edgeHub
  sends for a too-large message (EventsLinkHandler.HandleException → AmqpExceptionsHelper:
  condition amqp:link:message-size-exceeded, description = the JSON-serialised text).
  `drop` shuts the TCP connection down without settling (no AMQP close). When a transfer
  arrives after the connection's newest token has expired (or is otherwise bad), the
  connection is closed with amqp:unauthorized-access, so a client that does not renew its
  token is caught.
* Everything seen goes to `--record` as JSON lines, one flush per line (never the token or
  its signature). Kinds: connection, put-token, cbs-reply, attach, detach, message, closed,
  disconnect, twin-request, twin-reply, twin-desired, link-closed, control, routed,
  routed-outcome; the keys of each are listed in
  tests/support/standin.rs.
* SIGTERM: exits 0 promptly (SystemExit from the handler, auditd-here.md B.3.5).

Anything unexpected is written to stderr with the prefix "edgehub stand-in:"; an exception in
a handler ends the process with a traceback (the harness then sees it die).
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

import proton
from proton import Condition, Data, Delivery, Link, Message, SSL, int32, symbol
from proton.handlers import IncomingMessageHandler, MessagingHandler
from proton.reactor import Container

# Section descriptors of an AMQP 1.0 message (AMQP 1.0 part 3.2).
SECTIONS = {
    0x70: "header",
    0x71: "delivery-annotations",
    0x72: "message-annotations",
    0x73: "properties",
    0x74: "application-properties",
    0x75: "data",
    0x76: "amqp-sequence",
    0x77: "amqp-value",
    0x78: "footer",
}
BODY_KIND = {"data": "data", "amqp-sequence": "sequence", "amqp-value": "value"}

# CbsConstants.SupportedTokenTypes (Azure/azure-amqp 2.6.9), ref §3.4.
TOKEN_TYPES = ("azure-devices.net:sastoken", "servicebus.windows.net:sastoken")

OUTCOMES = ("accept", "release", "reject", "modify", "drop")


def warn(text):
    print("edgehub stand-in: " + text, file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--cert", required=True, help="server certificate (PEM chain)")
    p.add_argument("--key", required=True, help="server private key (PEM)")
    p.add_argument("--key-base64", "--module-key-base64", dest="key_base64", required=True,
                   help="the module's SAS key, base64")
    p.add_argument("--hub", required=True, help="IoT Hub host name an audience may name")
    p.add_argument("--gateway", default="localhost",
                   help="edge host name an audience may name (edgeHub's EdgeDeviceHostName)")
    p.add_argument("--device", help="serve only this device id (default: any)")
    p.add_argument("--module", help="serve only these module ids, a comma list (default: any)")
    p.add_argument("--outcomes", default="", help="comma list of " + ",".join(OUTCOMES))
    p.add_argument("--clock-skew-secs", type=int, default=0,
                   help="a token is expired when se + this < now")
    p.add_argument("--record", required=True, help="JSON-lines file to append to")
    p.add_argument("--twin-desired", default="{}",
                   help="the module twin's initial desired properties, JSON (\"$version\" "
                        "optional, default 1)")
    p.add_argument("--control", help="JSON-lines file of test commands, polled (see the doc)")
    args = p.parse_args()
    args.outcomes = [o.strip() for o in args.outcomes.split(",") if o.strip()]
    args.modules = [m.strip() for m in (args.module or "").split(",") if m.strip()]
    for o in args.outcomes:
        if o not in OUTCOMES:
            p.error("unknown outcome %r (known: %s)" % (o, ", ".join(OUTCOMES)))
    try:
        args.twin_desired = json.loads(args.twin_desired)
    except ValueError as e:
        p.error("--twin-desired is not JSON: %s" % e)
    if not isinstance(args.twin_desired, dict):
        p.error("--twin-desired is not a JSON object")
    return args


# ------------------------------------------------------------------ AMQP values as JSON


def type_name(v):
    """The AMQP type of a value as Proton decoded it."""
    if v is None:
        return "null"
    if isinstance(v, symbol):
        return "symbol"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, uuid.UUID):
        return "uuid"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "binary"
    if isinstance(v, dict):
        return "map"
    if isinstance(v, (list, tuple)):
        return "list"
    if type(v) is int:
        return "long"  # Proton decodes AMQP long as a plain int
    if type(v) is float:
        return "double"
    return type(v).__name__  # int32, ulong, uint, ubyte, timestamp, char, float32 ...


def plain(v):
    """A JSON-friendly rendering of a value (binary as UTF-8 text, lossy)."""
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
    """{key: {"key_type", "value", "value_type"}} for an AMQP map (annotations, properties)."""
    return {
        str(k): {"key_type": type_name(k), "value": plain(v), "value_type": type_name(v)}
        for k, v in (m or {}).items()
    }


def none_if_absent(v):
    # Proton returns symbol('None') for an absent content-type/encoding (auditd-here.md B.3.3).
    return None if v is None or str(v) in ("None", "") else str(v)


def sections_of(raw):
    """The section names of an encoded message, in wire order."""
    out = []
    data = Data()
    rest = memoryview(raw)
    while len(rest):
        data.clear()
        n = data.decode(bytes(rest))
        if n <= 0:
            raise ValueError("undecodable message bytes")
        rest = rest[n:]
        data.rewind()
        data.next()
        if data.type() != Data.DESCRIBED:
            raise ValueError("a message section that is not a described type")
        data.enter()
        data.next()
        d = data.get_object()
        name = SECTIONS.get(int(d)) if isinstance(d, int) else None
        if name is None:
            raise ValueError("unknown section descriptor %r" % (d,))
        out.append(name)
    return out


def describe(msg, raw):
    """The record fields of a message as it came (see tests/support/standin.rs)."""
    sections = sections_of(raw)
    body_sections = [BODY_KIND[x] for x in sections if x in BODY_KIND]
    body = msg.body
    if body_sections == ["data"] and isinstance(body, (bytes, memoryview)):
        body_text = bytes(body).decode("utf-8", "replace")
    else:
        body_text = plain(body)
    props = {
        "message_id": plain(msg.id),
        "user_id": plain(msg.user_id) or None,
        "to": msg.address,
        "subject": msg.subject,
        "reply_to": msg.reply_to,
        "correlation_id": plain(msg.correlation_id),
        "content_type": none_if_absent(msg.content_type),
        "content_encoding": none_if_absent(msg.content_encoding),
        "absolute_expiry_time": msg.expiry_time or None,
        "creation_time": msg.creation_time or None,
        "group_id": msg.group_id,
    }
    return dict(
        sections=sections,
        message_id=props["message_id"],
        message_id_type=type_name(msg.id),
        correlation_id=props["correlation_id"],
        correlation_id_type=type_name(msg.correlation_id),
        to=props["to"],
        content_type=props["content_type"],
        content_encoding=props["content_encoding"],
        message_properties={k: v for k, v in props.items() if v is not None},
        header={"durable": msg.durable, "priority": msg.priority, "ttl": msg.ttl,
                "first_acquirer": msg.first_acquirer,
                "delivery_count": msg.delivery_count} if "header" in sections else None,
        annotations=typed_map(msg.annotations),
        delivery_annotations=typed_map(msg.instructions),
        application_properties={str(k): plain(v) for k, v in (msg.properties or {}).items()},
        application_property_types={
            str(k): {"key_type": type_name(k), "value_type": type_name(v)}
            for k, v in (msg.properties or {}).items()
        },
        body_sections=",".join(body_sections),
        body_section=body_sections[0] if len(body_sections) == 1 else ",".join(body_sections),
        body=body_text,
        size=len(raw),
    )


# ------------------------------------------------------------------ SAS tokens


def parse_token(token, key):
    """What the token says and whether its signature holds; never returns the token."""
    out = {"audience": None, "expiry": None, "error": None, "ids": None, "host": None}
    if not isinstance(token, str) or not token.startswith("SharedAccessSignature "):
        out["error"] = "not a SharedAccessSignature token"
        return out
    fields = {}
    for part in token[len("SharedAccessSignature "):].split("&"):
        k, _, v = part.partition("=")
        fields[k] = v
    sr, sig, se = fields.get("sr"), fields.get("sig"), fields.get("se")
    if not (sr and sig and se):
        out["error"] = "the token lacks sr, sig or se"
        return out
    try:
        out["expiry"] = int(se)
    except ValueError:
        out["error"] = "se is not a number"
        return out
    out["audience"] = urllib.parse.unquote(sr)
    # SharedAccessSignature.ComputeSignature: over `sr` exactly as sent (ref §5.3).
    expected = base64.b64encode(
        hmac.new(key, (sr + "\n" + se).encode(), hashlib.sha256).digest()
    ).decode()
    if not hmac.compare_digest(urllib.parse.unquote(sig).encode(), expected.encode()):
        out["error"] = "signature does not match the module key"
        return out
    # {host}/devices/{d}/modules/{m} (the C# SDK encodes the ids twice: decode them again).
    parts = out["audience"].split("/")
    if len(parts) != 5 or parts[1] != "devices" or parts[3] != "modules":
        out["error"] = "audience %s is not {host}/devices/{d}/modules/{m}" % out["audience"]
        return out
    out["host"] = parts[0]
    out["ids"] = (urllib.parse.unquote(parts[2]), urllib.parse.unquote(parts[4]))
    return out



# ------------------------------------------------------------------ the module twin

TWIN_RESOURCE_DESIRED = "/notifications/twin/properties/desired"
TWIN_RESOURCE_REPORTED = "/properties/reported"
TWIN_OPERATIONS = ("GET", "PATCH", "PUT", "DELETE")
# ReportedPropertiesValidator.cs (Edge.Hub.Core/twin), "taken from IoTHub".
REPORTED_MAX_DEPTH = 10
REPORTED_VALUE_MAX = 4096
REPORTED_NAME_MAX = 1024
REPORTED_INT_RANGE = (-(2 ** 52), 2 ** 52 - 1)
REPORTED_DOC_MAX = 32 * 1024


def merge_patch(doc, patch):
    """A twin patch applied to `doc` in place: objects merge, null removes, others replace."""
    for k, v in patch.items():
        if v is None:
            doc.pop(k, None)
        elif isinstance(v, dict):
            cur = doc.get(k)
            if not isinstance(cur, dict):
                cur = doc[k] = {}
            merge_patch(cur, v)
        else:
            doc[k] = v


def reported_error(patch, text):
    """Why edgeHub would refuse a reported-properties patch (-> 400), or None."""
    if not isinstance(patch, dict):
        return "the reported properties are not a JSON object"
    if len(text.encode("utf-8")) > REPORTED_DOC_MAX:
        return "Twin properties size %d exceeds maximum %d" % (len(text.encode()), REPORTED_DOC_MAX)

    def name_error(name):
        if len(name.encode("utf-8")) > REPORTED_NAME_MAX:
            return "Length of property name %s.. exceeds maximum length" % name[:10]
        for ch in name:
            if ch in ".$#" or ch.isspace() or ord(ch) < 32 or 127 <= ord(ch) < 160:
                return "Property name %s contains invalid character %r" % (name, ch)
        return None

    def check(name, v, depth, in_array):
        e = name_error(name)
        if e:
            return e
        if isinstance(v, dict):
            if depth > REPORTED_MAX_DEPTH:
                return "Nested depth of twin property exceeds %d" % REPORTED_MAX_DEPTH
            for k, x in v.items():
                e = check(k, x, depth + 1, in_array)
                if e:
                    return e
        elif isinstance(v, list):
            if depth > REPORTED_MAX_DEPTH:
                return "Nested depth of twin property exceeds %d" % REPORTED_MAX_DEPTH
            for x in v:
                if x is None:
                    return "Arrays cannot contain 'null' as value"
                e = check("", x, depth + 1, True)
                if e:
                    return e
        elif v is None:
            if in_array:
                return "Property %s of an object in an array cannot be 'null'" % name
        elif isinstance(v, bool):
            pass
        elif isinstance(v, int):
            if not REPORTED_INT_RANGE[0] <= v <= REPORTED_INT_RANGE[1]:
                return "Property %s has an out of bound value" % name
        elif len(str(v).encode("utf-8")) > REPORTED_VALUE_MAX:
            return "Value associated with property name %s exceeds maximum length" % name
        return None

    return check("", patch, 0, False)


# ------------------------------------------------------------------ routes

# The application property a module names its output with (the SDKs' sendOutputEvent);
# edgeHub's AmqpMessageConverter.ToMessage takes it into the system property OutputName,
# which is not handed on to a module.
OUTPUT_NAME_KEY = "iothub-outputname"
# DeviceMessageHandler.messageAckTimeout (edgeHub's MessageAckTimeout, 30 s by default).
FEEDBACK_TIMEOUT_SECS = 30.0
# The back-off before a message whose send failed (not Accepted) is sent again; edgeHub's
# endpoint executor uses its retry policy (exponential, until the time to live).
RETRY_SECS = 1.0


def parse_route(text):
    """A route as edgeHub's route syntax writes one, as far as the stand-in routes:
    `FROM <source> INTO <sink>`; source `/*`, `/messages/*`, `/messages/modules/*`,
    `/messages/modules/<m>/*`, `/messages/modules/<m>/outputs/*` or
    `/messages/modules/<m>/outputs/<name>`; sink `$upstream` or
    `BrokeredEndpoint("/modules/<m>/inputs/<input>")`. No WHERE (ValueError, as anything
    else it cannot route)."""
    if not isinstance(text, str):
        raise ValueError("a route is a string, not %r" % (text,))
    words = text.split()
    if len(words) < 4 or words[0].upper() != "FROM" or words[2].upper() != "INTO":
        raise ValueError("route %r is not FROM <source> INTO <sink> (no WHERE here)" % text)
    source, sink_text = words[1], " ".join(words[3:])
    parts = source.split("/")
    if source in ("/*", "/messages/*", "/messages/modules/*"):
        module, output = None, None  # any module, with or without an output
    elif len(parts) == 5 and parts[:3] == ["", "messages", "modules"] and parts[4] == "*":
        module, output = parts[3], None
    elif len(parts) == 6 and parts[:3] == ["", "messages", "modules"] and parts[4] == "outputs":
        module, output = parts[3], parts[5]  # "*": any output name
    else:
        raise ValueError("route %r: source %r is not one the stand-in routes" % (text, source))
    if sink_text == "$upstream":
        sink = ("upstream",)
    else:
        inner = sink_text[len('BrokeredEndpoint("'):-len('")')] \
            if sink_text.startswith('BrokeredEndpoint("') and sink_text.endswith('")') else ""
        p = inner.split("/")
        if len(p) != 5 or p[:2] != ["", "modules"] or p[3] != "inputs" or not p[2] or not p[4]:
            raise ValueError("route %r: sink %r is neither $upstream nor "
                             "BrokeredEndpoint(\"/modules/<m>/inputs/<input>\")" % (text, sink_text))
        sink = ("module", p[2], p[4])
    return {"text": text, "module": module, "output": output, "sink": sink}


def route_matches(route, module, output):
    """Whether a message from `module` sent to `output` (None: no output name) is taken."""
    if route["module"] is not None and route["module"] != module:
        return False
    if route["output"] is None:
        return True
    if output is None:
        return False
    return route["output"] in ("*", output)


# ------------------------------------------------------------------ the stand-in


class EdgeHub(MessagingHandler):
    def __init__(self, args):
        super().__init__(prefetch=100, auto_accept=False, auto_settle=True)
        # Transfers are read in on_delivery below (raw bytes, to see the sections as sent),
        # so Proton's IncomingMessageHandler must not read them too.
        self.handlers = [h for h in self.handlers if not isinstance(h, IncomingMessageHandler)]
        self.args = args
        self.key = base64.b64decode(args.key_base64)
        self.outcomes = list(args.outcomes)
        self.record_file = open(args.record, "a", encoding="utf-8")
        self.conns = {}  # Connection -> state
        self.refusals = {}  # Link -> (condition, reason), detached once open
        self.refused_links = set()  # names of refused links, per connection id
        self.next_conn = 0
        self.port = None
        # The module twin (one identity is served): as IoT Hub keeps it, across connections.
        self.desired = dict(args.twin_desired)
        self.desired.setdefault("$version", 1)
        self.reported = {"$version": 1}
        self.twin_failures = []  # [{"operation", "status" (None: never answer), "count"}]
        self.control_offset = 0
        # Routing (see the doc): the route table, the modules' inputs links (module -> the
        # newest link), what waits for each module (in order) and the one in flight.
        self.routes = []
        self.inputs = {}
        self.pending = {}  # module -> [routed message dicts]
        self.retrying = set()  # modules whose failed message waits out RETRY_SECS
        self.in_flight = {}  # module -> {"dlv", "item"}
        self.sequence = 0  # x-opt-sequence-number: edgeHub's store numbers messages from 1

    # -------------------------------------------------------------- plumbing

    def record(self, **fields):
        fields["time"] = time.time()
        self.record_file.write(json.dumps(fields, sort_keys=True) + "\n")
        self.record_file.flush()

    def state(self, connection):
        s = self.conns.get(connection)
        if s is None:
            self.next_conn += 1
            s = {"id": self.next_conn, "token": None, "cbs_senders": [], "client_closed": None,
                 "twin_senders": [], "twin_receivers": [], "twin_subscribed": False}
            self.conns[connection] = s
        return s

    def on_start(self, event):
        self.container = event.container
        event.container.ssl.server.set_credentials(self.args.cert, self.args.key, None)
        acceptor = event.container.listen("amqps://127.0.0.1:%d" % self.args.port)
        self.port = acceptor._selectable._delegate.getsockname()[1]
        if self.args.control:
            # Commands already in the file apply now, before any client can connect (the
            # reactor accepts only once on_start returns): a test can start the stand-in with
            # the twin failing from the first request.
            self.poll_control()
            event.container.schedule(0.05, ControlPoller(self))
        print("READY %d" % self.port, flush=True)

    def on_connection_opening(self, event):
        # The client's Open (before ours, so this record precedes the links' records).
        c = event.connection
        t = event.transport
        s = self.state(c)
        sasl = t.sasl()  # the existing layer, or an unused one when the client skipped SASL
        tls = t._ssl
        idle = t.remote_idle_timeout  # seconds; 0 when absent or 0 (indistinguishable)
        self.record(
            kind="connection",
            conn=s["id"],
            sasl=sasl.mech or None,
            sasl_outcome=sasl.outcome,
            tls_protocol=tls.protocol_name() if tls else None,
            hostname=c.remote_hostname,
            container_id=c.remote_container,
            idle_timeout_ms=int(round(idle * 1000)) if idle else None,
            max_frame_size=t.remote_max_frame_size,
            channel_max=t.remote_channel_max,
            properties=typed_map(c.remote_properties),
            offered_capabilities=plain(c.remote_offered_capabilities),
            desired_capabilities=plain(c.remote_desired_capabilities),
        )

    def on_connection_remote_close(self, event):
        s = self.conns.get(event.connection)
        if s is not None:
            cond = event.connection.remote_condition
            s["client_closed"] = {"condition": cond.name, "description": cond.description} \
                if cond else {}

    def on_connection_error(self, event):
        pass  # recorded in disconnect

    def on_transport_error(self, event):
        cond = event.transport.condition
        if cond and cond.name != "amqp:connection:framing-error":
            warn("transport error %s: %s" % (cond.name, cond.description))

    def on_transport_closed(self, event):
        c = event.connection
        for module, link in list(self.inputs.items()):
            if link.connection == c:
                self.forget_inputs_link(link)
        s = self.conns.pop(c, None)
        if s is None:
            cond = event.transport.condition
            warn("a client went away before its AMQP open%s" % (
                ": %s %s" % (cond.name, cond.description) if cond else ""))
            return
        cond = event.transport.condition
        self.record(
            kind="disconnect",
            conn=s["id"],
            client_closed=s["client_closed"] is not None,
            client_condition=(s["client_closed"] or {}).get("condition"),
            client_description=(s["client_closed"] or {}).get("description"),
            transport_condition=cond.name if cond else None,
        )

    # -------------------------------------------------------------- links

    @staticmethod
    def address_of(link):
        """The node the client names: its target when it sends, its source when it receives."""
        term = link.remote_target if link.is_receiver else link.remote_source
        return term.address

    @staticmethod
    def path_of(address):
        """edgeHub matches `uri.AbsolutePath` (ref §3.5): strip amqps://host[:port]."""
        if not address:
            return ""
        if "://" in address:
            return urllib.parse.urlparse(address).path
        return address

    def module_node(self, address):
        """(device, module, "events"|"twin") for a module's events or twin node, else None."""
        parts = self.path_of(address).split("/")
        if (len(parts) >= 6 and parts[0] == "" and parts[1] == "devices"
                and parts[3] == "modules"):
            node = {("messages", "events"): "events", ("twin",): "twin"}.get(tuple(parts[5:]))
            if node:
                return urllib.parse.unquote(parts[2]), urllib.parse.unquote(parts[4]), node
        return None

    def on_link_opening(self, event):
        link = event.link
        s = self.state(link.connection)
        address = self.address_of(link)
        path = self.path_of(address)
        refused = None
        node = self.module_node(address)
        if path in ("$cbs", "/$cbs"):
            if link.is_sender:
                s["cbs_senders"].append(link)
        elif link.is_receiver and node is None:
            refused = ("amqp:not-found", "the stand-in serves no node %s" % address)
            warn("refused a sender link to an unknown node %r" % address)
        elif link.is_sender and node is None:
            refused = ("amqp:not-implemented", "the stand-in serves no receiver links but $cbs, "
                       "the module twin and a module's inputs (asked for %s)" % address)
            warn("refused a receiver link from %r" % address)
        else:
            ids = node[:2]
            if (self.args.device and ids[0] != self.args.device) or (
                    self.args.modules and ids[1] not in self.args.modules):
                refused = ("amqp:unauthorized-access",
                           "identity %s/%s is not served by this edgeHub" % ids)
                warn("refused a link for %s/%s" % ids)
            else:
                reason = self.check_token(s["token"], ids)
                if reason:
                    refused = ("amqp:unauthorized-access",
                               "Unable to open %s link as the connection could not be "
                               "authenticated: %s" % (
                                   "Twin" if node[2] == "twin"
                                   else "ModuleMessages" if link.is_sender else "Events",
                                   reason))
        self.record(
            kind="attach",
            conn=s["id"],
            role="sender" if link.is_receiver else "receiver",  # the client's role
            name=link.name,
            address=address,
            source=link.remote_source.address,
            target=link.remote_target.address,
            properties=typed_map(link.remote_properties),
            snd_settle_mode=None if link.remote_snd_settle_mode is None
            else int(link.remote_snd_settle_mode),
            rcv_settle_mode=None if link.remote_rcv_settle_mode is None
            else int(link.remote_rcv_settle_mode),
            max_message_size=link.remote_max_message_size,
            refused=refused[1] if refused else None,
        )
        if refused:
            # edgeHub answers the attach, then detaches with the error. Proton sends the detach
            # only once the link is open on both sides (on_link_opened).
            self.refusals[link] = refused
            self.refused_links.add((s["id"], link.name))
            return
        # Echo the client's termini, as edgeHub does.
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        if node is not None and node[2] == "twin":
            self.register_twin_link(s, link)
            # Twin{Sending,Receiving}LinkHandler: QualityOfService.AtMostOnce, i.e. edgeHub
            # sends settled and receives with settle mode first.
            if link.is_sender:
                link.snd_settle_mode = Link.SND_SETTLED
                s["twin_senders"].append(link)
                # TwinSendingLinkHandler.OnOpenAsync subscribes the client to desired
                # property updates as soon as its twin receiver link opens.
                s["twin_subscribed"] = True
            else:
                link.rcv_settle_mode = Link.RCV_FIRST
        elif link.is_sender and node is not None:
            # The module's inputs (ModuleMessageLinkHandler, AtLeastOnce): edgeHub sends
            # unsettled, the module settles first with its disposition.
            link.snd_settle_mode = Link.SND_UNSETTLED
            link.rcv_settle_mode = Link.RCV_FIRST
            self.inputs[node[1]] = link  # the newest inputs link of the module receives

    def on_link_opened(self, event):
        refused = self.refusals.pop(event.link, None)
        if refused:
            event.link.condition = Condition(*refused)
            event.link.close()
            return
        self.on_sendable(event)

    def on_link_flow(self, event):
        # Credit may come before the link is open on our side (then Proton's on_sendable
        # does not fire): try again at every flow.
        self.on_sendable(event)

    def on_link_remote_close(self, event):
        link = event.link
        s = self.conns.get(link.connection)
        if s is not None:
            cond = link.remote_condition
            self.record(
                kind="detach",
                conn=s["id"],
                name=link.name,
                address=self.address_of(link),
                condition=cond.name if cond else None,
                description=cond.description if cond else None,
            )
            if link in s["cbs_senders"]:
                s["cbs_senders"].remove(link)
            for key in ("twin_senders", "twin_receivers"):
                if link in s[key]:
                    s[key].remove(link)
            self.forget_inputs_link(link)

    def on_link_error(self, event):
        pass  # recorded as detach

    # -------------------------------------------------------------- tokens

    def check_token(self, tok, ids):
        """None when the token lets `ids` open a link, else the reason (ref §5.3)."""
        if tok is None:
            return "no token was put on this connection"
        if tok["error"]:
            return tok["error"]
        if tok["host"] not in (self.args.hub, self.args.gateway):
            return "audience %s names neither the hub %s nor the gateway %s" % (
                tok["audience"], self.args.hub, self.args.gateway)
        if ids is not None and tok["ids"] != tuple(ids):
            return "audience %s is not for %s/%s" % (tok["audience"], ids[0], ids[1])
        if tok["expiry"] + self.args.clock_skew_secs < time.time():
            return "token expired at %d" % tok["expiry"]
        return None

    def put_token(self, event, msg):
        s = self.state(event.connection)
        ap = msg.properties or {}
        status, description = 200, "OK"
        token = None
        if not isinstance(msg.body, str):
            status, description = 400, "the put-token body is not an amqp-value string"
        elif not ap.get("name"):
            status, description = 400, "the put-token request has no name"
        elif ap.get("type") not in TOKEN_TYPES:
            status, description = 400, "unsupported token type %r" % (ap.get("type"),)
        else:
            token = parse_token(msg.body, self.key)
            s["token"] = token
        if status != 200:
            warn("put-token answered %d: %s" % (status, description))
        reason = self.check_token(token, token and token["ids"]) if token else description
        self.record(
            kind="put-token",
            conn=s["id"],
            operation=plain(ap.get("operation")),
            type=plain(ap.get("type")),
            name=plain(ap.get("name")),
            expiration=plain(ap.get("expiration")),
            app_property_types={str(k): type_name(v) for k, v in ap.items()},
            body_type=type_name(msg.body),
            audience=token and token["audience"],
            expiry=token and token["expiry"],
            token_valid=reason is None,
            reason=reason,
            status=status,
            message_id=plain(msg.id),
            message_id_type=type_name(msg.id),
            reply_to=msg.reply_to,
            link=event.link.name,
        )
        # CbsNode.cs: correlation-id = the request's message-id; the reply goes out on the
        # client's $cbs receiver (the one whose target/source matches reply-to if several).
        reply = Message(
            correlation_id=msg.id,
            properties={"status-code": int32(status), "status-description": description},
        )
        target = None
        for link in s["cbs_senders"]:
            if msg.reply_to and msg.reply_to in (link.remote_source.address,
                                                 link.remote_target.address):
                target = link
        if target is None and s["cbs_senders"]:
            target = s["cbs_senders"][0]
        if target is None:
            warn("put-token with no $cbs receiver link to reply on")
            return
        # (rhea grants the credit only after the attach: the reply may wait for it here.)
        target.send(reply)
        self.record(kind="cbs-reply", conn=s["id"], link=target.name,
                    correlation_id=plain(msg.id), status=status)

    # -------------------------------------------------------------- messages

    def on_delivery(self, event):
        dlv = event.delivery
        link = dlv.link
        if not link.is_receiver:
            return  # our CBS replies and routed messages: see on_accepted and the others
        if dlv.aborted:
            warn("a client aborted a transfer")
            dlv.settle()
            return
        if not dlv.readable or dlv.partial:
            return
        raw = link.recv(dlv.pending)
        link.advance()
        msg = Message()
        msg.decode(raw)
        self.on_transfer(event, dlv, msg, raw)

    def on_transfer(self, event, dlv, msg, raw):
        link = dlv.link
        s = self.state(link.connection)
        path = self.path_of(self.address_of(link))
        if path in ("$cbs", "/$cbs"):
            dlv.update(Delivery.ACCEPTED)
            dlv.settle()
            op = (msg.properties or {}).get("operation")
            if op == "put-token":
                self.put_token(event, msg)
            else:
                warn("unknown $cbs operation %r" % (op,))
            return
        if (s["id"], link.name) in self.refused_links:
            # A client may send before it sees the detach; edgeHub never takes these.
            warn("a transfer on the refused link %r (left unsettled)" % link.name)
            self.record(kind="ignored", conn=s["id"], link=link.name,
                        reason="transfer on a refused link")
            return
        node = self.module_node(self.address_of(link))
        bad = self.check_token(s["token"], node and node[:2])
        if bad:
            # The token ran out (or was replaced by a bad one) while the link was open.
            self.record(kind="closed", conn=s["id"], reason=bad)
            event.connection.condition = Condition("amqp:unauthorized-access", bad)
            event.connection.close()
            return
        if node is not None and node[2] == "twin":
            self.twin_request(s, dlv, msg, raw)
            return
        outcome = self.outcomes.pop(0) if self.outcomes else "accept"
        output = (msg.properties or {}).get(OUTPUT_NAME_KEY)
        output = output if isinstance(output, str) else None
        sinks = self.sinks_for(node[1] if node else None, output)
        fields = describe(msg, raw)
        self.record(
            kind="message",
            conn=s["id"],
            link=link.name,
            address=self.address_of(link),
            settled_by_client=dlv.settled,
            outcome=outcome,
            output_name=output,
            routes=[x["text"] for x in sinks] if self.routes else None,
            **fields,
        )
        if outcome == "accept":
            dlv.update(Delivery.ACCEPTED)
            dlv.settle()
            # Taken (stored) by edgeHub: each route's endpoint gets it (RoutingEdgeHub).
            for r in sinks:
                if r["sink"][0] == "module":
                    self.enqueue(r, node, msg, fields)
        elif outcome == "release":
            dlv.update(Delivery.RELEASED)
            dlv.settle()
        elif outcome == "modify":
            dlv.local.failed = True
            dlv.update(Delivery.MODIFIED)
            dlv.settle()
        elif outcome == "reject":
            # edgeHub's Rejected{Error}: description = JsonConvert.SerializeObject(message).
            dlv.local.condition = Condition(
                "amqp:link:message-size-exceeded",
                json.dumps("Message size exceeds the limit (stand-in rejection)"),
            )
            dlv.update(Delivery.REJECTED)
            dlv.settle()
        elif outcome == "drop":
            # Cut the TCP connection: no disposition, no AMQP close.
            sel = getattr(event.transport, "_selectable", None)
            if sel is not None and getattr(sel, "_delegate", None) is not None:
                try:
                    sel._delegate.shutdown(socket.SHUT_RDWR)
                except OSError as e:
                    warn("drop: shutdown failed: %s" % e)
            else:
                warn("drop: no socket to shut down")
            event.transport.close_tail()
            event.transport.close_head()

    # -------------------------------------------------------------- routing to modules

    def sinks_for(self, module, output):
        """The routes that take a message from `module` to `output`, one per sink; with no
        route table, everything goes upstream (what the stand-in did before routing)."""
        out, seen = [], set()
        for r in self.routes:
            if route_matches(r, module, output) and r["sink"] not in seen:
                seen.add(r["sink"])
                out.append(r)
        return out

    def enqueue(self, route, node, msg, fields):
        """A message for a module's input, converted as AmqpMessageConverter.FromMessage
        hands it to a module; queued until the module's inputs link can take it."""
        _, target, input_name = route["sink"]
        self.sequence += 1
        props = {k: v for k, v in (msg.properties or {}).items() if k != OUTPUT_NAME_KEY}
        item = {
            "route": route["text"],
            "module": target,
            "input": input_name,
            "from_device": node[0],
            "from_module": node[1],
            "sequence": self.sequence,
            "enqueued_ms": int(time.time() * 1000),
            "lock_token": str(uuid.uuid4()),
            "message_id": msg.id,
            "correlation_id": msg.correlation_id,
            "to": msg.address,
            "content_type": none_if_absent(msg.content_type),
            "content_encoding": none_if_absent(msg.content_encoding),
            "properties": props,
            "body": bytes(msg.body) if isinstance(msg.body, (bytes, memoryview))
            else str(msg.body).encode(),
            "source_message_id": fields["message_id"],
        }
        self.pending.setdefault(target, []).append(item)
        self.pump(target)

    def pump(self, module):
        """Send the module its next message: one at a time, the next only after the
        disposition (or the 30 s feedback timeout) of the one before."""
        if module in self.in_flight or module in self.retrying or not self.pending.get(module):
            return
        link = self.inputs.get(module)
        if link is None or link.credit <= 0 or not (link.state & proton.Endpoint.LOCAL_ACTIVE):
            return
        item = self.pending[module].pop(0)
        # A new lock token for every send, retries too (SendMessageAsync's Guid.NewGuid()).
        item["lock_token"] = str(uuid.uuid4())
        ann = {
            symbol("x-opt-input-name"): item["input"],
            symbol("iothub-connection-device-id"): item["from_device"],
            symbol("iothub-connection-module-id"): item["from_module"],
            symbol("x-opt-sequence-number"): proton.ulong(item["sequence"]),
            symbol("iothub-enqueuedtime"): proton.timestamp(item["enqueued_ms"]),
            symbol("x-opt-lock-token"): item["lock_token"],
        }
        # FromMessage: the body in one data section; message-id, to, correlation-id,
        # content-type/-encoding only when the sender set them; the sender's properties.
        m = Message(body=item["body"], inferred=True, annotations=ann,
                    properties=item["properties"] or None)
        for attr, key in (("id", "message_id"), ("correlation_id", "correlation_id"),
                          ("address", "to"), ("content_type", "content_type"),
                          ("content_encoding", "content_encoding")):
            if item[key] is not None:
                setattr(m, attr, item[key])
        raw = m.encode()
        # Tagged with the lock token (FromMessage's DeliveryTag is the lock token's GUID).
        dlv = link.send(m, tag=item["lock_token"])
        self.in_flight[module] = {"tag": dlv.tag, "link": link.name, "item": item}
        s = self.conns.get(link.connection) or {"id": None}
        self.record(
            kind="routed",
            conn=s["id"],
            link=link.name,
            route=item["route"],
            module=module,
            input=item["input"],
            sequence=item["sequence"],
            lock_token=item["lock_token"],
            from_device=item["from_device"],
            from_module=item["from_module"],
            **describe(m, raw),
        )
        self.container.schedule(FEEDBACK_TIMEOUT_SECS,
                                FeedbackTimeout(self, module, item["lock_token"]))

    def settled_routed(self, dlv, outcome, settled_by_client=None):
        """The module's disposition of a routed message: Accepted completes it; anything
        else fails the send and the same message is sent again (see the module docstring)."""
        for module, f in list(self.in_flight.items()):
            if f["tag"] == dlv.tag and f["link"] == dlv.link.name:
                s = self.conns.get(dlv.link.connection) or {"id": None}
                dlv.settle()
                self.routed_done(module, outcome, s["id"], settled_by_client)
                return True
        return False

    def routed_done(self, module, outcome, conn, settled_by_client):
        """The end of one send of `module`'s message in flight: recorded; Accepted takes the
        next, any other outcome puts the message back first in line for a retry."""
        f = self.in_flight.pop(module)
        item = f["item"]
        retry = outcome != "accepted"
        self.record(kind="routed-outcome", conn=conn, module=module,
                    input=item["input"], sequence=item["sequence"],
                    message_id=plain(item["message_id"]), outcome=outcome,
                    settled_by_client=settled_by_client, retry=retry)
        if retry:
            self.pending.setdefault(module, []).insert(0, item)
            self.retrying.add(module)
            self.container.schedule(RETRY_SECS, RetryTimer(self, module))
        else:
            self.pump(module)

    def on_accepted(self, event):
        self.settled_routed(event.delivery, "accepted", event.delivery.settled)

    def on_rejected(self, event):
        self.settled_routed(event.delivery, "rejected", event.delivery.settled)

    def on_released(self, event):
        self.settled_routed(event.delivery,
                            "modified" if event.delivery.remote_state == Delivery.MODIFIED
                            else "released", event.delivery.settled)

    def on_settled(self, event):
        # Settled by the module without an outcome (after the three above: already done).
        self.settled_routed(event.delivery, "settled-without-outcome", True)

    def on_sendable(self, event):
        for module, link in list(self.inputs.items()):
            if link == event.link:  # Proton wraps anew: compare, not identity
                self.pump(module)

    def forget_inputs_link(self, link):
        """An inputs link went away: its module's message in flight failed (edgeHub's
        feedback never comes) and waits, first in line, for a new link."""
        for module, x in list(self.inputs.items()):
            if x == link:
                del self.inputs[module]
                if module in self.in_flight:
                    self.routed_done(module, "link-gone", None, None)

    # -------------------------------------------------------------- the module twin

    @staticmethod
    def channel_id(link):
        """The text after the first ':' of com.microsoft:channel-correlation-id (edgeHub's
        AmqpConnectionUtils.GetCorrelationId), or None."""
        v = (link.remote_properties or {}).get(symbol("com.microsoft:channel-correlation-id"))
        return str(v).split(":", 1)[-1] if v is not None else None

    def register_twin_link(self, s, link):
        """ClientConnectionHandler.RegisterLinkHandler: one link of each type a connection; a
        new one closes the old one of its type, and the twin link of the other type when
        their channel correlation ids differ."""
        same, other = ("twin_senders", "twin_receivers") if link.is_sender \
            else ("twin_receivers", "twin_senders")
        closing = [(x, "a newer twin link of the same type") for x in s[same]]
        closing += [(x, "the new twin link's channel correlation id differs")
                    for x in s[other] if self.channel_id(x) != self.channel_id(link)]
        for x, reason in closing:
            self.record(kind="link-closed", conn=s["id"], name=x.name, reason=reason)
            for key in ("twin_senders", "twin_receivers"):
                if x in s[key]:
                    s[key].remove(x)
            x.close()
        if link.is_receiver:
            s["twin_receivers"].append(link)

    def twin_state(self):
        return {"desired": self.desired, "reported": self.reported}

    def take_failure(self, op):
        for f in self.twin_failures:
            if f["operation"] in (op, "*") and f["count"] > 0:
                f["count"] -= 1
                return f
        return None

    def twin_request(self, s, dlv, msg, raw):
        """A request on the client's twin sender link (TwinReceivingLinkHandler.cs
        OnMessageReceived; the answers as DeviceMessageHandler.cs sends them)."""
        link = dlv.link
        settled_by_client = dlv.settled
        if not settled_by_client:
            dlv.update(Delivery.ACCEPTED)
        dlv.settle()
        ann = msg.annotations or {}
        op = ann.get("operation")
        cid = msg.correlation_id
        # edgeHub: Properties.CorrelationId.ToString(); the reply carries that string.
        cid_text = "" if cid is None else str(cid)
        reply = None  # (status, body bytes)
        note = None
        if not isinstance(op, str) or op not in TWIN_OPERATIONS:
            note = "invalid operation %r: not answered" % (op,)
            warn("twin: " + note)
        elif op != "PATCH" and not cid_text.strip():
            note = "%s without a correlation id: dropped, as edgeHub does" % op
            warn("twin: " + note)
        else:
            failure = self.take_failure(op)
            if failure is not None:
                if failure["status"] is None:
                    note = "never answered (control)"
                else:
                    reply = (failure["status"], b"")
                    note = "failed with %d (control)" % failure["status"]
            elif op == "GET":
                # CloudProxy TwinMessageConverter.ToMessage: {"desired":…,"reported":…}.
                reply = (200, json.dumps(self.twin_state()).encode())
            elif op == "PATCH":
                text = bytes(msg.body).decode("utf-8", "replace") \
                    if isinstance(msg.body, (bytes, memoryview)) else plain(msg.body)
                try:
                    patch = json.loads(text) if isinstance(text, str) else None
                except ValueError:
                    patch = None
                err = reported_error(patch, text) if patch is not None \
                    else "the reported properties are not JSON"
                if err:
                    reply = (400, b"")
                    note = err
                    warn("twin: reported properties refused: " + err)
                else:
                    merge_patch(self.reported, patch)
                    self.reported["$version"] += 1
                    reply = (204, b"")
                if not cid_text.strip():
                    reply = None  # applied (or not), never answered
            elif op == "PUT":
                s["twin_subscribed"] = True
                reply = (200, b"")
            elif op == "DELETE":
                s["twin_subscribed"] = False
                reply = (200, b"")
        self.record(
            kind="twin-request",
            conn=s["id"],
            link=link.name,
            address=self.address_of(link),
            settled_by_client=settled_by_client,
            operation=plain(op),
            resource=plain(ann.get("resource")),
            reply_status=reply[0] if reply else None,
            note=note,
            twin=self.twin_state(),
            **describe(msg, raw),
        )
        if reply:
            self.twin_send(s, self.channel_id(link), cid_text, reply[0], reply[1], "twin-reply")

    def twin_send(self, s, channel, cid, status, body, kind):
        """Send on the client's twin receiver link of connection `s` (the one with the same
        channel correlation id, else the newest): a reply (correlation id, status) or a desired
        patch (neither), one data section (AmqpTwinMessageConverter.FromMessage)."""
        links = [x for x in s["twin_senders"] if self.channel_id(x) == channel] \
            or s["twin_senders"][-1:]
        if not links:
            warn("twin: no twin receiver link to send a %s on" % kind)
            self.record(kind=kind, conn=s["id"], link=None, correlation_id=cid or None,
                        status=status, body=body.decode("utf-8", "replace"), sent=False)
            return
        target = links[-1]
        ann = {symbol("status"): int32(status)} if status is not None else None
        m = Message(body=body, inferred=True, correlation_id=cid or None, annotations=ann)
        dlv = target.send(m)
        dlv.settle()  # AtMostOnce: sent settled
        self.record(
            kind=kind,
            conn=s["id"],
            link=target.name,
            correlation_id=cid or None,
            correlation_id_type=type_name(m.correlation_id),
            status=status,
            annotations=typed_map(ann),
            body=body.decode("utf-8", "replace"),
            sent=True,
        )

    def push_desired(self, patch, version=None, push=True):
        """Apply a desired patch; push it (with its $version) to every subscribed client."""
        patch = {k: v for k, v in patch.items() if k != "$version"}
        merge_patch(self.desired, patch)
        self.desired["$version"] = int(version) if version is not None \
            else self.desired["$version"] + 1
        body = dict(patch)
        body["$version"] = self.desired["$version"]
        sent = 0
        if push:
            for s in list(self.conns.values()):
                if s["twin_subscribed"] and s["twin_senders"]:
                    self.twin_send(s, None, "", None, json.dumps(body).encode(), "twin-desired")
                    sent += 1
        return {"version": self.desired["$version"], "sent": sent}

    def poll_control(self):
        """Apply the complete new lines of --control (one JSON command a line)."""
        try:
            with open(self.args.control, "rb") as f:
                f.seek(self.control_offset)
                data = f.read()
        except FileNotFoundError:
            return
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            self.control_offset += len(line) + 1
            if not line.strip():
                continue
            cmd = json.loads(line)
            result = None
            error = None
            c = cmd.get("cmd")
            if c == "desired":
                result = self.push_desired(cmd.get("patch") or {}, cmd.get("version"),
                                           cmd.get("push", True))
            elif c == "fail":
                self.twin_failures.append({"operation": cmd.get("operation", "*"),
                                           "status": cmd.get("status"),
                                           "count": int(cmd.get("count", 1))})
            elif c == "state":
                pass
            elif c in ("route", "routes"):
                texts = [cmd.get("route")] if c == "route" else (cmd.get("routes") or [])
                try:
                    parsed = [parse_route(t) for t in texts]
                except ValueError as e:
                    error = str(e)
                    warn("control: " + error)
                else:
                    self.routes = (self.routes if c == "route" else []) + parsed
                    result = [r["text"] for r in self.routes]
            else:
                error = "unknown command %r" % (c,)
                warn("control: " + error)
            self.record(kind="control", command=cmd, result=result, error=error,
                        twin=self.twin_state())


class FeedbackTimeout:
    """The 30 s edgeHub waits for a module's disposition of a routed message."""

    def __init__(self, hub, module, lock_token):
        self.hub, self.module, self.lock_token = hub, module, lock_token

    def on_timer_task(self, event):
        f = self.hub.in_flight.get(self.module)
        if f is not None and f["item"]["lock_token"] == self.lock_token:
            warn("no disposition from module %s within %ds: sent again" % (
                self.module, FEEDBACK_TIMEOUT_SECS))
            self.hub.routed_done(self.module, "timeout", None, None)


class RetryTimer:
    """The back-off after a failed send: then the same message is sent again."""

    def __init__(self, hub, module):
        self.hub, self.module = hub, module

    def on_timer_task(self, event):
        self.hub.retrying.discard(self.module)
        self.hub.pump(self.module)


class ControlPoller:
    """Polls the --control file every 50 ms (a Proton timer: the reactor's own thread)."""

    def __init__(self, hub):
        self.hub = hub

    def on_timer_task(self, event):
        self.hub.poll_control()
        event.container.schedule(0.05, self)


def main():
    args = parse_args()
    if not SSL.present():
        warn("this Proton (%s) has no TLS; build python-qpid-proton with libssl-dev and "
             "pkg-config present (scripts/install-test-deps.sh)" % (proton.VERSION,))
        sys.exit(2)
    handler = EdgeHub(args)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        Container(handler).run()
    except SystemExit:
        pass
    finally:
        handler.record_file.close()


if __name__ == "__main__":
    main()
