"""The demo's startup: it waits for the api-server and the parsed DAGs with progress and a bounded
timeout, and unpauses only the DAGs it uses (bulk_change_sqs only with a queue)."""
import pytest

from bulkchange_demo import demo


class FakeApi:
    def __init__(self, up_after: int, parsed_after: int, dags):
        self.calls, self.up_after, self.parsed_after, self.dags = 0, up_after, parsed_after, dags
        self.unpaused = []

    def healthy(self):
        self.calls += 1
        return self.calls > self.up_after

    def parsed(self, dag_ids):
        return set(dag_ids) if self.calls > self.parsed_after else set(dag_ids[:1])

    def set_paused(self, dag_id, paused):
        assert paused is False
        self.unpaused.append(dag_id)


class Alive:
    returncode = None

    def poll(self):
        return None


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(demo.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(demo.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))


def test_waits_for_the_api_server_then_the_dags_saying_what_it_waits_for(capsys, tmp_path):
    api = FakeApi(up_after=10, parsed_after=20, dags=demo.DEMO_DAGS)
    demo.wait_until_ready(api, Alive(), demo.DEMO_DAGS, timeout=900, log_path=tmp_path / "log")
    out = capsys.readouterr().out
    assert "waiting for the api-server to listen" in out
    assert "api-server up, 1/2 DAGs parsed" in out and "ready after" in out


def test_gives_up_after_the_timeout_naming_what_is_missing(tmp_path):
    api = FakeApi(up_after=0, parsed_after=10**6, dags=demo.DEMO_DAGS)
    with pytest.raises(TimeoutError, match=r"still waiting for the DAGs \['bulk_change_process'\] to be parsed"):
        demo.wait_until_ready(api, Alive(), demo.DEMO_DAGS, timeout=60, log_path=tmp_path / "log")


def test_a_dead_airflow_stops_the_wait(tmp_path):
    class Dead:
        returncode = 3

        def poll(self):
            return 3

    with pytest.raises(RuntimeError, match="exited with 3"):
        demo.wait_until_ready(FakeApi(0, 0, []), Dead(), demo.DEMO_DAGS, timeout=60, log_path=tmp_path / "log")


def test_only_the_dags_the_demo_uses_are_unpaused(monkeypatch):
    monkeypatch.delenv("DEVICE_BULK_CHANGE_QUEUE_URL", raising=False)
    api = FakeApi(0, 0, [])
    assert demo.unpause_for_demo(api, demo.SERVE_DAGS) == ["bulk_change_sensor", "bulk_change_process",
                                                           "bulk_change_submit"]
    monkeypatch.setenv("DEVICE_BULK_CHANGE_QUEUE_URL", "https://sqs.example/q")
    assert "bulk_change_sqs" in demo.unpause_for_demo(FakeApi(0, 0, []), demo.DEMO_DAGS)


def test_the_ui_port_is_8080_unless_taken():
    import socket

    assert demo.DEFAULT_PORT == 8080
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert demo.port_or_free(taken) != taken
