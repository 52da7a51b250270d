"""Prefect flows over the DVC pipeline: `pipeline` (run the DAG), `retrain` (scheduled,
champion/challenger gate), `monitor` (drift; emits `emotions.drift.detected`), and their
deployments (`deployments`: `make schedule`, with the retrain trigger on the drift event).

DVC stays the single source of the DAG and of caching; a flow only decides *when* and *how*
stages run (retries, concurrency, logs, artifacts, schedules). Nothing under src/ imports this
package: stages run as processes (`dvc repro --single-item`, `dvc exp run`).

Importing the package sets the offline defaults every entry point needs, before Prefect reads
its settings: no analytics, and a generous start-up time for the ephemeral API server (a cold
start took 18 s on a 2-core machine, against Prefect's 20 s default).
"""

import os

for _key, _value in {
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_key, _value)
