"""The outcome of validation as data: counts per split, the smoke run, the whole result and the error carrying it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel, model_serializer

SPLITS = ("train", "valid")


class ValidationError(RuntimeError):
    """The data failed validation; ``.result`` holds the full ValidationResult when one exists."""

    def __init__(self, message: str, result: ValidationResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class ShardReport(BaseModel):
    """The counts of one input shard of a sharded split."""

    source: str
    clean_path: str
    lines: int
    rows: int
    clean: int
    quarantined: int
    header_lines: int
    blank_lines: int
    reasons: dict[str, int]
    final_newline: bool
    clean_crc32c: str


class SplitReport(BaseModel):
    name: str
    source: str
    clean_path: str
    lines: int  # physical lines read
    rows: int  # lines that are neither header nor blank
    clean: int
    quarantined: int
    header_lines: int
    blank_lines: int
    reasons: dict[str, int]
    bad_fraction: float
    final_newline: bool  # False when the last line has no newline (maybe truncated)
    clean_crc32c: str  # of the clean bytes (of a sharded split: its clean shards one after another)
    # A sharded split (a directory or list of shards): one report per shard, clean_path a directory.
    shards: list[ShardReport] | None = None

    @model_serializer(mode="wrap")
    def _without_shards_for_one_file(self, handler):
        data = handler(self)
        if self.shards is None:
            data.pop("shards", None)
        return data


class SmokeResult(BaseModel):
    steps: int
    train_rows: int
    valid_rows: int
    export_dir: str
    instance: dict
    prediction: float
    seconds: float


class ValidationResult(BaseModel):
    layout: str
    train: SplitReport
    valid: SplitReport
    max_bad_fraction: float
    passed: bool
    failures: list[str]
    quarantine: str  # local path of the quarantine JSONL
    quarantine_uri: str | None = None
    report_path: str
    report_markdown: str
    smoke: SmokeResult | None = None

    @property
    def splits(self) -> dict[str, SplitReport]:
        return {"train": self.train, "valid": self.valid}

    @property
    def clean_train(self) -> Path:
        return Path(self.train.clean_path)

    @property
    def clean_valid(self) -> Path:
        return Path(self.valid.clean_path)

    @property
    def clean_train_rows(self) -> int:
        return self.train.clean

    @property
    def clean_valid_rows(self) -> int:
        return self.valid.clean

    @property
    def total_rows(self) -> int:
        return self.train.rows + self.valid.rows

    @property
    def clean_rows(self) -> int:
        return self.train.clean + self.valid.clean

    @property
    def bad_rows(self) -> int:
        return self.train.quarantined + self.valid.quarantined

    @property
    def bad_by_reason(self) -> dict[str, int]:
        total = Counter(self.train.reasons) + Counter(self.valid.reasons)
        return dict(sorted(total.items()))

    def metadata(self) -> dict:
        return {
            "layout": self.layout,
            "rows": self.total_rows,
            "clean_rows": self.clean_rows,
            "bad_rows": self.bad_rows,
            "bad_by_reason": self.bad_by_reason,
            "passed": self.passed,
            "smoke_prediction": self.smoke.prediction if self.smoke else None,
        }
