#!/usr/bin/env python3
"""A CloudWatch protocol translator for tests: rpc-v2-cbor in front, query
protocol behind.

aws-sdk-cloudwatch >= 1.100 speaks Smithy RPC v2 CBOR, which moto's server
mode does not parse. This proxy decodes the CBOR request with botocore's own
parser (botocore ships with moto), re-serialises it for the same operation in
the query protocol with botocore's serializer, forwards it to moto with the
caller's signature headers (moto routes on the credential scope), and turns
moto's answer back into an rpc-v2-cbor reply: an empty map on success, a map
with __type and message on error.

Only what the server sends is supported: operations whose output is empty
(PutMetricData). Tests read the values back from moto directly.

    python3 cloudwatch_cbor_proxy.py --port 0 --upstream http://127.0.0.1:5000
prints "listening on PORT" once it accepts connections.
"""

import argparse
import re
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.session
from botocore.parsers import RpcV2CBORParser
from botocore.serialize import create_serializer

PATH = re.compile(r"^/service/(?P<service>[^/]+)/operation/(?P<operation>[A-Za-z]+)$")
FORWARDED_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


def cbor_encode(value):
    """Encodes the few shapes a reply needs: maps of text, text, ints."""
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
            if n < 1 << (8 * struct.calcsize(fmt)):
                return bytes([major << 5 | info]) + struct.pack(fmt, n)
        raise ValueError(n)

    if isinstance(value, dict):
        out = head(5, len(value))
        for k, v in value.items():
            out += cbor_encode(k) + cbor_encode(v)
        return out
    if isinstance(value, str):
        data = value.encode()
        return head(3, len(data)) + data
    if isinstance(value, int) and value >= 0:
        return head(0, value)
    raise TypeError(type(value))


class Translator(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ""
    model = None

    def log_message(self, fmt, *args):
        sys.stderr.write("cbor-proxy: " + fmt % args + "\n")

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/cbor")
        self.send_header("smithy-protocol", "rpc-v2-cbor")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, code, message):
        self.reply(status, cbor_encode({"__type": code, "message": message}))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = PATH.match(self.path)
        if not match:
            return self.error(404, "UnknownOperationException", f"no operation at {self.path}")
        try:
            operation = self.model.operation_model(match["operation"])
        except Exception:
            return self.error(400, "UnknownOperationException", match["operation"])
        parser = RpcV2CBORParser()
        params = parser.parse_data_item(parser.get_peekable_stream_from_bytes(body)) if body else {}
        request = create_serializer("query").serialize_to_request(params, operation)
        form = request["body"]
        data = form if isinstance(form, bytes) else urllib.parse.urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        for name in FORWARDED_HEADERS:
            if self.headers.get(name):
                headers[name] = self.headers[name]
        forward = urllib.request.Request(self.upstream + "/", data=data, headers=headers)
        try:
            with urllib.request.urlopen(forward, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            code = re.search(r"<Code>([^<]*)</Code>", text)
            message = re.search(r"<Message>([^<]*)</Message>", text)
            return self.error(
                e.code,
                code[1] if code else "InternalFailure",
                message[1] if message else text[:200],
            )
        except OSError as e:
            return self.error(502, "ServiceUnavailable", f"moto unreachable: {e}")
        if operation.output_shape is not None and operation.output_shape.members:
            return self.error(501, "NotImplemented", f"{operation.name} has an output: not translated")
        self.reply(200, cbor_encode({}))


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--port", type=int, default=0)
    args.add_argument("--upstream", required=True)
    opts = args.parse_args()
    Translator.upstream = opts.upstream.rstrip("/")
    Translator.model = botocore.session.get_session().get_service_model("cloudwatch")
    server = ThreadingHTTPServer(("127.0.0.1", opts.port), Translator)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
