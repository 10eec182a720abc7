"""python -m simulators serve [--host H] [--port P] [--seed-jasper N] [knobs]"""
from __future__ import annotations

import argparse
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve every carrier simulator in the foreground")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8700)
    serve.add_argument("--jasper-username", default="demo")
    serve.add_argument("--jasper-api-key", default="demo-api-key")
    serve.add_argument("--seed-jasper", type=int, default=0, metavar="N", help="seed N ACTIVATED Jasper devices")
    serve.add_argument("--latency-ms", type=float, default=0.0)
    serve.add_argument("--jitter-ms", type=float, default=0.0)
    serve.add_argument("--rate-limit", type=float, default=None, help="requests/s per account (429 beyond)")
    serve.add_argument("--max-concurrency", type=int, default=None, help="in-flight requests per account")
    serve.add_argument("--error-rate", type=float, default=0.0)
    args = parser.parse_args(argv)

    from simulators.server import SimulatorServer

    server = SimulatorServer(args.host, args.port, jasper_accounts={args.jasper_username: args.jasper_api_key},
                             latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, rate_limit=args.rate_limit,
                             max_concurrency=args.max_concurrency, error_rate=args.error_rate)
    server.start()
    if args.seed_jasper:
        from bulkchange.db.seed import make_iccid

        server.control("jasper").seed_devices(
            [{"iccid": make_iccid(i + 1), "status": "ACTIVATED", "ratePlan": "IOT-1GB"} for i in range(args.seed_jasper)])
    print(f"carrier simulators on {server.base_url} (Ctrl-C stops)")
    for name in server.carriers:
        print(f"  {name}: API {server.url_for(name)}  control {server.base_url}/{name}/_control/")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
