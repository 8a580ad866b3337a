"""YAML files into validated models, with every problem reported at its file:line:column.

ruamel.yaml's round-trip loader keeps the position of every key and item; pydantic reports where
in the data a value is wrong; this module joins the two so that each error is one short paragraph::

    plans/demo.yaml:7:3: pipeline.max_stage: unknown key (did you mean 'max_stages'?)
      hint: allowed here: max_stages, allow_replication

Anything a user can put in the file (syntax errors, binary data, recursive aliases, odd keys) ends
as the caller's error class, never as another exception.
"""

from __future__ import annotations

import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from edgedeploy.errors import InputError, ManifestError, did_you_mean
from edgedeploy.runtime.vocab import MODEL_SUFFIXES
from edgedeploy.schemas.manifest import (
    SECRET_HINT,
    SECRET_KEYS,
    Manifest,
    TargetRef,
    is_board_path,
)

M = TypeVar("M", bound=BaseModel)

MAX_NODES = 100_000  # aliases can make a small file expand exponentially ("billion laughs")
MAX_DEPTH = 64
MAX_SHOWN_ERRORS = 10

_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
    "list": "a list", "dict": "a mapping", "model": "a mapping", "path": "a path",
    "literal": "one of the allowed values",
}


class _Problem(InputError):
    """Internal: a file-level problem before validation (turned into the caller's class)."""

    def __init__(self, line: int, col: int, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.line, self.col = line, col


def load_yaml_model(path: str | Path, model_cls: type[M], error_cls: type[InputError],
                    context: dict[str, Any] | None = None) -> M:
    """Read ``path`` as YAML and validate it as ``model_cls``; problems raise ``error_cls``.

    Relative paths inside the file resolve against its folder (``base_dir`` in the validation
    context). ``error_cls`` gets an ``issues`` list: dicts with file, line, column, field, message,
    hint (for ``--json`` renderings).
    """
    path = Path(path)
    what = model_cls.__name__.lower()
    try:
        tree = read_yaml(path)
        if tree is None:
            raise _Problem(1, 1, f"the file is empty: expected a {what} mapping",
                           f"`edgedeploy schema {what}` prints every field")
        if not isinstance(tree, dict):
            raise _Problem(*_node_pos(tree), f"expected a mapping of keys at the top level, "
                           f"got {_kind(tree)}", f"`edgedeploy schema {what}` prints every field")
        data = _plain(tree, [0], 0)
    except _Problem as exc:
        raise _error(error_cls, [_issue(path, exc.line, exc.col, "", exc.message, exc.hint)]) \
            from None
    ctx = {"base_dir": path.parent.resolve(), **(context or {})}
    try:
        return model_cls.model_validate(data, context=ctx)
    except ValidationError as exc:
        issues = [_describe(path, tree, model_cls, err) for err in exc.errors()]
        raise _error(error_cls, sorted(issues, key=lambda i: (i["line"], i["column"]))) from None


def load_manifest(path: str | Path) -> Manifest:
    """Load and validate a manifest; boards given as paths are loaded and checked too."""
    manifest = load_yaml_model(path, Manifest, ManifestError)
    manifest._source = Path(path).resolve()
    from edgedeploy.errors import TargetError
    from edgedeploy.schemas.target import Target

    for ref in manifest.targets.values():
        if is_board_path(ref.board):
            try:
                load_yaml_model(Path(ref.board), Target, TargetError)
            except InputError as exc:  # keeps the board file's own file:line in the message
                err = ManifestError(exc.message, exc.hint)
                err.issues = getattr(exc, "issues", [])  # type: ignore[attr-defined]
                raise err from None
    return manifest


def load_target_ref(path: str | Path, alias: str) -> TargetRef:
    """Only the ``targets.<alias>`` entry of a manifest, validated as a TargetRef.

    Why not :func:`load_manifest`: operational commands (status, logs, stop, rollback, releases,
    doctor) need where the board is, not the model; a manifest whose model file has moved (or
    whose other sections no longer validate) must not keep anyone from stopping a runner.
    Errors still name file:line:column of the manifest; an unknown alias lists the targets.
    """
    path = Path(path)
    try:
        tree = read_yaml(path)
        if not isinstance(tree, dict):
            where = _node_pos(tree) if tree is not None else (1, 1)
            raise _Problem(*where, "expected a mapping of keys at the top level",
                           "`edgedeploy schema manifest` prints every field")
        data = _plain(tree, [0], 0)
    except _Problem as exc:
        raise _error(ManifestError, [_issue(path, exc.line, exc.col, "", exc.message,
                                            exc.hint)]) from None
    targets = data.get("targets", {"local": {}})  # the manifest's own default
    if not isinstance(targets, dict):
        line, col = _position(tree, ("targets",), "")
        raise _error(ManifestError, [_issue(path, line, col, "targets",
                                            f"expected a mapping, got {_show(targets)}",
                                            "alias -> board and connection")])
    if alias not in targets:
        name = data.get("name")
        raise ManifestError(f"{path}: manifest {name!r} has no target {alias!r}"
                            f"{did_you_mean(alias, targets)}",
                            hint=f"its targets: {', '.join(map(str, targets)) or 'none'}")
    ctx = {"base_dir": path.parent.resolve()}
    try:
        return TargetRef.model_validate(targets[alias], context=ctx)
    except ValidationError as exc:
        issues = [_describe(path, tree, Manifest,
                            {**err, "loc": ("targets", alias, *err.get("loc", ()))})
                  for err in exc.errors()]
        raise _error(ManifestError, sorted(issues, key=lambda i: (i["line"] or 0,
                                                                  i["column"] or 0))) from None


def read_yaml(path: Path) -> Any:
    """The round-trip tree of ``path`` (None when empty); file and syntax problems as _Problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _Problem(0, 0, "file not found", "check the path (relative to the current "
                       f"folder: {Path.cwd()})") from None
    except IsADirectoryError:
        raise _Problem(0, 0, "is a folder, not a YAML file") from None
    except OSError as exc:
        raise _Problem(0, 0, f"cannot read: {exc.strerror or exc}") from None
    if path.suffix.lower() in MODEL_SUFFIXES:  # given where a manifest goes
        raise _Problem(0, 0, "a model file, not a YAML manifest",
                       f"write a manifest that names it (`edgedeploy init --model {path}`), or "
                       f"plan and measure it alone on this host: `edgedeploy bench {path}`")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise _Problem(line, 1, "binary file (NUL byte): expected UTF-8 YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _Problem(line, 1, "not UTF-8 text (binary file?): expected UTF-8 YAML") from None
    text = text.removeprefix("\ufeff")
    yaml = YAML(typ="rt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = "; ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise _Problem(line, col, f"YAML syntax error: {what}") from None
    except ReaderError as exc:
        line = text[: max(exc.position, 0)].count("\n") + 1
        raise _Problem(line, 1, f"unprintable character {exc.character!r} (binary file?)") \
            from None
    except RecursionError:
        raise _Problem(1, 1, "YAML nested too deeply") from None
    except Exception as exc:  # ruamel raises assorted errors on garbage; it is still user input
        raise _Problem(1, 1, f"cannot parse YAML: {type(exc).__name__}: {exc}"[:200]) from None


def _plain(node: Any, count: list[int], depth: int) -> Any:
    """ruamel's tree as plain dict/list/str/int/float, bounded against alias bombs and cycles."""
    count[0] += 1
    if count[0] > MAX_NODES or depth > MAX_DEPTH:
        raise _Problem(1, 1, "the YAML expands too much (deep nesting or recursive aliases)")
    if isinstance(node, dict):
        return {_plain_key(k): _plain(v, count, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, count, depth + 1) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for base in (str, int, float):  # ruamel's ScalarFloat, ScalarInt, quoted strings
        if isinstance(node, base):
            return base(node)
    return node


def _plain_key(key: Any) -> Any:
    if isinstance(key, str):
        return str(key)
    if isinstance(key, bool) or key is None:
        return key
    if isinstance(key, (int, float)):
        return str(key)  # `1: x` is key "1" to a schema that only has string keys
    return repr(key)


# ---- locating and describing pydantic errors -------------------------------------------------

def _describe(path: Path, tree: Any, model_cls: type[BaseModel], err: Any) -> dict[str, Any]:
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    line, col = _position(tree, loc, kind)
    field = _field_path(loc)
    message, hint = _message(model_cls, loc, err)
    return _issue(path, line, col, field, message, hint)


def _position(tree: Any, loc: tuple[Any, ...], kind: str) -> tuple[int, int]:
    """1-based position: the key for unknown keys and containers, the value for scalars."""
    node = tree
    key_pos = val_pos = _node_pos(tree)
    for part in loc:
        if part == "[key]":
            val_pos = key_pos
            continue
        if isinstance(node, CommentedMap):
            key = _find_key(node, part)
            if key is _MISSING:
                break
            key_pos = _lc(node.lc.key, key)
            val_pos = _lc(node.lc.value, key)
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            key_pos = val_pos = _lc(node.lc.item, part)
            node = node[part]
        else:
            break
    if kind == "extra_forbidden" or isinstance(node, (dict, list)):
        return key_pos
    return val_pos


_MISSING = object()


def _find_key(node: CommentedMap, part: Any) -> Any:
    if part in node:
        return part
    for key in node:
        if _plain_key(key) == part:
            return key
    return _MISSING


def _lc(getter: Any, key: Any) -> tuple[int, int]:
    try:
        line, col = getter(key)
        return int(line) + 1, int(col) + 1
    except Exception:  # flow/odd nodes may lack position data
        return 1, 1


def _node_pos(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return 1, 1
    return lc.line + 1, (lc.col or 0) + 1


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(model_cls: type[BaseModel], loc: tuple[Any, ...], err: Any) -> tuple[str, str | None]:
    kind, ctx, value = err.get("type", ""), err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        allowed = _allowed_keys(model_cls, loc[:-1])
        lowered = key.lower().replace("-", "_")
        if lowered in SECRET_KEYS or any(s in lowered for s in ("password", "passphrase")):
            return f"{key!r}: secrets are not accepted here", SECRET_HINT
        guess = did_you_mean(key, allowed)
        return f"unknown key {key!r}{guess}", (f"allowed here: {', '.join(allowed)}"
                                                if allowed else None)
    if kind == "missing":
        return "required key missing", _field_doc(model_cls, loc)
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        guess = did_you_mean(str(value), options, cutoff=0.5)
        return f"{_show(value)} is not one of: {', '.join(options)}{guess}", None
    if kind == "value_error":
        cause = ctx.get("error", err.get("msg", "invalid value"))
        return str(cause), getattr(cause, "hint", None)
    bound = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
             "less_than_equal": "<="}
    if kind in bound:
        limit = next(iter(ctx.values()), "?")
        return f"must be {bound[kind]} {limit}, got {_show(value)}", None
    for prefix, word in _TYPE_WORDS.items():
        if kind.startswith(f"{prefix}_") and kind.endswith(("_type", "_parsing",
                                                             "_from_float", "_fraction")):
            return f"expected {word}, got {_show(value)}", None
    if kind == "string_pattern_mismatch":
        return f"{_show(value)} has characters that are not allowed", \
            "use letters, digits, '_', '.' and '-' (it becomes part of file names)"
    return f"{err.get('msg', 'invalid value')}, got {_show(value)}", None


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "a list"
    return f"a {type(node).__name__} ({_show(node)})"


def _model_at(cls: type[BaseModel], parts: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``parts`` (walks fields, dicts, lists)."""
    t: Any = cls
    for part in parts:
        t = _unwrap(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            field = t.model_fields.get(str(part))
            if field is None:
                return None
            t = field.annotation
        elif typing.get_origin(t) is dict:
            t = typing.get_args(t)[1]
        elif typing.get_origin(t) is list:
            t = typing.get_args(t)[0]
        else:
            return None
    t = _unwrap(t)
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def _unwrap(t: Any) -> Any:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return args[0] if len(args) == 1 else t
    return t


def _allowed_keys(cls: type[BaseModel], parts: tuple[Any, ...]) -> list[str]:
    model = _model_at(cls, parts)
    return list(model.model_fields) if model else []


def _field_doc(cls: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    model = _model_at(cls, loc[:-1]) if loc else None
    field = model.model_fields.get(str(loc[-1])) if model else None
    return field.description if field is not None else None


def _issue(path: Path, line: int, col: int, field: str, message: str,
           hint: str | None) -> dict[str, Any]:
    return {"file": str(path), "line": line or None, "column": col or None, "field": field,
            "message": message, "hint": hint}


def format_issue(issue: dict[str, Any]) -> str:
    """``file:line:col: field: message`` (file alone when there is no position)."""
    where = issue["file"] if not issue["line"] else f"{issue['file']}:{issue['line']}:" \
        f"{issue['column']}"
    field = f" {issue['field']}:" if issue["field"] else ""
    return f"{where}:{field} {issue['message']}"


def _error(error_cls: type[InputError], issues: list[dict[str, Any]]) -> InputError:
    if len(issues) == 1:
        exc = error_cls(format_issue(issues[0]), issues[0]["hint"])
    else:
        shown = issues[:MAX_SHOWN_ERRORS]
        parts = [format_issue(i) + (f"\n  hint: {i['hint']}" if i["hint"] else "") for i in shown]
        if len(issues) > len(shown):
            parts.append(f"... and {len(issues) - len(shown)} more problems")
        exc = error_cls("\n".join(parts))
    exc.issues = issues  # type: ignore[attr-defined]
    return exc
