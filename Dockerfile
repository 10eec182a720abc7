# The image every Airflow service in docker-compose.yaml runs: Airflow 3.3.2 with the project's
# runtime requirements only (no test packages), pinned by requirements.lock (docs/development.md);
# DAGs, plugins and include/ are mounted at run time.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt requirements.lock /
RUN pip install --no-cache-dir -r /requirements.txt -c /requirements.lock
# the project's provider: the carrier connection types (jasper, thingspace, ...) and their forms
COPY provider /provider
RUN pip install --no-cache-dir --no-deps /provider
