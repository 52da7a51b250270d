"""A real Label Studio server on loopback for a test module, from the project's ``.venv-ls``.

``make annotate-install`` (a prerequisite of ``make test``) installs Label Studio there and
leaves a migrated empty database in ``.venv-ls/template``; copying it spares each server
Label Studio's migrations (about a minute on two cores). Users and tokens are made by Label
Studio's own CLI: ``label-studio init`` creates the first user (and the organization, with
legacy API tokens on), ``label-studio start --username ...`` creates the second while the
server starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from liveserver import LiveServer, free_port, start_server

REPO = Path(__file__).resolve().parents[2]
LS_BIN = REPO / ".venv-ls" / "bin" / "label-studio"
TEMPLATE_DB = REPO / ".venv-ls" / "template" / "label_studio.sqlite3"
MISSING = f"Label Studio is not installed in {LS_BIN.parent.parent} (run `make annotate-install`)"


@dataclass(frozen=True)
class Annotator:
    email: str
    password: str
    token: str


@dataclass
class LabelStudioServer:
    server: LiveServer
    document_root: Path
    admin: Annotator
    second: Annotator
    init_s: float
    start_s: float

    @property
    def url(self) -> str:
        return self.server.url


def ls_env(data_dir: Path, document_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        LABEL_STUDIO_COLLECT_ANALYTICS="false",
        PYTHONUNBUFFERED="1",
    )
    env.pop("HOST", None)
    return env


def start_label_studio(base: Path, document_root: Path) -> LabelStudioServer:
    """Init a fresh Label Studio under ``base`` and start it; the caller stops ``.server``."""
    data_dir = base / "label-studio"
    data_dir.mkdir(parents=True)
    if TEMPLATE_DB.is_file():
        shutil.copyfile(TEMPLATE_DB, data_dir / TEMPLATE_DB.name)
    env = ls_env(data_dir, document_root)
    admin = Annotator("admin@example.com", "admin-pass-1", "admin-token-0001")
    second = Annotator("annotator2@example.com", "annot-pass-2", "annot-token-0002")
    began = time.monotonic()
    subprocess.run(
        [
            str(LS_BIN),
            "init",
            "--username",
            admin.email,
            "--password",
            admin.password,
            "--user-token",
            admin.token,
            "--enable-legacy-api-token",
        ],
        env=env,
        cwd=base,
        check=True,
        capture_output=True,
        timeout=600,
    )
    init_s = time.monotonic() - began
    port = free_port()
    began = time.monotonic()
    server = start_server(
        [
            str(LS_BIN),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--username",
            second.email,
            "--password",
            second.password,
            "--user-token",
            second.token,
        ],
        port=port,
        cwd=base,
        env=env,
        output=base / "label-studio.log",
        timeout_s=300,
        health="/health",
    )
    return LabelStudioServer(server, document_root, admin, second, init_s, time.monotonic() - began)
