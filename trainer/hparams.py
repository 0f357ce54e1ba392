"""The trainer's hyperparameters, defined once: name, type, default, trainer flag, doc and rule.

Everything else is derived from ``HPARAMS``: the trainer's command line (``add_arguments``), its
config object (``trainer.model.TrainConfig``), the pipelines' train parameters and their docs,
the Vertex AI CustomJob and tuning arguments (``trainer_argv``) and the sweep's hyperparameter
sets (``parse_sets``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StrictStr, ValidationError, create_model


class HyperparameterError(ValueError):
    """A hyperparameter value or set that the trainer cannot take; the message names the field."""


def parse_hidden_units(value: Any) -> tuple[int, ...]:
    """``"128 64 32"``, ``"128,64"`` or ``[128, 64]`` → ``(128, 64, 32)``; positive sizes only."""
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(u, int) and not isinstance(u, bool) for u in value):
            raise ValueError(f'expected layer sizes like "64 32", got {value!r}')
        units = [int(u) for u in value]
    elif isinstance(value, str):
        try:
            units = [int(u) for u in value.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f'expected layer sizes like "64 32", got {value!r}') from None
    else:
        raise ValueError(f'expected layer sizes like "64 32", got {type(value).__name__} {value!r}')
    if not units or any(u <= 0 for u in units):
        raise ValueError(f'expected positive layer sizes like "64 32", got {value!r}')
    return tuple(units)


@dataclass(frozen=True)
class HParam:
    """One hyperparameter. ``type`` is how pipelines and sweep sets carry it (``hidden_units`` is
    the text "64 32"); ``parse`` turns that value into what the trainer's config holds."""

    name: str
    type: type
    default: Any
    flag: str
    doc: str
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive
    maximum: float | None = None  # inclusive
    parse: Callable[[Any], Any] | None = None

    def check(self, value: Any) -> Any:
        """``value`` as the trainer's config holds it; ValueError saying what was expected."""
        if self.parse is not None:
            return self.parse(value)
        if self.above is not None and not value > self.above:
            raise ValueError(f"must be > {self.above:g}, got {value!r}")
        if self.minimum is not None and not value >= self.minimum:
            raise ValueError(f"must be >= {self.minimum:g}, got {value!r}")
        if self.maximum is not None and not value <= self.maximum:
            raise ValueError(f"must be <= {self.maximum:g}, got {value!r}")
        return value

    def text(self, value: Any) -> str:
        """The value as the trainer's flag takes it on a command line."""
        if self.parse is parse_hidden_units:
            return " ".join(str(u) for u in parse_hidden_units(value))
        return str(value)


HPARAMS: tuple[HParam, ...] = (
    HParam("train_steps", int, 2000, "train_steps", "Training steps (batches) of the real run.", above=0),
    HParam("batch_size", int, 512, "train_batch_size", "Training batch size (the lab's --train_batch_size).", above=0),
    HParam(
        "hidden_units",
        str,
        "64 32",
        "hidden_units",
        'Hidden layer sizes, space separated (the lab\'s --hidden_units), e.g. "64 32".',
        parse=parse_hidden_units,
    ),
    HParam("learning_rate", float, 0.003, "learning_rate", "Adam learning rate.", above=0, maximum=10),
    HParam("seed", int, 42, "seed", "Random seed for the split sample, initialisation and shuffling."),
    HParam(
        "embedding_dim",
        int,
        0,
        "embedding_dim",
        "Feature switch: size of the learned pickup/dropoff grid-cell embeddings (0 = off).",
        minimum=0,
    ),
    HParam(
        "towers", int, 5, "towers", "Independently trained DNN heads whose fares are averaged (1 = one DNN).", above=0
    ),
)

BY_NAME: dict[str, HParam] = {h.name: h for h in HPARAMS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
DEFAULTS: dict[str, Any] = {h.name: h.default for h in HPARAMS}
FLAGS: dict[str, str] = {h.name: h.flag for h in HPARAMS}  # name → trainer flag (without --)
SWEPT_NAMES: tuple[str, ...] = tuple(n for n in NAMES if n != "seed")  # what a sweep's table compares


def config_defaults() -> dict[str, Any]:
    """flag → default as the trainer's config holds it (``train_batch_size``: 512, ``hidden_units``: (64, 32))."""
    return {h.flag: h.check(h.default) for h in HPARAMS}


def tuner_parameters() -> dict[str, tuple[type, Any]]:
    """name → (type, default): what a hyperparameter-tuning grid may name."""
    return {h.name: (h.type, h.default) for h in HPARAMS}


def docs(names: Sequence[str] = NAMES) -> dict[str, str]:
    return {name: BY_NAME[name].doc for name in names}


# -- the trainer's command line --------------------------------------------------------------------
def _argparse_type(h: HParam) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = text if h.type is str else h.type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {h.type.__name__}") from None
        try:
            return h.check(value)
        except ValueError as exc:  # the hyperparameter's rule, in its own words
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    convert.__name__ = h.type.__name__  # argparse names the type in its messages
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--<flag>`` per hyperparameter, typed, checked and defaulted as defined here."""
    for h in HPARAMS:
        parser.add_argument(f"--{h.flag}", type=_argparse_type(h), default=h.check(h.default), help=h.doc)


def flags(values: Mapping[str, Any]) -> list[str]:
    """``--<flag> <value>`` for each hyperparameter given by name, in definition order."""
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise HyperparameterError(f"unknown hyperparameter {', '.join(unknown)}; valid names: {', '.join(NAMES)}")
    return [arg for h in HPARAMS if values.get(h.name) is not None for arg in (f"--{h.flag}", h.text(values[h.name]))]


def trainer_argv(values: Mapping[str, Any] | None = None) -> list[str]:
    """``--<flag> <value>`` for every hyperparameter (given by name; the rest take their defaults)."""
    return flags({**DEFAULTS, **{k: v for k, v in (values or {}).items() if v is not None}})


# -- the sweep's hyperparameter sets ---------------------------------------------------------------
def no_text_or_bool(value: Any) -> Any:
    # pydantic's lax mode would read "0.01" or True as numbers; in a set that is a mistake worth
    # reporting. Integral floats (JSON/protobuf numbers) stay accepted.
    if isinstance(value, (str, bytes, bool)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    return value


def _set_field(h: HParam) -> tuple[Any, Any]:
    if h.parse is parse_hidden_units:  # a set may give [64, 32]; it is carried as "64 32"
        return Annotated[StrictStr, BeforeValidator(h.text)], h.default
    return Annotated[h.type, BeforeValidator(no_text_or_bool), AfterValidator(h.check)], h.default


HyperParams: type[BaseModel] = create_model(
    "HyperParams", __config__=ConfigDict(extra="forbid"), **{h.name: _set_field(h) for h in HPARAMS}
)


def _format_errors(error: ValidationError, where: str) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown name"
        got = "" if "got " in message else f" (got {item.get('input')!r})"
        lines.append(f"{where}{location}: {message}{got}")
    return "; ".join(lines)


def parse_sets(sets: Sequence[Mapping[str, Any]], *, seed: int | None = None) -> list[dict]:
    """Check every hyperparameter set; returns them complete (defaults filled) with exact types.

    ``seed`` is the default for sets that do not name their own. Raises HyperparameterError naming
    the set (by position) and the field of the first bad set.
    """
    if not isinstance(sets, (list, tuple)) or not sets:
        raise HyperparameterError(
            f"no hyperparameter sets: expected a non-empty list of dicts like {dict(list(DEFAULTS.items())[:4])}"
        )
    checked = []
    for index, values in enumerate(sets):
        if not isinstance(values, Mapping):
            raise HyperparameterError(
                f"hyperparameter set {index}: expected a dict, got {type(values).__name__} {values!r}"
            )
        values = dict(values)
        if seed is not None:
            values.setdefault("seed", seed)
        try:
            checked.append(HyperParams(**values).model_dump())
        except ValidationError as exc:
            where = f"hyperparameter set {index}: "
            raise HyperparameterError(_format_errors(exc, where) + f"; valid names: {', '.join(NAMES)}") from None
    return checked
