"""Ingest sources: the Source a string names, its checks, and readers for paths, https://, gs:// and synthetic://."""

from __future__ import annotations

import fnmatch
import glob
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from trainer import schema, storage

DEFAULT_SYNTHETIC_ROWS = 10_000
MAX_SYNTHETIC_ROWS = 50_000_000
_SYNTHETIC_PARAMS = ("rows", "layout", "seed")
_GLOB_CHARS = re.compile(r"[*?\[]")


class SourceError(ValueError):
    """A source that is malformed, unsupported or cannot be read."""


@dataclass(frozen=True)
class Source:
    kind: str  # file | https | gcs | bigquery | synthetic
    text: str
    params: dict = field(default_factory=dict)


@dataclass
class Fetched:
    """Local files for one source; ``splits`` is set when the source already is a train/valid pair."""

    files: list[Path]
    splits: dict[str, list[Path]] | None = None


# -- parsing --------------------------------------------------------------------------------------
def query_params(source: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """The ``name=value`` pairs of a source URI's query; unknown or repeated names are errors."""
    scheme = source.split("://", 1)[0]
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in allowed:
            raise SourceError(f"{scheme}:// parameter {name!r} is not known; expected {', '.join(allowed)}")
        if name in params:
            raise SourceError(f"{scheme}:// parameter {name!r} is given twice")
        params[name] = value
    if query and not params:
        raise SourceError(f"{scheme}:// query {query!r} is not name=value pairs")
    return params


def _positive_int(scheme: str, name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SourceError(f"{scheme}:// parameter {name}={text!r}: expected an integer {low}..{high}") from None
    if not low <= value <= high:
        raise SourceError(f"{scheme}:// parameter {name}={value}: expected an integer {low}..{high}")
    return value


def parse_synthetic(text: str) -> Source:
    parts = urlsplit(text)
    if parts.netloc or parts.path or parts.fragment:
        raise SourceError(
            f"synthetic:// takes only query parameters, like synthetic://?rows=10000&layout=lab&seed=0; got {text!r}"
        )
    params = query_params(text, parts.query, _SYNTHETIC_PARAMS)
    rows = _positive_int("synthetic", "rows", params.get("rows", str(DEFAULT_SYNTHETIC_ROWS)), 1, MAX_SYNTHETIC_ROWS)
    layout = params.get("layout", "lab")
    if layout not in schema.LAYOUTS:
        raise SourceError(f"synthetic:// parameter layout={layout!r}: expected one of {', '.join(schema.LAYOUTS)}")
    seed = _positive_int("synthetic", "seed", params.get("seed", "0"), 0, 2**32 - 1)
    return Source("synthetic", text, {"rows": rows, "layout": layout, "seed": seed})


def parse_https(text: str, scheme: str) -> Source:
    parts = urlsplit(text)
    if not parts.hostname:
        raise SourceError(f"{text!r}: no host in the URL")
    if scheme == "http" and not _is_loopback(parts.hostname):
        raise SourceError(f"{text!r}: plain http:// is accepted only from a loopback host; use https://")
    return Source("https", text, {})


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


# -- reading to local files -----------------------------------------------------------------------
def local_files(text: str) -> Fetched:
    path = Path(text).expanduser()
    if _GLOB_CHARS.search(text):
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise SourceError(f"source {text!r}: the pattern matches no file")
        return Fetched(files)
    if path.is_file():
        return Fetched([path])
    if path.is_dir():
        csvs = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
        if not csvs:
            raise SourceError(f"source {text!r}: the directory holds no .csv file")
        train = [p for p in csvs if "train" in p.name.lower()]
        valid = [p for p in csvs if "valid" in p.name.lower() or "eval" in p.name.lower()]
        if len(train) == 1 and len(valid) == 1:
            return Fetched(csvs, {"train": train, "valid": valid})
        return Fetched(csvs)
    raise SourceError(f"source not found: {text}")


def download_https(url: str, workdir: Path, progress: bool) -> Fetched:
    import requests

    name = Path(urlsplit(url).path).name or "download.csv"
    target = workdir / "https" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with requests.get(url, stream=True, timeout=(10, 120)) as answer:
            if answer.status_code != 200:
                raise SourceError(f"source {url}: HTTP {answer.status_code} {answer.reason}")
            total = int(answer.headers.get("Content-Length") or 0)
            bar = None
            if progress and total >= storage.PROGRESS_MIN_BYTES:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)
            with open(target, "wb") as out:
                for block in answer.iter_content(chunk_size=1 << 20):
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
            if bar is not None:
                bar.close()
            if total and target.stat().st_size != total:
                raise SourceError(
                    f"source {url}: got {target.stat().st_size} bytes, expected {total} (connection cut?)"
                )
    except requests.exceptions.ConnectionError as exc:
        host = urlsplit(url).netloc
        raise SourceError(f"source {url}: cannot reach {host} ({storage.first_line(exc)})") from None
    except requests.exceptions.RequestException as exc:
        raise SourceError(f"source {url}: {type(exc).__name__}: {storage.first_line(exc)}") from None
    return Fetched([target])


def download_gcs(source: Source, workdir: Path, progress: bool) -> Fetched:
    text = source.text
    bucket, name = source.params["bucket"], source.params["name"]
    if name and not _GLOB_CHARS.search(name) and not name.endswith("/") and storage.exists(text):
        uris = [text]
    else:
        prefix = _GLOB_CHARS.split(name, 1)[0] if _GLOB_CHARS.search(name) else name
        listed = storage.list_blobs(f"gs://{bucket}/{prefix}")
        if _GLOB_CHARS.search(name):
            uris = [u for u in listed if fnmatch.fnmatchcase(u[len(f"gs://{bucket}/") :], name)]
        else:
            uris = [u for u in listed if u.lower().endswith(".csv")]
        if not uris:
            raise SourceError(f"source {text}: no object found")
    files = []
    for index, uri in enumerate(sorted(uris)):
        files.append(storage.download_file(uri, workdir / "gcs" / f"{index:05d}-{Path(uri).name}", progress=progress))
    return Fetched(files)


def write_synthetic(source: Source, workdir: Path) -> Fetched:
    from trainer import synth

    p = source.params
    target = workdir / "synthetic" / f"{p['layout']}-{p['rows']}-{p['seed']}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    synth.write_csv(target, rows=p["rows"], layout=p["layout"], seed=p["seed"])
    return Fetched([target])
