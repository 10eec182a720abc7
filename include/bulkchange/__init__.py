"""bulkchange: the Airflow-free core of the bulk device-change pipeline."""
