"""Screenshot of Label Studio's labeling page for the README (docs/label-studio-labeling.png).

Label Studio's pages need a logged-in session (the API token does not open them), so this logs
in with the e-mail and password over HTTP, hands the session cookie to headless Chromium
through the DevTools protocol and captures the labeling page of the project's first task.
A documentation tool, not a test: it needs Debian's `chromium` and a running `make annotate`
with a pushed queue.

    python docs/label_studio_screenshot.py --email you@example.com --password ... \\
        --project "emotions re-annotation" --out docs/label-studio-labeling.png
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from websockets.sync.client import connect


def login(url: str, email: str, password: str) -> requests.Session:
    """A session logged in through Label Studio's own login form (CSRF token included)."""
    session = requests.Session()
    session.trust_env = False
    session.get(f"{url}/user/login/", timeout=30).raise_for_status()
    response = session.post(
        f"{url}/user/login/",
        data={
            "email": email,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{url}/user/login/"},
        timeout=30,
    )
    response.raise_for_status()
    if "sessionid" not in session.cookies:
        raise SystemExit(f"login as {email} failed (wrong password?)")
    return session


def first_task_page(session: requests.Session, url: str, title: str) -> str:
    projects = session.get(f"{url}/api/projects", params={"title": title}, timeout=30).json()
    project = next(p for p in projects["results"] if p["title"] == title)
    tasks = session.get(f"{url}/api/tasks", params={"project": project["id"]}, timeout=30).json()
    task = tasks["tasks"][0]
    return f"{url}/projects/{project['id']}/data?tab=&task={task['id']}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def capture(page: str, cookies: dict[str, str], out: Path, width: int, height: int, wait_s: float):
    """Open ``page`` in headless Chromium with ``cookies`` set and save a PNG screenshot."""
    port = _free_port()
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    browser = subprocess.Popen(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--autoplay-policy=no-user-gesture-required",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                target = next(t for t in targets if t["type"] == "page")
                break
            except (requests.RequestException, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        ids = itertools.count(1)
        with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:

            def call(method: str, **params):
                number = next(ids)
                ws.send(json.dumps({"id": number, "method": method, "params": params}))
                while True:
                    message = json.loads(ws.recv())
                    if message.get("id") == number:
                        return message.get("result", {})

            host = urlsplit(page).hostname
            call("Network.enable")
            for name, value in cookies.items():
                call("Network.setCookie", name=name, value=value, domain=host, path="/")
            call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            call("Page.enable")
            call("Page.navigate", url=page)
            time.sleep(wait_s)
            shot = call("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--email", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--project", default="emotions re-annotation")
    parser.add_argument("--out", default="docs/label-studio-labeling.png")
    parser.add_argument("--wait-s", type=float, default=12.0, help="time the page gets to render")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    session = login(url, args.email, args.password)
    page = first_task_page(session, url, args.project)
    capture(page, session.cookies.get_dict(), Path(args.out), 1280, 900, args.wait_s)
    print(f"{page} -> {args.out}")


if __name__ == "__main__":
    main()
