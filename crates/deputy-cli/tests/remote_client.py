"""A remote client of deputyd for the TLS tests (tests/remote.rs), standard library only: TLS
1.3 to the daemon's [remote] listener from a chosen source address, one Varlink call per
argument, each reply printed as one JSON line.

    python3 remote_client.py --port PORT --ca CA.pem [--host 127.0.0.1] [--server-name NAME]
        [--source ADDR] [--cert CERT.pem --key KEY.pem] [--reconnect] [--timeout SECONDS]
        CALL...

CALL is a Varlink message as JSON, e.g. '{"method":"io.deputy.GetToken"}'. The calls go on one
connection, or with --reconnect each on a new one (a new source port, the same source
address). A reply that continues is followed by its next ones. The server's certificate must
be signed by CA.pem and name --server-name (default: --host, an IP address matches an IP
subjectAltName). If the connection fails, a last line {"transport_error": "..."} is printed
and the exit code is 2.
"""

import argparse
import json
import socket
import ssl
import sys


def arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--server-name")
    parser.add_argument("--source", help="bind this source address (port 0) first")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--reconnect", action="store_true")
    parser.add_argument("--tls12", action="store_true", help="offer TLS 1.2 only")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("calls", nargs="+")
    return parser.parse_args()


class Connection:
    """One TLS connection speaking Varlink: NUL-terminated JSON messages."""

    def __init__(self, args):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if args.tls12:
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        else:
            context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_verify_locations(args.ca)
        # The test PKI's certificates are made by rcgen: OpenSSL's usual checks, not the
        # stricter set some Python versions add by default.
        context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        if args.cert:
            context.load_cert_chain(args.cert, args.key)
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(args.timeout)
        if args.source:
            raw.bind((args.source, 0))
        raw.connect((args.host, args.port))
        self.sock = context.wrap_socket(
            raw, server_hostname=args.server_name or args.host
        )
        self.buffer = b""

    def call(self, message):
        self.sock.sendall(json.dumps(message).encode() + b"\0")
        replies = []
        while True:
            reply = self.read()
            replies.append(reply)
            if not reply.get("continues"):
                return replies

    def read(self):
        while b"\0" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def main():
    args = arguments()
    calls = [json.loads(call) for call in args.calls]
    connection = None
    try:
        for message in calls:
            if connection is None or args.reconnect:
                if connection is not None:
                    connection.close()
                connection = Connection(args)
            for reply in connection.call(message):
                print(json.dumps(reply, sort_keys=True), flush=True)
    except (OSError, ssl.SSLError, ConnectionError, ValueError) as err:
        print(json.dumps({"transport_error": f"{type(err).__name__}: {err}"}), flush=True)
        return 2
    finally:
        if connection is not None:
            connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
