"""The Bulk changes page in the Airflow UI (a FastAPI app mounted by the api-server; see ``app``)."""
