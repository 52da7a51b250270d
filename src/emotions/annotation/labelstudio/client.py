"""A small client of the Label Studio REST API: only the calls the queue needs.

Plain HTTP (httpx) rather than ``label-studio-sdk``: the SDK pins its own httpx/pydantic
ranges, and the handful of endpoints used here (projects, local-files storage, task import,
export, users) are stable parts of the documented API. Every failure a user can cause (no
server, a wrong token, a rejected request) becomes an ``AnnotateError`` naming the call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx


class AnnotateError(RuntimeError):
    """Label Studio cannot do what was asked; the message is what the user reads."""


def token_from_env(name: str) -> str:
    """The API token from the environment variable ``name`` (never from a tracked file)."""
    token = os.environ.get(name, "").strip()
    if not token:
        raise AnnotateError(
            f"no Label Studio API token: set {name} (Label Studio: Account & Settings → "
            "Legacy Token, or the --user-token given to `label-studio init`)"
        )
    return token


class LabelStudio:
    """One Label Studio server, authenticated with a (legacy) API token."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 60.0, page_size: int = 100):
        self.url = url.rstrip("/")
        self.page_size = page_size
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Token {token}"},
            timeout=timeout_s,
            trust_env=False,  # loopback server: never through a proxy
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of one API call; raises AnnotateError with the server's own words on failure."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise AnnotateError(
                f"no Label Studio at {self.url} ({error.__class__.__name__}: {error}); "
                "start it with `make annotate`"
            ) from None
        if response.status_code in (401, 403):
            raise AnnotateError(
                f"Label Studio refused the token ({method} {path}: {response.status_code}); "
                "check the API token and that legacy tokens are enabled for the organization"
            )
        if response.status_code >= 400:
            raise AnnotateError(
                f"Label Studio: {method} {path} answered {response.status_code}: "
                f"{response.text[:500]}"
            )
        return response.json() if response.content else None

    def _pages(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Items of a paginated list endpoint (``results`` / ``tasks`` / a bare list)."""
        page = 1
        while True:
            try:
                body = self.request(
                    "GET", path, params={**params, "page": page, "page_size": self.page_size}
                )
            except AnnotateError as error:
                if page > 1 and " 404:" in str(error):
                    return  # Label Studio answers 404 for the page after the last
                raise
            if isinstance(body, list):
                yield from body
                return
            items = body.get("results", body.get("tasks", []))
            yield from items
            if not items or not body.get("next", len(items) == self.page_size):
                return
            page += 1

    # -- projects -----------------------------------------------------------------------------

    def find_project(self, title: str) -> dict[str, Any] | None:
        """The project with exactly this title (the first, by id), or None."""
        matches = [p for p in self._pages("/api/projects", {"title": title}) if p["title"] == title]
        return min(matches, key=lambda p: p["id"]) if matches else None

    def create_project(self, title: str, label_config: str, description: str) -> dict[str, Any]:
        return self.request(
            "POST",
            "/api/projects",
            json={"title": title, "label_config": label_config, "description": description},
        )

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        return self.request("PATCH", f"/api/projects/{project_id}", json=fields)

    # -- storage, tasks -----------------------------------------------------------------------

    def local_storages(self, project_id: int) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/storages/localfiles", params={"project": project_id}))

    def create_local_storage(self, project_id: int, path: str, title: str) -> dict[str, Any]:
        """A Local Files import storage over ``path`` (absolute, below the document root).

        Label Studio serves ``/data/local-files/?d=...`` only from folders such a storage
        covers; it is never synced (the tasks are imported with their queue metadata), so its
        regex matches nothing.
        """
        return self.request(
            "POST",
            "/api/storages/localfiles",
            json={
                "project": project_id,
                "path": path,
                "title": title,
                "use_blob_urls": True,
                "regex_filter": "^$",
            },
        )

    def tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        return self._pages("/api/tasks", {"project": project_id, "fields": "all"})

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> int:
        """Import task dicts (``{"data": {...}}``); returns how many Label Studio created."""
        if not tasks:
            return 0
        body = self.request("POST", f"/api/projects/{project_id}/import", json=list(tasks))
        return int(body.get("task_count", len(tasks)))

    def export(self, project_id: int) -> Any:
        """Label Studio's JSON export of the project's finished tasks (with annotations), as
        the server sent it: the caller checks its shape (``pull.checked_export``)."""
        return self.request(
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "false"},
        )

    def users(self) -> dict[int, str]:
        """User id → e-mail (what a vote's annotator is called)."""
        return {int(u["id"]): str(u.get("email") or "") for u in self.request("GET", "/api/users")}
