"""``carriers.http.when_sent``: the hook runs once the request has been written to its connection (the
rate limiter's window counts an attempt from then), never for a request that did not leave."""
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bulkchange.carriers.http import BoundedSession, when_sent


class _Handler(BaseHTTPRequestHandler):
    def do_PUT(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_the_hook_runs_once_after_the_request_left_on_a_new_and_a_pooled_connection(server):
    session = BoundedSession()
    url = f"http://127.0.0.1:{server.server_port}/devices/1"
    for _ in range(2):  # the second request reuses the pooled connection
        calls = []
        with when_sent(lambda: calls.append("left")):
            assert session.put(url, json={"status": "x"}, timeout=5).status_code == 200
        assert calls == ["left"]
    session.close()


def test_no_hook_for_a_request_that_never_left():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens: connection refused
    calls = []
    session = BoundedSession()
    with when_sent(lambda: calls.append(1)), pytest.raises(requests.ConnectionError):
        session.put(f"http://127.0.0.1:{port}/devices/1", json={}, timeout=2)
    assert calls == []
    session.close()


def test_a_failing_hook_does_not_fail_the_request(server, caplog):
    def broken():
        raise RuntimeError("redis went away")

    session = BoundedSession()
    with when_sent(broken):
        assert session.put(f"http://127.0.0.1:{server.server_port}/devices/1", json={}, timeout=5).status_code == 200
    assert "could not note when a request left" in caplog.text
    session.close()
