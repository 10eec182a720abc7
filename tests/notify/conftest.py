"""Real receivers on loopback: an HTTP webhook receiver and a moto server (SES, SQS)."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.dags.conftest import _restore_param_defaults, airflow_db, dagbag  # noqa: F401  (DAG fixtures for these tests too)


class WebhookReceiver:
    """Records every POST; answers the statuses in ``script`` first (e.g. [503, 503], or
    ``(429, {"Retry-After": "0.2"})`` with headers), then 200."""

    def __init__(self):
        self.received: list[dict] = []  # {"path", "headers", "json"}
        self.refused: list[int] = []
        self.script: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    status, extra_headers = status if isinstance(status, tuple) else (status, {})
                    if status == 200:
                        receiver.received.append({"path": self.path, "headers": dict(self.headers),
                                                  "json": json.loads(body)})
                    else:
                        receiver.refused.append(status)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in extra_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b'{"ok": %s}' % (b"true" if status == 200 else b"false"))

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/adm/bulk-change-status"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def statuses(self, bulk_id=None) -> list[str]:
        return [r["json"]["status"] for r in self.received
                if bulk_id is None or r["json"]["bulkChangeId"] == bulk_id]

    @property
    def conn_json(self) -> str:
        return json.dumps({"conn_type": "http", "host": self.url, "password": "hook-token-123",
                           "extra": {"attempts": 3, "backoff_s": 0.01, "timeout_s": 5}})


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def moto_server(monkeypatch):
    """A moto server on loopback; the aws_default connection points at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    server.endpoint = f"http://127.0.0.1:{port}"
    import requests

    requests.post(f"{server.endpoint}/moto-api/reset", timeout=10).raise_for_status()  # backends are per process
    server.conn_json = json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                   "extra": {"region_name": "us-east-1", "endpoint_url": server.endpoint}})
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", server.conn_json)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield server
    server.stop()


def boto_client(server, service: str):
    import boto3

    return boto3.client(service, region_name="us-east-1", endpoint_url=server.endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")
