#!/usr/bin/env python3
"""A Flotilla service in Python, standard library only, speaking the protocol of
docs/protocol.md: it registers with the control plane and heartbeats, follows its live
configuration with blocking queries and reports what it applied, serves health checks,
continues the caller's trace (W3C traceparent) and reports its own span over OTLP/HTTP JSON,
and deregisters when told to stop. The gateway routes to it like to any service.

    flotilla.toml:  [services.hello]
                    command = "python3"
                    args = ["examples/python/hello.py", "hello"]
                    mtls = false   # no workload certificate: plain HTTP, declared to the control plane

Its one endpoint, GET /api/v1/hello, answers {"message": <the config key `greeting`>}.
"""

import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE = sys.argv[1] if len(sys.argv) > 1 else "hello"
VERSION = "1.0.0"
CONTROL = os.environ.get("FLOTILLA_CONTROL_ADDR", "127.0.0.1:7070")
if not CONTROL.startswith("http"):
    CONTROL = "http://" + CONTROL
TOKEN = os.environ.get("FLOTILLA_TOKEN", "")
NAME = os.environ.get("FLOTILLA_INSTANCE", SERVICE)
INSTANCE_ID = "%s-%s" % (NAME, secrets.token_hex(4))

# What the instance runs on: defaults, then the store's values (followed live).
config = {"greeting": "Hello"}
config_revision = 0
stopping = threading.Event()


def log(message, **fields):
    """One JSON line, the shape `flotilla logs` reads (a trace id makes it findable by trace)."""
    line = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "level": fields.pop("level", "INFO"), "service": SERVICE, "message": message}
    if "trace_id" in fields:
        line["trace_id"] = fields.pop("trace_id")
    if fields:
        line["fields"] = fields
    print(json.dumps(line), flush=True)


def call(method, path, body=None, timeout=5.0):
    """A request to the control plane with this instance's credential: (status, JSON, headers)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(CONTROL + path, data=data, method=method)
    request.add_header("authorization", "Bearer " + TOKEN)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read()
            return answer.status, (json.loads(text) if text else None), answer.headers
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text), error.headers
        except ValueError:
            return error.code, None, error.headers


def keep_registered(address):
    """Register; heartbeat at the lease's interval; register again when the registry forgot us."""
    registration = {"service": SERVICE, "instance_id": INSTANCE_ID, "address": address,
                    "version": VERSION,
                    "metadata": {"pid": str(os.getpid()), "supervisor.name": NAME, "language": "python"}}
    lease = None
    while not stopping.is_set():
        try:
            if lease is None:
                status, answer, _ = call("POST", "/v1/registry/instances", registration)
                if status in (200, 201):
                    lease = answer
                    log("registered", instance=INSTANCE_ID, address=address)
                else:
                    log("registration refused", level="WARN", status=status, answer=answer)
            else:
                status, answer, _ = call("PUT", "/v1/registry/instances/%s/heartbeat" % INSTANCE_ID)
                if status == 404:
                    log("the registry lost our lease; registering again", level="WARN")
                    lease = None
                    continue
        except OSError as error:
            log("cannot reach the control plane; will keep trying", level="WARN", error=str(error))
        every = (lease or {}).get("heartbeat_ms", 250) / 1000.0
        stopping.wait(every if lease else 0.25)


def follow_config():
    """Blocking queries on this service's resolved configuration: each change applied and
    reported, under the revision index the control plane returns."""
    global config, config_revision
    index = 0
    while not stopping.is_set():
        try:
            status, resolved, headers = call(
                "GET", "/v1/config/resolve/%s?index=%d&wait=10s" % (SERVICE, index), timeout=15.0)
        except OSError:
            stopping.wait(1.0)
            continue
        if status != 200:
            stopping.wait(1.0)
            continue
        index = int(headers.get("x-flotilla-index", resolved["revision"]))
        greeting = resolved["values"].get("greeting", "Hello")
        if isinstance(greeting, str) and greeting:
            report = "applied"
            if resolved["revision"] != config_revision:
                config = {"greeting": greeting}
                config_revision = resolved["revision"]
                log("config applied", revision=config_revision)
        else:
            report = "refused"
        call("PUT", "/v1/config/applied/%s" % INSTANCE_ID,
             {"service": SERVICE, "revision": resolved["revision"], "status": report,
              "running": config_revision, "time_ms": int(time.time() * 1000),
              "error": None if report == "applied" else "`greeting` must be a non-empty string"})


def export_span(trace_id, span_id, parent_id, name, started_ns, ended_ns, status_code):
    """This request's server span, to the control plane's OTLP/HTTP receiver as JSON."""
    attribute = lambda key, value: {"key": key, "value": value}
    body = {"resourceSpans": [{
        "resource": {"attributes": [attribute("service.name", {"stringValue": SERVICE}),
                                    attribute("service.instance.id", {"stringValue": NAME})]},
        "scopeSpans": [{"scope": {"name": "examples/python/hello.py"}, "spans": [{
            "traceId": trace_id, "spanId": span_id, "parentSpanId": parent_id or "",
            "name": name, "kind": 2,
            "startTimeUnixNano": str(started_ns), "endTimeUnixNano": str(ended_ns),
            "attributes": [attribute("http.response.status_code", {"intValue": str(status_code)})],
            "status": {"code": 2 if status_code >= 500 else 0}}]}]}]}
    try:
        call("POST", "/v1/traces", body)
    except OSError:
        pass  # Telemetry never fails a request.


def parse_traceparent(value):
    """(trace id, parent span id, flags) from a W3C traceparent, or a new trace."""
    parts = (value or "").split("-")
    if len(parts) == 4 and parts[0] == "00" and len(parts[1]) == 32 and len(parts[2]) == 16:
        return parts[1], parts[2], parts[3]
    return secrets.token_hex(16), None, "01"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body, content_type="application/json", headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health/live":
            return self.answer(200, {"status": "live"})
        if self.path == "/health/ready":
            if stopping.is_set():
                return self.answer(503, {"type": "urn:flotilla:problem:not-ready", "title": "Not ready",
                                         "status": 503}, "application/problem+json")
            return self.answer(200, {"status": "ready"})
        if self.path == "/openapi.json":
            return self.answer(200, OPENAPI)
        if self.path != "/api/v1/hello":
            return self.answer(404, {"type": "urn:flotilla:problem:not-found", "title": "Not found",
                                     "status": 404, "detail": "no route for %s" % self.path},
                               "application/problem+json")
        started = time.time_ns()
        trace_id, parent, flags = parse_traceparent(self.headers.get("traceparent"))
        span_id = secrets.token_hex(8)
        # The context this request runs in: what a call it made would send on.
        traceparent = "00-%s-%s-%s" % (trace_id, span_id, flags)
        self.answer(200, {"message": config["greeting"], "service": SERVICE},
                    headers=[("traceparent", traceparent)])
        log("GET /api/v1/hello 200", trace_id=trace_id)
        if flags.endswith("1"):
            export_span(trace_id, span_id, parent, "GET /api/v1/hello", started, time.time_ns(), 200)

    def log_message(self, *args):
        pass  # One line per request is written above, as JSON.


OPENAPI = {"openapi": "3.1.0",
           "info": {"title": SERVICE, "version": VERSION, "description": "A greeting, from Python."},
           "paths": {"/api/v1/hello": {"get": {"operationId": "hello", "responses": {"200": {
               "description": "The greeting in force",
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Hello"}}}}}}}},
           "components": {"schemas": {"Hello": {"type": "object", "required": ["message", "service"],
               "properties": {"message": {"type": "string"}, "service": {"type": "string"}}}}}}


def main():
    server = ThreadingHTTPServer((os.environ.get("HELLO_HOST", "127.0.0.1"), int(os.environ.get("HELLO_PORT", "0"))), Handler)
    host, port = server.server_address[:2]
    address = "%s:%d" % (host, port)
    log("serving", address=address)

    def stop(*_):
        stopping.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if os.environ.get("FLOTILLA_SUPERVISED") == "1":
        # The supervisor's end of our standard input closes when it is gone: so do we.
        threading.Thread(target=lambda: (sys.stdin.read(), stop()), daemon=True).start()

    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=keep_registered, args=(address,), daemon=True).start()
    threading.Thread(target=follow_config, daemon=True).start()
    stopping.wait()
    # Deregister first, so no new request is sent here; then drain and close.
    try:
        call("DELETE", "/v1/registry/instances/%s" % INSTANCE_ID, timeout=1.0)
        log("deregistered", instance=INSTANCE_ID)
    except OSError as error:
        log("deregistration failed; the lease will expire", level="WARN", error=str(error))
    time.sleep(0.2)
    server.shutdown()


if __name__ == "__main__":
    main()
