"""Exit 0 when a Kafka broker at HOST:PORT answers a Metadata request that lists at least one broker.

Standard library only, so deploy/local/kafka.sh can use it before any virtual environment exists.
Metadata v4 (the oldest version Kafka 4.x still serves, KIP-896) with a null topic list:
request  = api_key:int16 api_version:int16 correlation_id:int32 client_id:string
           topics:int32(-1 = null) allow_auto_topic_creation:int8
response = size:int32 correlation_id:int32 throttle_time_ms:int32 brokers:[node_id host port rack] ...
"""

from __future__ import annotations

import socket
import struct
import sys


def broker_count(host: str, port: int, timeout: float = 2.0) -> int:
    client_id = b"inferwatch-ready"
    body = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id + struct.pack(">ib", -1, 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = _read(sock, 4)
        (size,) = struct.unpack(">i", header)
        payload = _read(sock, size)
    _correlation, _throttle, brokers = struct.unpack(">iii", payload[:12])
    return int(brokers)


def _read(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


if __name__ == "__main__":
    host, _, port = sys.argv[1].rpartition(":")
    sys.exit(0 if broker_count(host, int(port)) > 0 else 1)
