"""A carrier cannot tie up a worker: a real misbehaving HTTP server on loopback answers one device
byte by byte and another with an endless body. Each of those devices fails on its own (deadline /
size cap) while the well-answered device of the same batch is processed; the batch's memory
stays far below the body it was offered, and the server sees the client hang up early."""
import json
import socket
import threading
import time
import tracemalloc

import pytest
from sqlalchemy import select

from bulkchange import processing
from bulkchange.carriers import CarrierSettings, build_client
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration

GOOD, DRIP, HUGE, HEADER_DRIP = (seed.make_iccid(91_000 + i) for i in range(4))
DRIP_BYTES = 400          # the dripped answer: 400 bytes, one per 50 ms = 20 s in all
HUGE_BYTES = 64 * 2**20  # the endless answer: 64 MiB offered


class NastyCarrier:
    """A Jasper-shaped HTTP/1.1 server: PUT /devices/{iccid} answers well, drips its body or its
    headers, or floods."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.sent: dict[str, int] = {}  # bytes of body sent per ICCID before the client hung up
        self.finished: dict[str, bool] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/rws/api/v1"

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with conn:
            conn.settimeout(30)
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = next((int(v) for k, _, v in (h.partition(":") for h in lines[1:])
                               if k.strip().lower() == "content-length"), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                iccid = lines[0].split()[1].rstrip("/").split("/")[-1]
                if not self._answer(conn, iccid):
                    return

    def _answer(self, conn, iccid) -> bool:
        body = json.dumps({"iccid": iccid, "status": "DEACTIVATED"}).encode()
        try:
            if iccid == DRIP:
                body = body + b" " * (DRIP_BYTES - len(body))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body))
                for i in range(len(body)):
                    conn.sendall(body[i:i + 1])
                    self.sent[iccid] = i + 1
                    time.sleep(0.05)
                self.finished[iccid] = True
                return True
            if iccid == HEADER_DRIP:  # the status line at once, then headers that never end in time
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                header = b"X-Pad: " + b"a" * DRIP_BYTES + b"\r\n"
                for i in range(len(header)):
                    conn.sendall(header[i:i + 1])
                    self.sent[iccid] = i + 1
                    time.sleep(0.05)
                conn.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                self.finished[iccid] = True
                return True
            if iccid == HUGE:
                # no Content-Length: the size is only known by reading it all
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                block = b"[" + b"1," * (2**20 // 2 - 1)
                self.sent[iccid] = 0
                while self.sent[iccid] < HUGE_BYTES:
                    conn.sendall(block)
                    self.sent[iccid] += len(block)
                self.finished[iccid] = True
                return False
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            return True
        except OSError:  # the client hung up
            self.finished[iccid] = False
            return False

    def close(self):
        self._stop.set()
        self.sock.close()


@pytest.fixture
def nasty():
    server = NastyCarrier()
    yield server
    server.close()


def _fleet(engine):
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="jasper", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED"} for i in (GOOD, DRIP, HUGE, HEADER_DRIP)],
                         sp_id=1, tenant_id=1)
        return seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                              for i in (GOOD, DRIP, HUGE, HEADER_DRIP)])


def test_dripping_and_oversized_answers_fail_their_device_only(sqlite_engine, nasty):
    settings = CarrierSettings(nasty.url, "acct", "bounded-probe-key-1",
                               extra={"timeout_s": 1, "max_response_mb": 1})
    client = build_client(Integration.JASPER, settings,
                          policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=1)))
    bulk_id = _fleet(sqlite_engine)
    plan = processing.prepare(sqlite_engine, bulk_id)
    tracemalloc.start()
    try:
        for b in plan.batches:
            processing.process_batch(sqlite_engine, bulk_id, b.device_change_ids, client=client, max_parallel=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.close()
    processing.finalize(sqlite_engine, bulk_id)
    dc = t.m2m_device_change
    with sqlite_engine.connect() as conn:
        rows = {r.ICCID: r for r in conn.execute(select(dc.c.ICCID, dc.c.Status, dc.c.StatusDetails))}
    assert rows[GOOD].Status == "PROCESSED", rows[GOOD].StatusDetails
    assert rows[DRIP].Status == "API_FAILED" and "timeout after 1.0s" in rows[DRIP].StatusDetails, rows[DRIP].StatusDetails
    assert rows[HUGE].Status == "API_FAILED" and "ResponseTooLarge" in rows[HUGE].StatusDetails, rows[HUGE].StatusDetails
    assert rows[HEADER_DRIP].Status == "API_FAILED" and "timeout after 1.0s" in rows[HEADER_DRIP].StatusDetails, \
        rows[HEADER_DRIP].StatusDetails
    # the client hung up on the drips long before their 20 s answers were complete ...
    assert not nasty.finished.get(DRIP) and nasty.sent[DRIP] < DRIP_BYTES
    assert not nasty.finished.get(HEADER_DRIP) and nasty.sent[HEADER_DRIP] < DRIP_BYTES
    # ... and on the flood after a few MiB (kernel buffers included), not 64 MiB
    assert nasty.sent[HUGE] < 32 * 2**20, nasty.sent[HUGE]
    assert peak < 24 * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"


def test_content_length_over_the_cap_is_refused_unread():
    from bulkchange.carriers.http import BoundedSession, ResponseTooLarge

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    sent = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
            try:
                for _ in range(1024):
                    conn.sendall(b"x" * 2**20)
                    sent.append(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with BoundedSession(max_bytes=2**20) as session, pytest.raises(ResponseTooLarge, match="1073741824 bytes"):
        session.get(f"http://127.0.0.1:{port}/", timeout=5)
    thread.join(10)
    srv.close()
    assert len(sent) < 64  # MiB: the client never read the declared gigabyte


def test_a_shorter_deadline_sent_after_a_longer_one_still_ends_its_call(nasty):
    """The deadline thread sleeps until the earliest deadline and is woken only when a new call's
    deadline is earlier: a 2 s call sent while a 120 s one drips must end at its own deadline."""
    import requests

    from bulkchange.carriers.http import DeadlineExceeded, bounded_session

    session = bounded_session()
    errors: dict[str, BaseException] = {}

    def call(name, timeout):
        try:
            session.put(f"{nasty.url}/devices/{DRIP}", json={}, timeout=timeout)
        except requests.RequestException as exc:
            errors[name] = exc

    long_call = threading.Thread(target=call, args=("long", 120), daemon=True)
    long_call.start()
    deadline = time.monotonic() + 30
    while not nasty.sent.get(DRIP) and time.monotonic() < deadline:  # the long call is being dripped to
        time.sleep(0.05)
    assert nasty.sent.get(DRIP)
    short_call = threading.Thread(target=call, args=("short", 2), daemon=True)
    short_call.start()
    short_call.join(timeout=60)  # a bound for a hung test, far from the 2 s deadline; not a timing check
    assert not short_call.is_alive() and isinstance(errors.get("short"), DeadlineExceeded), errors
    assert long_call.is_alive()  # still within its own deadline, dripping
    session.close()
