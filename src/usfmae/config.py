"""Dataclass configuration: the single source of truth for every stage's settings.

Each stage defines a flat dataclass whose fields carry their help text::

    @dataclass
    class PretrainConfig:
        epochs: int = opt(10, "passes over the data")
        model: str = opt("mae_vit_tiny_patch8", "registered model name", choices=list_models)

        def __post_init__(self):
            check(self.epochs > 0, "epochs must be positive")

The CLI builds its flags from these fields (``add_dataclass_arguments``), a YAML preset may set
any subset (``--config FILE``), flags override the preset, and the resolved config is saved next
to every run (``save_config``) and inside every checkpoint (``asdict``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from usfmae.errors import ConfigError
from usfmae.fileio import atomic_open

T = TypeVar("T")


def opt(default: Any, help: str, choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None) -> Any:
    """A dataclass field with help text (and optional allowed values) for ``--help``."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ConfigError(message)


def _choices(field: dataclasses.Field) -> Sequence[Any] | None:
    choices = field.metadata.get("choices")
    return list(choices()) if callable(choices) else choices


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """Add one ``--flag`` per field of ``cls``; unset flags stay absent from the namespace.

    Field ``mask_ratio`` becomes ``--mask-ratio``. Booleans take ``--flag``/``--no-flag``;
    tuples and lists take several values (``--mean 0.5 0.5 0.5``).
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        tp, optional = _unwrap_optional(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        help_text = help_text.replace("%", "%%")  # argparse %-formats help strings
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs.pop("help")
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text, dest=field.name,
                                default=argparse.SUPPRESS)
            continue
        if origin in (tuple, list):
            item_types = [a for a in typing.get_args(tp) if a is not Ellipsis]
            kwargs["type"] = item_types[0] if item_types else str
            kwargs["nargs"] = "+"
        elif tp in (int, float, str):
            kwargs["type"] = tp
        elif typing.get_origin(tp) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        else:
            kwargs["type"] = str
        if optional and kwargs.get("type") in (int, float):
            base = kwargs["type"]
            kwargs["type"] = lambda s, base=base: None if s.lower() == "none" else base(s)
        choices = _choices(field)
        if choices is not None:
            kwargs["choices"] = choices
        parser.add_argument(flag, **kwargs)


def _coerce(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)} for {cls.__name__}")
    out = {}
    for key, value in values.items():
        tp, optional = _unwrap_optional(hints[key])
        if typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        if not (value is None and optional):
            problem = _type_problem(tp, value)
            if problem:
                raise ConfigError(f"{source}: {key} {problem}, got {value!r}")
        out[key] = float(value) if tp is float and isinstance(value, int) else value
    return out


def _type_problem(tp: Any, value: Any) -> str | None:
    """Why ``value`` (from YAML) cannot be a field of type ``tp``, or None when it can."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"
    if tp is str:
        return None if isinstance(value, str) else "must be text"
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        return None if value in allowed else f"must be one of {', '.join(map(str, allowed))}"
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return "must be a list"
        item_types = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if item_types and any(_type_problem(item_types[0], v) for v in value):
            return f"must be a list of {getattr(item_types[0], '__name__', item_types[0])}"
    return None


def build_config(cls: type[T], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults <- YAML preset <- explicit overrides; validation runs in ``cls.__post_init__``.

    ``yaml_path`` is a YAML file or the name of a preset shipped with usfmae (:func:`find_preset`).
    """
    values: dict[str, Any] = {}
    if yaml_path is not None:
        path = find_preset(yaml_path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of setting: value")
        values.update(_coerce(cls, loaded, str(path)))
    if overrides:
        values.update(_coerce(cls, overrides, "command line"))
    return cls(**values)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build ``cls`` from a namespace made by a parser with ``add_dataclass_arguments``.

    ``args.config`` (if present) names a YAML preset; flags given on the command line win.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return build_config(cls, getattr(args, "config", None), overrides)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-types dict of a config dataclass (tuples become lists), for YAML/JSON/checkpoints."""
    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(to_dict(cfg), handle, sort_keys=False)


# ----------------------------------------------------------------------------------------- presets
# Presets ship inside the package (usfmae/configs/<kind>/<name>.yaml; the repository's configs/ links
# there), so `--config tiny_cpu` works after `pip install` wherever the command runs.
PRESET_ROOT = Path(__file__).resolve().parent / "configs"


def list_presets() -> dict[str, Path]:
    """Shipped presets: ``{"pretrain/tiny_cpu": path, ...}``, sorted by name."""
    if not PRESET_ROOT.is_dir():
        return {}
    return dict(sorted((f"{p.parent.name}/{p.stem}", p) for p in PRESET_ROOT.glob("*/*.yaml")))


def preset_summary(path: Path) -> str:
    """The first comment line of a preset (what it is for), without the ``#``."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def find_preset(name_or_path: str | Path) -> Path:
    """A YAML file, or a shipped preset by name: ``tiny_cpu``, ``pretrain/tiny_cpu`` or the repository
    path ``configs/pretrain/tiny_cpu.yaml`` (found in the package when there is no such file here).

    Raises:
        ConfigError: neither a file nor a preset; the message lists the presets.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    key = str(name_or_path).replace("\\", "/").removesuffix(".yaml").removesuffix(".yml")
    key = key.rsplit("configs/", 1)[-1]
    presets = list_presets()
    if key in presets:
        return presets[key]
    matches = [p for name, p in presets.items() if name.rsplit("/", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(presets) or "none"
    reason = "names several presets" if matches else "config file not found"
    raise ConfigError(f"{name_or_path}: {reason}; presets shipped with usfmae: {known} (list: usfmae presets)")
