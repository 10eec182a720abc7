"""python -m simulators serve [--host H] [--port P] [--seed-jasper N] [--seed-thingspace N]
    [--seed-telegence N] [--seed-teal N] [--seed-pond N] [knobs]

Serves every carrier simulator in the foreground (Ctrl-C / SIGTERM stops). Knob flags apply to every
carrier; ``--set CARRIER.KNOB=VALUE`` (value parsed as JSON, else a string) sets one carrier's knob,
e.g. ``--set jasper.rate_limit=5 --set 'jasper.fail_iccids={"8901260000000000018": 404}'``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _kv(text: str) -> tuple[str, str, Any]:
    target, eq, raw = text.partition("=")
    carrier, dot, knob = target.partition(".")
    if not eq or not dot or not carrier or not knob:
        raise argparse.ArgumentTypeError(f"expected CARRIER.KNOB=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return carrier, knob, value


def _account(text: str) -> tuple[str, str]:
    user, sep, key = text.partition(":")
    if not sep or not user or not key:
        raise argparse.ArgumentTypeError(f"expected USERNAME:APIKEY, got {text!r}")
    return user, key


def _fail(text: str) -> tuple[str, int]:
    iccid, sep, status = text.partition("=")
    if not sep or not status.isdigit():
        raise argparse.ArgumentTypeError(f"expected ICCID=HTTP_STATUS, got {text!r}")
    return iccid, int(status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve every carrier simulator in the foreground")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8700, help="0 picks a free port (default 8700)")
    g = serve.add_argument_group("Jasper")
    g.add_argument("--jasper-username", default="demo")
    g.add_argument("--jasper-api-key", default="demo-api-key")
    g.add_argument("--jasper-account", type=_account, action="append", default=[], metavar="USER:APIKEY",
                   help="an extra Jasper account (repeatable)")
    g.add_argument("--seed-jasper", type=int, default=0, metavar="N",
                   help="seed N ACTIVATED demo devices (ICCIDs 8901260...; Luhn-valid)")
    g = serve.add_argument_group("ThingSpace (OAuth client demo-key:demo-secret, UWS user demo-user:demo-password)")
    g.add_argument("--seed-thingspace", type=int, default=0, metavar="N",
                   help="seed N preactive demo devices in account 0000000000-00001 (same ICCIDs as Jasper's)")
    g = serve.add_argument_group("Telegence (app demo-app:demo-app-secret) and Teal (demo-teal-key:demo-teal-secret)")
    g.add_argument("--seed-telegence", type=int, default=0, metavar="N",
                   help="seed N active lines (same ICCIDs as Jasper's, numbers 1555...)")
    g.add_argument("--seed-teal", type=int, default=0, metavar="N",
                   help="seed N ONLINE eSIMs (same ICCIDs as Jasper's, EIDs derived from them)")
    g.add_argument("--seed-pond", type=int, default=0, metavar="N",
                   help="seed N POND SIMs of distributor 1001, services enabled, one ACTIVE package of type 101 "
                        "(same ICCIDs as Jasper's)")
    k = serve.add_argument_group("behaviour knobs (every carrier)")
    k.add_argument("--latency-ms", type=float)
    k.add_argument("--jitter-ms", type=float)
    k.add_argument("--rate-limit", type=float, metavar="RPS", help="admitted requests/s per account; 429 beyond")
    k.add_argument("--max-concurrency", type=int, metavar="N", help="requests in flight per account; 429 beyond")
    k.add_argument("--error-rate", type=float, metavar="FRACTION")
    k.add_argument("--timeout-rate", type=float, metavar="FRACTION")
    k.add_argument("--timeout-s", type=float)
    k.add_argument("--malformed-rate", type=float, metavar="FRACTION")
    k.add_argument("--seed", type=int, help="deterministic faults and jitter")
    k.add_argument("--fail-iccid", type=_fail, action="append", default=[], metavar="ICCID=STATUS")
    k.add_argument("--integer-retry-after", action="store_true", default=None,
                   help="Retry-After in whole seconds (default: fractional, e.g. 0.2)")
    serve.add_argument("--set", type=_kv, action="append", default=[], metavar="CARRIER.KNOB=VALUE",
                       help="one carrier's knob (repeatable)")
    return parser


KNOB_FLAGS = ("latency_ms", "jitter_ms", "rate_limit", "max_concurrency", "error_rate", "timeout_rate",
              "timeout_s", "malformed_rate", "seed", "integer_retry_after")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from simulators.devices import demo_devices
    from simulators.server import CARRIER_CLASSES, SimulatorServer

    knobs: dict[str, Any] = {k: getattr(args, k) for k in KNOB_FLAGS if getattr(args, k) is not None}
    if args.fail_iccid:
        knobs["fail_iccids"] = dict(args.fail_iccid)
    per_carrier: dict[str, dict[str, Any]] = {}
    for carrier, knob, value in args.set:
        if carrier not in CARRIER_CLASSES:
            print(f"unknown carrier {carrier!r} in --set (known: {', '.join(CARRIER_CLASSES)})", file=sys.stderr)
            return 2
        per_carrier.setdefault(carrier, {})[knob] = value
    accounts = {args.jasper_username: args.jasper_api_key, **dict(args.jasper_account)}
    try:
        server = SimulatorServer(args.host, args.port, jasper_accounts=accounts, **per_carrier, **knobs)
    except (ValueError, OSError) as exc:
        print(f"cannot start the simulators: {exc}", file=sys.stderr)
        return 2
    if args.seed_jasper:
        server.carrier("jasper").seed(demo_devices(args.seed_jasper, status="ACTIVATED", ratePlan="IOT-1GB"))
    if args.seed_thingspace and "thingspace" in server.carriers:
        server.carrier("thingspace").seed([{"iccid": d["iccid"], "imei": d["imei"], "state": "preactive"}
                                           for d in demo_devices(args.seed_thingspace)])
    if args.seed_telegence and "telegence" in server.carriers:
        server.carrier("telegence").seed([{"iccid": d["iccid"], "msisdn": d["msisdn"], "IMEI": d["imei"],
                                           "status": "A"} for d in demo_devices(args.seed_telegence)])
    if args.seed_pond and "pond" in server.carriers:
        server.carrier("pond").seed([{"iccid": d["iccid"], "serviceStatus": "ENABLED",
                                      "packages": [{"packageTypeId": "101", "status": "ACTIVE"}]}
                                     for d in demo_devices(args.seed_pond)])
    if args.seed_teal and "teal" in server.carriers:
        server.carrier("teal").seed([{"iccid": d["iccid"], "imsi": d["imsi"], "imei": d["imei"], "msisdn": d["msisdn"],
                                      "status": "ONLINE"} for d in demo_devices(args.seed_teal)])
    print(f"carrier simulators on {server.base_url} (Ctrl-C stops)")
    for name, carrier in server.carriers.items():
        seeded = len(carrier.devices)
        print(f"  {name}: API {server.url_for(name)}  control {server.control_url(name)}/_control/"
              + (f"  ({seeded} devices)" if seeded else ""))
    if "jasper" in server.carriers:
        print(f"  jasper accounts: {', '.join(sorted(accounts))}")
    sys.stdout.flush()
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
