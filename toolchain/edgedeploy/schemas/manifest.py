"""The manifest a user writes: which model, what to optimise, under which limits, on which boards.

Relative paths resolve against the manifest's own folder; :func:`edgedeploy.schemas.loader.
load_manifest` passes that folder as validation context (``base_dir``), so a manifest means the same
thing whatever the current directory. Secrets never live here: SSH goes through ssh-agent,
identity files and ~/.ssh/config.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgedeploy.runtime.errors import did_you_mean
from edgedeploy.runtime.vocab import MODEL_SUFFIXES
from edgedeploy.schemas.io import Io

Objective = Literal["throughput", "latency", "energy"]
ModelFormat = Literal["onnx", "tflite"]
#: ``model.precision``: fp32 is the model as given (see ModelSpec.precision).
Precision = Literal["fp32", "fp16", "int8", "auto"]
Transport = Literal["local", "ssh", "sim"]
HostKeyPolicy = Literal["strict", "accept-new"]

#: Keys that would hold a secret; the loader turns them into a pointed message.
SECRET_KEYS = frozenset({"password", "passwd", "passphrase", "pass", "secret", "token",
                         "ssh_password", "sudo_password", "key_passphrase"})
SECRET_HINT = ("edgedeploy never stores secrets: load your key into ssh-agent, or set "
               "identity_file (and per-host options in ~/.ssh/config)")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_PRIMITIVE = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+)?$")
#: ``targets.<alias>.python``: an absolute POSIX path, or a command name found on the board's PATH.
_BOARD_PYTHON = re.compile(r"^(/[A-Za-z0-9._+@=,:/-]+|[A-Za-z0-9][A-Za-z0-9._+-]*)$")
Alias = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=64)]


class HintedValueError(ValueError):
    """A validation failure with a hint line; the loader shows ``hint`` under the message."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context if isinstance(info.context, dict) else {}
    return Path(ctx.get("base_dir") or ".")


def _resolve(value: Path, info: ValidationInfo) -> Path:
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else _base_dir(info) / path))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # too long, NUL byte...
        return False


class ModelSpec(_Strict):
    """The network to deploy. ``format`` defaults from the suffix (.onnx, .tflite)."""

    format: ModelFormat | None = Field(default=None,
                                       description="onnx or tflite; default from suffix.")
    path: Path = Field(description="Model file, relative to the manifest's folder.")
    input_name: str | None = Field(default=None, min_length=1,
                                   description="Input to feed (default: the model's first input).")
    input_shape: list[int] | None = Field(
        default=None, min_length=1, max_length=8,
        description="Full input shape, fixing dynamic dims, in the model's own layout "
                    "(e.g. [1, 3, 224, 224] for an ONNX image, [1, 224, 224, 3] for a .tflite "
                    "one).")
    input_shapes: dict[str, list[int]] | None = Field(
        default=None, min_length=1,
        description="Shapes by input name, fixing dynamic dims of several inputs "
                    "(e.g. {image: [1, 3, 224, 224], mask: [1, 10]}).")
    batch: int = Field(default=1, ge=1, le=4096, description="Frames per inference.")
    precision: Precision = Field(
        default="fp32",
        description="fp32 plans the model as given; int8 quantizes the model (static int8, "
                    "per-channel weights: onnxruntime's quantizer for ONNX, the AI Edge "
                    "Quantizer for TFLite) and plans the int8 model when the accuracy guard "
                    "accepts it (exit 3 otherwise); auto plans int8 when accepted and measured "
                    "(unmeasured: priced by the board's profile) faster, else fp32 (a TFLite "
                    "model unmeasured, or an already quantized model: as given); fp16 (TFLite "
                    "models, on boards whose cores compute fp16) runs LiteRT's float "
                    "operators in fp16 when the accuracy guard accepts it (exit 3 otherwise).")
    calibration: Path | None = Field(
        default=None,
        description="An .npz of frames named like the model inputs, with a leading frame axis "
                    "(e.g. input: [F, 1, 3, 224, 224]), or a folder of images made into frames "
                    "by io.preprocess; the last fifth is held out for the accuracy guard. "
                    "Absent: seeded random frames (a weak calibration).")
    max_output_error: float = Field(
        default=0.05, gt=0,
        description="Accuracy guard: the largest max relative error of the int8 (or fp16) "
                    "model's outputs against fp32 on the held-out frames that is accepted.")
    min_top1_agreement: float | None = Field(
        default=None, ge=0, le=1,
        description="Accuracy guard for classifiers: the least share of held-out frames whose "
                    "arg-max class the int8 (or fp16) model must agree on with fp32 (outputs "
                    "shaped (N, classes); other outputs are bounded by max_output_error alone).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data  # `model: net.onnx`

    @field_validator("path")
    @classmethod
    def _path(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        fmt = info.data.get("format")
        if fmt is None and path.suffix.lower() not in MODEL_SUFFIXES:
            raise ValueError(f"cannot tell the format of {value.name!r} from its suffix; "
                             "name it .onnx or .tflite, or set model.format")
        if not _exists(path):
            raise HintedValueError(f"model file not found: {path}", _missing_model_hint(path))
        if path.is_dir():
            raise ValueError(f"model path is a folder, not a file: {path}")
        return path

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(d < 1 for d in value):
            raise ValueError(f"every dimension must be >= 1, got {value}")
        return value

    @field_validator("input_shapes")
    @classmethod
    def _shapes(cls, value: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
        for name, shape in (value or {}).items():
            if not shape or len(shape) > 8 or any(d < 1 for d in shape):
                raise ValueError(f"input {name!r}: give 1 to 8 dimensions, each >= 1, got {shape}")
        return value

    @model_validator(mode="after")
    def _format(self) -> ModelSpec:
        if self.format is None:
            self.format = MODEL_SUFFIXES[self.path.suffix.lower()]  # type: ignore[assignment]
        if self.input_shape is not None and self.input_shapes and not self.input_name:
            raise ValueError("input_shape and input_shapes both given: name the input "
                             "input_shape is for (model.input_name), or list it in input_shapes")
        if self.precision == "fp16" and self.format != "tflite":
            raise HintedValueError(
                f"precision fp16: {self.path.name} is an ONNX model; fp16 is computed by "
                "LiteRT's XNNPACK for TFLite models, and onnxruntime's CPU provider computes an "
                "fp16 ONNX model in fp32 (no faster)",
                "plan it fp32, or int8 / auto for a quantized plan; a .tflite of the same model "
                "can be planned fp16")
        return self

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(value, info)
        if path.is_dir():
            return path  # a folder of images (their count and shape are checked at plan)
        if path.suffix.lower() != ".npz":
            raise HintedValueError(f"calibration {path} is neither an .npz file nor a folder "
                                   "of images",
                                   "save frames with numpy.savez(path, <input name>=frames), "
                                   "a leading frame axis on each array, or name a folder of "
                                   "images (made into frames by io.preprocess)")
        if not _exists(path):
            raise HintedValueError(f"calibration file not found: {path}",
                                   "paths are relative to the manifest's folder")
        return path

    def shape_override(self) -> list[int] | dict[str, list[int]] | None:
        """What the importer's ``input_shape`` takes: ``input_shapes`` (with ``input_shape``
        under ``input_name`` when both are given), else ``input_shape``."""
        if not self.input_shapes:
            return self.input_shape
        shapes = dict(self.input_shapes)
        if self.input_shape is not None and self.input_name:
            shapes[self.input_name] = self.input_shape
        return shapes


class Constraints(_Strict):
    """Limits a plan must meet; absent means unconstrained."""

    max_latency_ms: float | None = Field(default=None, gt=0)
    min_throughput_fps: float | None = Field(default=None, gt=0)
    max_power_w: float | None = Field(default=None, gt=0)
    max_memory_mb: float | None = Field(
        default=None, gt=0, description="Bounds each stage process's peak memory (weights, "
                                        "live activations, workspace); exit 3 when no plan fits.")


class Pipeline(_Strict):
    max_stages: int = Field(default=4, ge=1, le=16)
    allow_replication: bool = True


class Primitives(_Strict):
    """Allow/deny lists of primitive names (``winograd_f4x3`` or ``winograd_f4x3/nchw``)."""

    allow: list[str] = Field(default_factory=list, description="Only these (empty: all).")
    deny: list[str] = Field(default_factory=list, description="Never these.")

    @field_validator("allow", "deny")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _PRIMITIVE.match(name):
                raise ValueError(f"{name!r} is not a primitive name like 'winograd_f4x3' or "
                                 "'im2col_gemm/nchw'")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> Primitives:
        both = sorted(set(self.allow) & set(self.deny))
        if both:
            raise ValueError(f"listed in both allow and deny: {', '.join(both)}")
        return self


def _missing_model_hint(path: Path) -> str:
    """Where a missing model could come from: a zoo model's name gets the command that writes
    it (the README's examples name zoo models), anything else the path rule."""
    from edgedeploy import zoo

    rule = "paths are relative to the manifest's folder"
    command = zoo.export_hint(path)
    return f"{command}; {rule}" if command else rule


class TargetRef(_Strict):
    """Where to deploy: a board descriptor plus how to reach it (nothing: this host)."""

    board: str = Field(default="local", min_length=1,
                       description="A name from targets/ ('jetson-tx2'), 'local', or a YAML path.")
    host: str | None = Field(default=None, min_length=1,
                             description="Host name or ~/.ssh/config alias.")
    hosts: list[str] | None = Field(default=None, min_length=1, description="A fleet of hosts.")
    canary: str | None = Field(
        default=None, min_length=1,
        description="The fleet host refinement measures on (default: the first of hosts); only "
                    "it stops while candidates are measured, and a refined release then rolls "
                    "out to every host with push's batching, failure budget and rollback.")
    user: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str = Field(default="~/edgedeploy", min_length=1, description="Remote install folder.")
    identity_file: Path | None = None
    host_key_policy: HostKeyPolicy = "strict"
    transport: Transport | None = Field(
        default=None, description="Default: ssh when a host is given, else local.")
    profile: Path | None = Field(
        default=None,
        description="A profile kept in the repository (`edgedeploy profile --target ALIAS "
                    "--export FILE`): this target's plans are calibrated from it and the "
                    "lockfile hashes it, so `plan --check` on a fresh clone reproduces them. "
                    "Without it the board's cached profile is used and only recorded.")
    python: str | None = Field(
        default=None, min_length=1,
        description="Python on the board that runs the runner, its health check, refine's "
                    "measurements and doctor: an absolute path there (/home/pi/venv/bin/python) "
                    "or a command on its PATH. Default: the board descriptor's ssh.python, else "
                    "python3 (this interpreter for a target on this machine).")

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        return {} if data is None else data  # `local:` with nothing under it

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        """A path on the board or a bare command: it is written into a file run.sh reads and
        run as one argv word, so no spaces, control characters, '~' or relative paths."""
        if value is None or _BOARD_PYTHON.fullmatch(value):
            return value
        raise HintedValueError(f"python {value!r} is neither an absolute path nor a command name",
                               "e.g. /home/pi/venv/bin/python or python3.11 (no spaces, no '~': "
                               "it is not expanded on the board)")

    @field_validator("board")
    @classmethod
    def _board(cls, value: str, info: ValidationInfo) -> str:
        if is_board_path(value):
            path = _resolve(Path(value), info)
            if not _exists(path):
                raise ValueError(f"board file not found: {path}")
            return str(path)
        from edgedeploy.schemas.target import catalog_names

        known = catalog_names()
        if value not in known:
            guess = did_you_mean(value, known)
            raise HintedValueError(f"unknown board {value!r}{guess}",
                                   f"known boards: {', '.join(known)}; or a path to a YAML file")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else _check_host(value)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(set(value)) != len(value):
            raise ValueError("hosts must not repeat")
        return [_check_host(h) for h in value]

    @field_validator("path")
    @classmethod
    def _install_path(cls, value: str, info: ValidationInfo) -> str:
        """A relative install folder of a target on this machine is relative to the manifest,
        like every other path in it; on a remote host it stays as written (its home)."""
        remote = info.data.get("host") is not None or info.data.get("hosts") is not None
        if remote or value.startswith(("~", "/")):
            return value
        return str(_resolve(Path(value), info))

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(value, info)
        if not _exists(path):
            raise HintedValueError(f"profile file not found: {path}",
                                   "write it with `edgedeploy profile --target ALIAS --export "
                                   "FILE` (paths are relative to the manifest's folder)")
        return path

    @field_validator("identity_file")
    @classmethod
    def _identity(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(value, info)
        if not _exists(path):
            raise ValueError(f"identity file not found: {path}")
        return path

    @model_validator(mode="after")
    def _transport(self) -> TargetRef:
        if self.host is not None and self.hosts is not None:
            raise ValueError("give either host or hosts, not both")
        remote = self.host is not None or self.hosts is not None
        if self.transport is None:
            self.transport = "ssh" if remote else "local"
        elif self.transport == "ssh" and not remote:
            raise ValueError("transport ssh needs host (or hosts)")
        elif self.transport != "ssh" and remote:
            raise ValueError(f"transport {self.transport} runs on this machine: drop host/hosts "
                             "or use transport ssh")
        if self.transport == "sim" and self.board == "local":
            raise ValueError("a simulated target needs a board descriptor, not 'local'")
        if self.canary is not None and self.canary not in self.all_hosts:
            raise HintedValueError(f"canary {self.canary!r} is not one of this target's hosts"
                                   f"{did_you_mean(self.canary, self.all_hosts)}",
                                   f"hosts: {', '.join(self.all_hosts) or '(none)'}")
        return self

    @property
    def canary_host(self) -> str | None:
        """Where refinement measures: ``canary``, else the first host (None: this machine)."""
        return self.canary or next(iter(self.all_hosts), None)

    def only(self, host: str) -> TargetRef:
        """This target narrowed to one of its hosts (the canary of a refinement)."""
        return self.model_copy(update={"host": host, "hosts": None, "canary": None})

    @property
    def all_hosts(self) -> list[str]:
        """The fleet (one host or several); empty for local and simulated targets."""
        if self.hosts:
            return list(self.hosts)
        return [self.host] if self.host else []


def is_board_path(value: str) -> bool:
    """A board given as a file path rather than a catalogue name."""
    return "/" in value or "\\" in value or value.endswith((".yaml", ".yml"))


def _check_host(value: str) -> str:
    if "@" in value:
        raise ValueError(f"{value!r}: put the user name in `user:`, not in the host")
    if any(ch.isspace() for ch in value) or value.startswith("-"):
        raise ValueError(f"{value!r} is not a host name")
    return value


class Refine(_Strict):
    """Budget of the on-device refinement pass."""

    budget_s: float = Field(default=300.0, gt=0)
    max_evals: int = Field(default=30, ge=1)
    frames_per_eval: int = Field(default=50, ge=1)


class Measure(_Strict):
    """Measure to decide: `plan` times a shortlist on a reachable target and keeps the winner."""

    enabled: bool = Field(default=True, description="Measure on the target when it can be "
                          "reached (this host, a sim: twin, an SSH board not serving); false "
                          "plans from the model alone.")
    budget_s: float = Field(default=60.0, gt=0, le=3600,
                            description="Seconds of measurement for the whole shortlist.")
    shortlist: int = Field(default=4, ge=1, le=16,
                           description="Predicted plans measured (the baselines come on top).")
    quick_profile_s: float = Field(default=30.0, ge=0, le=600,
                                   description="A board never profiled gets a quick profile of "
                                               "about this many seconds before its first "
                                               "measured plan (the model and calibration models "
                                               "run whole, then layer samples for what is left, "
                                               "a third at least), and a model never run whole "
                                               "on it is timed whole first (0: neither; plan "
                                               "from the prior or the profile alone).")
    winograd: bool = Field(default=True,
                           description="On this host, time the model's 3x3 convolutions in "
                                       "context as Winograd F(4,3) in onnxruntime, and run the "
                                       "model with those that were faster rewritten against "
                                       "the measured winner; kept only where it wins (fp32 "
                                       "ONNX).")


class Output(_Strict):
    plans_dir: Path = Field(default=Path("."), validate_default=True,
                            description="Where plan lockfiles go.")
    build_dir: Path = Field(default=Path("build"), validate_default=True,
                            description="Where bundles are built.")

    @field_validator("plans_dir", "build_dir")
    @classmethod
    def _dirs(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class Manifest(_Strict):
    """The whole deployment request; the input of ``plan``, ``build`` and ``push``."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64,
                      description="Names plan files: <name>.<alias>.plan.json.")
    model: ModelSpec = Field(description="The network: {path: model.onnx or .tflite, ...}.")
    objective: Objective = Field(default="throughput", description="What the planner optimises.")
    constraints: Constraints = Field(default_factory=Constraints)
    pipeline: Pipeline = Field(default_factory=Pipeline)
    primitives: Primitives = Field(default_factory=Primitives)
    targets: dict[Alias, TargetRef] = Field(
        default_factory=lambda: {"local": TargetRef()}, min_length=1,
        description="Alias -> board and connection. Default: {local: {board: local}}.")
    refine: Refine = Field(default_factory=Refine, description="On-device refinement budget.")
    measure: Measure = Field(default_factory=Measure,
                             description="Measure-to-decide when planning for a reachable target.")
    output: Output = Field(default_factory=Output, description="Where plans and bundles go.")
    io: Io = Field(default_factory=Io, description="Frames in, results out of the deployed "
                   "runner: source, sink, listen, preprocess (default: applications "
                   "through edgedeploy.client on a Unix socket).")

    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _defaults_resolve(cls, data: Any, info: ValidationInfo) -> Any:
        # Default sub-models skip validation, so resolve output dirs against base_dir here.
        if isinstance(data, dict) and "output" not in data:
            data = {**data, "output": {}}
        return data

    @property
    def source(self) -> Path | None:
        """The YAML file this manifest was loaded from (None when built in Python)."""
        return self._source

    def plan_file(self, alias: str) -> Path:
        """The lockfile of target ``alias``: ``<plans_dir>/<name>.<alias>.plan.json``."""
        return Path(self.output.plans_dir) / f"{self.name}.{alias}.plan.json"

    def bundle_dir(self, alias: str, suffix: str = "") -> Path:
        """Where ``build``/``push`` write target ``alias``'s bundle (``<build_dir>/<name>.<alias>``
        and e.g. ``.refined`` for the refined plan's)."""
        return Path(self.output.build_dir) / f"{self.name}.{alias}{suffix}"

    def target(self, alias: str) -> TargetRef:
        """The target entry ``alias``; a ManifestError with a did-you-mean otherwise."""
        if alias in self.targets:
            return self.targets[alias]
        from edgedeploy.errors import ManifestError

        guess = did_you_mean(alias, self.targets)
        raise ManifestError(f"manifest {self.name!r} has no target {alias!r}{guess}",
                            hint=f"its targets: {', '.join(self.targets)}")
