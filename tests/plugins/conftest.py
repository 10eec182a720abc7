from tests.dags.conftest import airflow_db, dagbag  # noqa: F401  (the Airflow metadata DB fixtures)
