"""docker-compose.yaml cannot run here (no Docker engine), so check it against the code."""
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def _common_env(compose) -> dict:
    return compose["x-airflow-common"]["environment"]


def test_services_of_the_official_shape(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-worker", "airflow-triggerer", "airflow-init", "simulators"):
        assert name in services, name
    assert services["simulators"]["profiles"] == ["simulators"]
    assert _common_env(compose)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_commands_are_real_airflow_commands(compose):
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    for name, svc in compose["services"].items():
        if not name.startswith("airflow-") or svc.get("entrypoint"):
            continue
        args = svc["command"].split()
        parser.parse_args(args)  # exits with SystemExit on an unknown command


def test_every_setting_the_code_reads_is_provided(compose):
    from bulkchange.settings import Settings

    # every environment read goes through Settings (tests/unit/test_settings.py keeps it so)
    read = {n for n in Settings.env_names() if n.startswith(("BULKCHANGE_", "MAX_PARALLEL_"))}
    assert read, "the code reads its settings from the environment"
    env = _common_env(compose)
    assert sorted(read - set(env)) == []
    # the connections the DAGs use by default (carrier accounts are per deployment: not here)
    for conn in ("AIRFLOW_CONN_AMOP_DB", "AIRFLOW_CONN_SMTP_DEFAULT"):
        assert conn in env


def test_mounted_paths_exist_and_include_is_importable(compose):
    common = compose["x-airflow-common"]
    for volume in common["volumes"]:
        host, container = volume.split(":")[:2]
        if host.startswith("./var"):
            continue  # created at run time
        assert (ROOT / host).is_dir(), host
    assert "/opt/airflow/include" in common["environment"]["PYTHONPATH"]
    assert "./include:/opt/airflow/include" in common["volumes"]
    assert (ROOT / "Dockerfile").read_text().count("requirements.txt") >= 1


# --- secure by default ---------------------------------------------------------------------------
# Compose variable interpolation (the subset the file uses): ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?message}, ${VAR?message}, nested in defaults; $$ is a literal $.
class MissingVariable(Exception):
    pass


def _interpolate(text: str, env: dict) -> str:
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0) if text[j - 1] == "$" or text[j] == "}" else 0
                j += 1
            body = text[i + 2:j - 1]
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?$", body, re.S)
            name, op, arg = m[1], m[2], m[3] or ""
            value = env.get(name)
            unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
            if op in (":?", "?") and unset_or_empty:
                raise MissingVariable(f"{name}: {arg}")
            if op in (":-", "-") and unset_or_empty:
                value = _interpolate(arg, env)
            out.append(value or "")
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _resolve(node, env: dict):
    if isinstance(node, dict):
        return {k: _resolve(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, env) for v in node]
    return _interpolate(node, env) if isinstance(node, str) else node


OPERATOR_ENV = {
    "AIRFLOW_JWT_SECRET": "5f0c2b7e" * 8, "AIRFLOW_API_SECRET_KEY": "a1b2c3d4" * 8,
    "AIRFLOW_FERNET_KEY": "ZmVybmV0LWtleS1vZi10aGlzLWRlcGxveW1lbnQtMzI=", "POSTGRES_PASSWORD": "pg-" + "9" * 20,
    "REDIS_PASSWORD": "rd-" + "8" * 20, "AIRFLOW_ADMIN_PASSWORD": "adm-" + "7" * 20,
    "AMOP_DB_CONN": '{"conn_type": "mssql", "host": "amop", "login": "bulkchange", "password": "x"}',
}
REQUIRED = ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY", "POSTGRES_PASSWORD",
            "REDIS_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "AMOP_DB_CONN")
# values a deployment must never run with, whatever the file says
WEAK = ("change-me-in-production", "changeme", "change-me", "secret", "airflow", "admin", "password", "demo")
SECRET_SETTING = re.compile(r"(SECRET|PASSWORD|FERNET|TOKEN|_KEY$|^AIRFLOW_CONN_)", re.I)


@pytest.fixture(scope="module")
def raw_compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_compose_refuses_to_start_without_each_secret(raw_compose):
    assert _resolve(raw_compose, OPERATOR_ENV)  # with every secret given it starts
    for name in REQUIRED:
        env = {k: v for k, v in OPERATOR_ENV.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            _resolve(raw_compose, env)
        with pytest.raises(MissingVariable, match=name):  # an empty value is refused too
            _resolve(raw_compose, {**env, name: ""})


def _defaults(text: str) -> list[str]:
    """Every default value a ${VAR:-default} / ${VAR-default} in ``text`` can produce."""
    return [d for d in re.findall(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-((?:[^{}]|\{[^{}]*\})*)\}", text) if d]


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, path + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (str(i),))
    else:
        yield path, node


def test_no_default_secret_and_no_demo_connection_outside_the_profile(raw_compose):
    simulators_only = {name for name, svc in raw_compose["services"].items()
                       if svc.get("profiles") == ["simulators"]}
    assert {"simulators", "demo-connections"} <= simulators_only
    offenders = []
    for path, value in _walk({k: v for k, v in raw_compose.items() if k != "services"} |
                             {"services": {k: v for k, v in raw_compose["services"].items()
                                           if k not in simulators_only}}):
        if not isinstance(value, str):
            continue
        key = path[-1]
        if key.startswith("AIRFLOW_CONN_CARRIER") or "demo-api-key" in value:
            offenders.append(("demo connection outside the simulators profile", path))
        if SECRET_SETTING.search(key):
            for default in _defaults(value):
                offenders.append(("default secret", path, default))
        for default in _defaults(value):
            if re.search(r"(://[^:/@]*:[^@${]+@|\"password\"\s*:\s*\"[^\"]*\")", default):
                offenders.append(("default credentials", path, default))
        if key == "POSTGRES_PASSWORD" or re.search(r"postgres(ql)?(\+\w+)?://\w+:(?!\$\{)", value):
            if not value.startswith("${") and "${POSTGRES_PASSWORD" not in value:
                offenders.append(("fixed database password", path))
    assert offenders == []


def test_ports_published_on_loopback_unless_told_otherwise(raw_compose):
    resolved = _resolve(raw_compose, OPERATOR_ENV)
    published = [(name, p) for name, svc in resolved["services"].items() for p in svc.get("ports", [])]
    assert published
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)
    simulators = raw_compose["services"]["simulators"]
    assert "0.0.0.0" not in json.dumps(simulators["command"]), "the simulators' control API must not listen on 0.0.0.0"


def test_forged_admin_token_is_refused():
    """A hand-made HS512 token with role ADMIN, signed with any value the compose file could give the
    JWT secret (its defaults, and well-known weak ones), is refused by Airflow's own validator set
    up as compose sets it up; a token signed with the deployment's real secret is accepted."""
    import time

    import jwt
    from airflow.api_fastapi.auth.tokens import JWTValidator

    raw_text = (ROOT / "docker-compose.yaml").read_text()
    raw = yaml.safe_load(raw_text)
    line = next(v for p, v in _walk(raw) if p[-1] == "AIRFLOW__API_AUTH__JWT_SECRET")
    candidates = set(WEAK) | set(_defaults(line))
    issuer = _resolve(raw, OPERATOR_ENV)["x-airflow-common"]["environment"].get("AIRFLOW__API_AUTH__JWT_ISSUER")
    for env in ({}, OPERATOR_ENV):
        try:
            secret = _resolve(raw, env)["x-airflow-common"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]
        except MissingVariable:
            continue  # compose does not start: nothing to forge against
        validator = JWTValidator(secret_key=secret, audience="apache-airflow", issuer=issuer,
                                 algorithm=["HS512"], leeway=0)
        now = int(time.time())
        claims = {"sub": "1", "role": "ADMIN", "roles": ["Admin"], "aud": "apache-airflow", "iat": now,
                  "nbf": now, "exp": now + 600}
        if issuer:
            claims["iss"] = issuer
        for candidate in candidates:
            forged = jwt.encode(claims, candidate or "x", algorithm="HS512")
            with pytest.raises(jwt.InvalidTokenError):
                validator.validated_claims(forged)
        # the validator does accept a token signed with the real secret: the refusals above mean something
        assert validator.validated_claims(jwt.encode(claims, secret, algorithm="HS512"))["role"] == "ADMIN"


def _names(path: Path) -> set[str]:
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.add(re.split(r"[\[=<>~ ;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def test_image_installs_runtime_requirements_only_and_pinned():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile and "requirements-test" not in dockerfile
    runtime, lock = _names(ROOT / "requirements.txt"), _names(ROOT / "requirements.lock")
    for test_only in ("pytest", "aiosmtpd", "moto", "sdksio-verizon-apis-sdk", "pip-audit"):
        assert test_only not in runtime and test_only not in lock, test_only
        assert test_only in _names(ROOT / "requirements-test.txt"), test_only
    assert runtime <= lock  # the lock holds every runtime requirement, and the whole tree under them
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "==" in line, line  # every package pinned
    assert "requirements-test.lock" in (ROOT / "run").read_text()
