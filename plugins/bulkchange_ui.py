"""Airflow plugin: the "Bulk changes" page in the Airflow UI, and the carriers' callback endpoint.

The api-server mounts the page and its JSON API (``bulkchange_plugins.ui.app``) at ``/bulkchange``;
the navigation entry opens it inside the UI. It also mounts the endpoint ThingSpace posts request
results to (``bulkchange_plugins.carrier_callbacks``, ``/carrier-callbacks``; authenticated by each
account's shared secret, not by an Airflow login). Only this file declares a plugin (``.airflowignore``
keeps Airflow from loading the package's modules as plugin files). Changes here need an
api-server restart.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

import bulkchange_plugins  # noqa: F401  (puts include/ on sys.path when PYTHONPATH lacks it)
from bulkchange_plugins.carrier_callbacks import URL_PREFIX as CALLBACKS_PREFIX
from bulkchange_plugins.carrier_callbacks import app as callbacks_app
from bulkchange_plugins.ui.airflow_rest import RootAppMiddleware
from bulkchange_plugins.ui.app import URL_PREFIX, app


class BulkChangesPlugin(AirflowPlugin):
    name = "bulkchange_ui"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Bulk changes"},
                    {"app": callbacks_app, "url_prefix": CALLBACKS_PREFIX, "name": "Carrier callbacks"}]
    # lets the page's actions reach Airflow's REST API in process, as the caller
    fastapi_root_middlewares = [{"middleware": RootAppMiddleware, "name": "bulkchange_root_app"}]
    external_views = [{
        "name": "Bulk changes",
        "href": f"{URL_PREFIX}/",
        "destination": "nav",
        "url_route": "bulk-changes",
        "nav_top_level": True,
        "icon": f"{URL_PREFIX}/static/icon.svg",
    }]
