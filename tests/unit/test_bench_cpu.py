"""bench.cpu: the CPU the machine spends during a scenario, added up by role from /proc."""
from pathlib import Path

from bench.cpu import _HZ, CpuByRole, role_of


def test_roles_from_command_lines():
    assert role_of("airflow worker -- LocalExecutor: 01a2-uuid") == "executor and task supervisors"
    assert role_of("airflow worker -- 01a2345e-e96f-768e") == "task processes"
    assert role_of("/v/bin/python -m simulators serve --port 1") == "simulators"
    assert role_of("airflow scheduler") == "scheduler"
    assert role_of("airflow api-server --port 8080") == "api-server"
    assert role_of("airflow dag-processor") == "dag-processor"
    assert role_of("postgres: 15/main: postgres bench 127.0.0.1(5) idle") == "postgresql"
    assert role_of("something else") == "other"


def _proc(root: Path, pid: int, cmd: str, utime: int, stime: int, started: int = 7) -> None:
    d = root / str(pid)
    d.mkdir(exist_ok=True)
    (d / "cmdline").write_bytes(cmd.replace(" ", "\0").encode())
    # fields after "(comm)": state is field 0; utime, stime are 11 and 12; starttime 19
    rest = ["S"] + ["0"] * 10 + [str(utime), str(stime)] + ["0"] * 6 + [str(started)] + ["0"] * 5
    (d / "stat").write_text(f"{pid} (python3) " + " ".join(rest))


def test_cpu_is_added_up_by_role_from_the_first_sample_on(tmp_path):
    _proc(tmp_path, 10, "airflow scheduler", 500, 100)          # running before: 600 ticks not counted
    cpu = CpuByRole(interval_s=3600, proc=tmp_path)
    with cpu:
        _proc(tmp_path, 10, "airflow scheduler", 550, 110)      # +60 ticks
        _proc(tmp_path, 11, "airflow worker -- 01a2", 200, 50)   # new: all of its 250 ticks
        _proc(tmp_path, 12, "airflow worker -- 01a3", 100, 0)
    got = cpu.result()["by_role"]
    assert got == {"task processes": round(350 / _HZ, 1), "scheduler": round(60 / _HZ, 1)}


def test_a_forked_task_counts_under_the_title_it_sets_not_its_supervisors(tmp_path):
    cpu = CpuByRole(interval_s=3600, proc=tmp_path)
    with cpu:
        # first seen with its supervisor's command line (forked, not yet retitled) ...
        _proc(tmp_path, 20, "airflow worker -- LocalExecutor: 01a2", 30, 0, started=9)
        cpu._sample()
        # ... then as the task it is: all of its CPU, the ticks before the title included
        _proc(tmp_path, 20, "airflow worker -- 01a2", 400, 20, started=9)
    assert cpu.result()["by_role"] == {"task processes": round(420 / _HZ, 1)}


def test_an_exiting_process_keeps_its_role(tmp_path):
    cpu = CpuByRole(interval_s=3600, proc=tmp_path)
    with cpu:
        _proc(tmp_path, 21, "airflow worker -- 01a4", 300, 10, started=9)
        cpu._sample()
        _proc(tmp_path, 21, "", 320, 10, started=9)  # a zombie: its command line is empty
        _proc(tmp_path, 2, "", 50, 0, started=1)     # a kernel thread: never had one
    assert cpu.result()["by_role"] == {"task processes": round(330 / _HZ, 1), "kernel": round(50 / _HZ, 1)}


def test_the_docs_table_names_where_the_cpu_went_when_the_run_recorded_it():
    from bench.report import _cpu

    cpu = {"wall_s": 10, "capacity_cpu_s": 20.0, "total_cpu_s": 15.0,
           "by_role": {"task processes": 8.0, "postgresql": 4.5, "scheduler": 2.5}}
    assert _cpu(cpu) == "; CPU used 15 s of the machine's 20 (75 %): task processes 8, postgresql 4.5, scheduler 2.5 s"
    assert _cpu(None) == "" and _cpu({"by_role": {}}) == ""  # runs from before bench.cpu: nothing shown
