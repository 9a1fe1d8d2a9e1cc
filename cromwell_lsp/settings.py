"""The user's settings: one typed dataclass with defaults, read from LSP
initializationOptions and workspace/didChangeConfiguration (and mirrored by the VS Code
extension's `cromwell.*` settings).

`Settings.parse(raw)` never raises: it returns the settings it could read plus a list of
messages, one per invalid value, which the server shows to the user; an invalid value
keeps its previous (or default) value.  Unknown keys are reported too, so a typo in an
editor config does not silently do nothing.  Keys may be camelCase (editor convention)
or snake_case.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Features:
    inline_completion: bool = True
    completion: bool = True
    code_actions: bool = True
    hover: bool = True
    diagnostics: bool = True


@dataclass(frozen=True)
class Settings:
    model_path: str = ""               # empty: the packaged default model
    threads: int = 0                   # 0: every usable core
    max_tokens: int = 64               # per completion
    temperature: float = 0.0           # 0: greedy
    debounce_ms: int = 30              # wait after a keystroke before computing
    idle_ms: int = 800                 # pre-fill an edited document after this pause (0: off)
    cache_budget_mb: int = 512         # KV caches of all documents together
    context_window: int = 2048         # tokens of prompt given to the model
    kv_cache: bool = True              # off: every request prefills its whole prompt (benchmarks)
    syntax_guard: bool = True          # Python completions refuse tokens no valid code has
    alternatives: int = 2              # Python blocks (completions, function bodies) that break the code: tries more
    features: Features = field(default_factory=Features)

    _LIMITS = {
        "threads": (0, 256), "max_tokens": (1, 4096), "temperature": (0.0, 2.0),
        "debounce_ms": (0, 5000), "idle_ms": (0, 600000), "cache_budget_mb": (16, 65536),
        "context_window": (64, 32768), "alternatives": (0, 8),
    }

    @classmethod
    def parse(cls, raw, base: "Settings | None" = None) -> tuple["Settings", list[str]]:
        """Settings from a JSON-like dict on top of `base`; (settings, error messages)."""
        base = base or cls()
        if raw is None:
            return base, []
        if not isinstance(raw, dict):
            return base, [f"settings must be an object, got {type(raw).__name__}"]
        if isinstance(raw.get("cromwell"), dict):  # {"cromwell": {...}} from didChangeConfiguration
            raw = raw["cromwell"]
        errors: list[str] = []
        values = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            name = _snake(key)
            if name not in names:
                errors.append(f"unknown setting {key!r} (ignored)")
            elif name == "features":
                values[name] = _parse_features(value, base.features, errors)
            else:
                ok = _check(name, value, getattr(base, name), cls._LIMITS.get(name), errors)
                if ok is not None:
                    values[name] = ok
        return dataclasses.replace(base, **values), errors


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", str(key)).lower()


def _check(name, value, current, limits, errors):
    expected = type(current)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        errors.append(f"setting {name} must be {expected.__name__}, got {value!r} "
                      f"(keeping {current!r})")
        return None
    if limits and not (limits[0] <= value <= limits[1]):
        errors.append(f"setting {name}={value!r} is outside {limits[0]}..{limits[1]} "
                      f"(keeping {current!r})")
        return None
    return value


def _parse_features(value, current: Features, errors) -> Features:
    if not isinstance(value, dict):
        errors.append(f"setting features must be an object, got {value!r}")
        return current
    changes = {}
    names = {f.name for f in dataclasses.fields(Features)}
    for key, flag in value.items():
        name = _snake(key)
        if name not in names:
            errors.append(f"unknown feature {key!r} (ignored)")
        elif not isinstance(flag, bool):
            errors.append(f"feature {name} must be true or false, got {flag!r}")
        else:
            changes[name] = flag
    return dataclasses.replace(current, **changes)
