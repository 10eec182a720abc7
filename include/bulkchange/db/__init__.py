"""Every read and write the pipeline makes to the AMOP database, as SQLAlchemy Core, one module per
aggregate: ``claims`` (who processes a bulk change), ``bulk_changes`` (the bulk change row),
``device_changes`` (device changes, their log and the call journal), ``inventory`` (devices and
rate plans), ``progress`` (counts and the roll-up), ``outbox`` (notifications); ``carrier_records``,
``onboarding``, ``sim_swap`` ... for the rest, ``views`` for the read-only UI queries.

The legacy stored procedures become these transactional functions; each statement compiles for
SQL Server, PostgreSQL and SQLite (tests/db proves it). Functions take a ``Connection`` inside
the caller's transaction unless they say otherwise; batch writes are executemany round trips,
not one statement per device. ``IN`` lists are chunked below SQL Server's 2,100-parameter limit
(``tables.chunks``).
"""
