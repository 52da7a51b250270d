"""Name → builder registries for the model's interchangeable parts (fusions, audio branches).

Modelled on timm's ``register_model`` / ``create_model``: a part registers its builder under a
name with a decorator in its own module, and the model builds it with ``create(name, ...)``.
Each registry imports its package's modules on first use (``pkgutil`` over the package), so a
new fusion or branch is one new file in that package plus its name in the settings Literal
(settings stay importable without torch; a test keeps the two lists equal).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Builder = TypeVar("Builder", bound=Callable[..., Any])


class Registry(Generic[Builder]):
    """Builders of one kind of part, found in the modules of one package."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._builders: dict[str, Callable[..., Any]] = {}
        self._loaded = False

    def register(self, *names: str) -> Callable[[Builder], Builder]:
        """Decorator: register a class or factory under each of ``names``."""

        def decorate(builder: Builder) -> Builder:
            for name in names:
                if name in self._builders and self._builders[name] is not builder:
                    raise ValueError(f"{self.kind} '{name}' is registered twice")
                self._builders[name] = builder
            return builder

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        try:
            return self._builders[name]
        except KeyError:
            known = ", ".join(self.names())
            raise ValueError(f"unknown {self.kind} '{name}' (registered: {known})") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the part registered as ``name``."""
        return self.get(name)(*args, **kwargs)


FUSIONS: Registry = Registry("fusion", "emotions.models.fusions")
AUDIO_BRANCHES: Registry = Registry("audio branch", "emotions.models.audio")

register_fusion = FUSIONS.register
register_audio = AUDIO_BRANCHES.register
