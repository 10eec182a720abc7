"""``./run db``: migrate the AMOP database, or print the script a DBA reviews (docs/database.md).

    ./run db sql [--from REV|base] [--to REV] [--downgrade] [--dialect mssql]   print a script (no DB)
    ./run db sql --stamp REV          print the script that marks REV as applied (production baseline)
    ./run db upgrade [REV] [--sql]    upgrade the configured AMOP database (default: head)
    ./run db downgrade REV [--sql]    downgrade it to REV
    ./run db stamp REV                mark REV as applied without running it
    ./run db current                  revision, head, differences from the code, snapshot setting
    ./run db check                    exit 1 when the database differs from the code

The database: ``--url``, else ``BULKCHANGE_AMOP_URL``, else the Airflow connection ``amop_db``
(``AmopHook``, so ``AIRFLOW_CONN_AMOP_DB`` or the metadata DB's connection). The URL is never printed.
"""
from __future__ import annotations

import argparse
import os
import sys


def amop_url(explicit: str | None):
    if explicit:
        return explicit
    if os.environ.get("BULKCHANGE_AMOP_URL"):
        return os.environ["BULKCHANGE_AMOP_URL"]
    from bulkchange_plugins.hooks import AmopHook  # imports Airflow: only when no URL is given

    return AmopHook().get_url()


def main(argv: list[str] | None = None) -> int:
    from bulkchange.db import migrate

    p = argparse.ArgumentParser(prog="./run db", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="SQLAlchemy URL of the AMOP database (default: BULKCHANGE_AMOP_URL, "
                                 "else the Airflow connection amop_db)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sql = sub.add_parser("sql", help="print a migration script (offline, no database)")
    sql.add_argument("--from", dest="from_rev", default=migrate.BASELINE,
                     help=f"revision the database is at (default {migrate.BASELINE}; 'base' for an empty one)")
    sql.add_argument("--to", dest="to_rev", default=None, help="target revision (default head; base for downgrade)")
    sql.add_argument("--downgrade", action="store_true", help="the rollback script, from --from (default head)")
    sql.add_argument("--stamp", metavar="REV", help="print the script marking REV as applied instead")
    sql.add_argument("--dialect", default="mssql")
    up = sub.add_parser("upgrade")
    up.add_argument("revision", nargs="?", default="head")
    up.add_argument("--sql", action="store_true", help="print the SQL Server script instead (from the baseline)")
    down = sub.add_parser("downgrade")
    down.add_argument("revision")
    down.add_argument("--sql", action="store_true", help="print the SQL Server script instead (from head)")
    st = sub.add_parser("stamp")
    st.add_argument("revision")
    sub.add_parser("current")
    sub.add_parser("check")
    args = p.parse_args(argv)

    if args.cmd == "sql":
        if args.stamp:
            sys.stdout.write(migrate.offline_stamp_sql(args.stamp, dialect_name=args.dialect))
        elif args.downgrade:
            from_rev = None if args.from_rev == migrate.BASELINE else args.from_rev
            sys.stdout.write(migrate.offline_sql(from_revision=from_rev, to_revision=args.to_rev or migrate.BASELINE,
                                                 downgrade=True, dialect_name=args.dialect))
        else:
            from_rev = None if args.from_rev == "base" else args.from_rev
            sys.stdout.write(migrate.offline_sql(from_revision=from_rev, to_revision=args.to_rev or "head",
                                                 dialect_name=args.dialect))
        return 0
    if args.cmd == "upgrade" and args.sql:
        sys.stdout.write(migrate.offline_sql(from_revision=migrate.BASELINE, to_revision=args.revision))
        return 0
    if args.cmd == "downgrade" and args.sql:
        sys.stdout.write(migrate.offline_sql(to_revision=args.revision, downgrade=True))
        return 0

    from bulkchange.db.connect import make_engine, read_committed_snapshot_problem

    engine = make_engine(amop_url(args.url))
    try:
        if args.cmd == "upgrade":
            migrate.upgrade(engine, args.revision)
        elif args.cmd == "downgrade":
            migrate.downgrade(engine, args.revision)
        elif args.cmd == "stamp":
            migrate.stamp(engine, args.revision)
        at = migrate.current(engine)
        print(f"database at {at or 'no revision'} (head {migrate.head()})")
        if args.cmd in ("current", "check"):
            diff = migrate.differences(engine, database_extras=False)  # production has more than we read
            for d in diff:
                print(f"  differs from the code: {migrate.describe(d)}")
            problem = read_committed_snapshot_problem(engine)
            if problem:
                print(f"  WARNING: {problem}")
            if args.cmd == "check" and (diff or at != migrate.head()):
                return 1
    except migrate.SchemaNotManaged as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
