"""Named grids to talk to, like kubectl/docker contexts: the config file and how a context is chosen.

The config is TOML in the user's config directory (``$FLOWMETAL_CONFIG`` overrides the path)::

    current = "staging"

    [contexts.staging]
    url = "https://grid.example.com"
    token_env = "STAGING_TOKEN"          # or: token_file = "/home/me/.secrets/staging"

``local`` is built in: the grid this machine runs under ``$FLOWMETAL_HOME``. It can't be added,
changed or removed. The config never holds a token, only where to find one; the token is read when
a command actually talks to the grid (``Context.token()``), and listings show ``env:VAR`` or
``file:PATH``.

Which context a command uses: ``--context NAME``, else ``$FLOWMETAL_CONTEXT``, else the current
one; the name ``default`` means the current one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from grid_local.errors import FlowmetalError
from grid_local.home import GridPaths

LOCAL = "local"
DEFAULT = "default"
CONFIG_ENV = "FLOWMETAL_CONFIG"
CONTEXT_ENV = "FLOWMETAL_CONTEXT"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ContextError(FlowmetalError):
    """A context that does not exist, can't be changed, or whose token can't be read."""


def config_path() -> Path:
    """Where the contexts live: ``$FLOWMETAL_CONFIG``, else ``<user config dir>/flowmetal/config.toml``."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("flowmetal")) / "config.toml"


@dataclass(frozen=True)
class Context:
    name: str
    url: str | None
    """The Client API's base URL; None for ``local`` until its grid is running."""
    token_env: str | None = None
    """Name of the environment variable holding the token."""
    token_file: str | None = None
    """Path of a file holding the token (its first line)."""
    is_local: bool = False

    @property
    def token_source(self) -> str | None:
        """Where the token comes from, safe to print: ``env:VAR`` or ``file:PATH``."""
        if self.token_env:
            return f"env:{self.token_env}"
        if self.token_file:
            return f"file:{self.token_file}"
        return None

    def token(self) -> str | None:
        """Read the token now (never stored or printed); None when the context uses none."""
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise ContextError(
                    f"context '{self.name}': the environment variable {self.token_env} holding its token is not set"
                )
            return value
        if self.token_file:
            try:
                lines = Path(self.token_file).expanduser().read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ContextError(
                    f"context '{self.name}': cannot read its token file {self.token_file}: {exc.strerror or exc}"
                ) from None
            value = lines[0].strip() if lines else ""
            if not value:
                raise ContextError(f"context '{self.name}': its token file {self.token_file} is empty")
            return value
        return None

    def to_json(self, current: bool = False) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "token": self.token_source,
                "local": self.is_local, "current": current}


def local_context() -> Context:
    return Context(LOCAL, local_url(), is_local=True)


def local_url() -> str | None:
    """The local grid's Client API URL, as its supervisor published it under ``$FLOWMETAL_HOME``.

    None when no local grid has published one; whether it still answers is the client's business.
    """
    try:
        state = GridPaths.current().read_state()
    except OSError:
        return None
    url = state.get("url") if isinstance(state, dict) else None
    return url if isinstance(url, str) and url else None


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ContextError(
            f"invalid context name '{name}': use letters, digits, '.', '_' and '-' (starting with a letter or digit)"
        )
    return name


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ContextError(f"invalid URL '{url}': expected http(s)://host[:port][/path]")
    return url.rstrip("/")


@dataclass
class Config:
    """The parsed config file."""

    path: Path
    current: str = LOCAL
    contexts: dict[str, Context] | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> "Config":
        path = path or config_path()
        if not path.exists():
            return cls(path, LOCAL, {})
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ContextError(f"cannot read the config file {path}: {exc}") from None
        contexts: dict[str, Context] = {}
        table = raw.get("contexts", {})
        if not isinstance(table, dict):
            raise ContextError(f"{path}: [contexts] must be a table")
        for name, entry in table.items():
            if not isinstance(entry, dict) or name in (LOCAL, DEFAULT):
                raise ContextError(f"{path}: [contexts.{name}] is not a valid context")
            url = entry.get("url")
            token_env, token_file = entry.get("token_env"), entry.get("token_file")
            if not isinstance(url, str) or not all(v is None or isinstance(v, str) for v in (token_env, token_file)):
                raise ContextError(f"{path}: [contexts.{name}] needs url (and token_env or token_file) as strings")
            contexts[name] = Context(name, url, token_env, token_file)
        current = raw.get("current", LOCAL)
        if not isinstance(current, str):
            raise ContextError(f"{path}: current must be a context name")
        return cls(path, current, contexts)

    def all(self) -> list[Context]:
        return [local_context(), *sorted((self.contexts or {}).values(), key=lambda c: c.name)]

    def get(self, name: str) -> Context:
        if name == DEFAULT:
            name = self.current
        if name == LOCAL:
            return local_context()
        try:
            return (self.contexts or {})[name]
        except KeyError:
            known = ", ".join(c.name for c in self.all())
            raise ContextError(f"no context named '{name}' (known: {known}; add one with `flowmetal context add`)") from None

    def save(self) -> None:
        """Write atomically, readable by the user only (it names where tokens are)."""
        lines = [f"current = {_toml_string(self.current)}", ""]
        for context in sorted((self.contexts or {}).values(), key=lambda c: c.name):
            lines.append(f"[contexts.{_toml_string(context.name)}]")
            lines.append(f"url = {_toml_string(context.url or '')}")
            if context.token_env:
                lines.append(f"token_env = {_toml_string(context.token_env)}")
            if context.token_file:
                lines.append(f"token_file = {_toml_string(context.token_file)}")
            lines.append("")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".config-", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write("\n".join(lines))
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _toml_string(value: str) -> str:
    # JSON's string escapes are all valid in a TOML basic string.
    return json.dumps(value, ensure_ascii=False)


def resolve_context(name: str | None = None) -> Context:
    """The context a command uses: ``name`` (--context), else $FLOWMETAL_CONTEXT, else the current one."""
    config = Config.load()
    chosen = name or os.environ.get(CONTEXT_ENV) or DEFAULT
    return config.get(chosen)


def add_context(name: str, url: str, token_env: str | None = None, token_file: str | None = None,
                replace: bool = False) -> Context:
    check_name(name)
    if name in (LOCAL, DEFAULT):
        raise ContextError(f"'{name}' is a reserved context name")
    if token_env and token_file:
        raise ContextError("give one of --token-env VAR or --token-file PATH, not both")
    if token_env and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", token_env):
        raise ContextError(f"invalid environment variable name '{token_env}'")
    if token_file:
        token_file = str(Path(token_file).expanduser().resolve())
    config = Config.load()
    contexts = dict(config.contexts or {})
    if name in contexts and not replace:
        raise ContextError(f"a context named '{name}' already exists (use --force to replace it)")
    contexts[name] = context = Context(name, check_url(url), token_env or None, token_file or None)
    config.contexts = contexts
    config.save()
    return context


def use_context(name: str) -> Context:
    config = Config.load()
    context = config.get(name)
    config.current = context.name
    config.save()
    return context


def remove_context(name: str) -> bool:
    """Remove a context; True when it was the current one (the current one becomes ``local``)."""
    if name in (LOCAL, DEFAULT):
        raise ContextError(f"the '{name}' context is built in and can't be removed")
    config = Config.load()
    contexts = dict(config.contexts or {})
    if name not in contexts:
        raise ContextError(f"no context named '{name}'")
    del contexts[name]
    config.contexts = contexts
    was_current = config.current == name
    if was_current:
        config.current = LOCAL
    config.save()
    return was_current
