"""Shared fixtures: tiny random models captured into throwaway stores (float32 storage, so kernels can be
checked tightly against slow reference implementations)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

def _find_shared() -> Path:
    """The project's shared data: $TNSTORE_SHARED, else `shared/` beside the checkout (as CI lays it out), else
    beside the checkout this one was cloned from (a throwaway `git clone` of a local repo)."""
    repo = Path(__file__).resolve().parents[1]
    candidates = [Path(os.environ["TNSTORE_SHARED"])] if "TNSTORE_SHARED" in os.environ else []
    candidates.append(repo.parent / "shared")
    origin = subprocess.run(["git", "-C", str(repo), "remote", "get-url", "origin"], capture_output=True, text=True)
    if origin.returncode == 0 and Path(origin.stdout.strip()).is_dir():
        candidates.append(Path(origin.stdout.strip()).resolve().parent / "shared")
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED = _find_shared()
TATOEBA = SHARED / "data" / "tatoeba"
MKQA = SHARED / "data" / "mkqa" / "mkqa.queries.parallel.jsonl"


def capture_into(store: Path, corpus: Path, model: str, limit: int | None = None, split: str = "train",
                 storage_dtype: str = "float32", kind: str | None = None, batch_size: int = 8) -> Path:
    from tnstore.capture.api import capture_corpus

    capture_corpus(store=store, corpus=corpus, model=model, split=split, kind=kind, limit=limit, batch_size=batch_size,
            device="cpu", storage_dtype=storage_dtype, progress=False, chunk_rows=64)
    return store


TIERS = ("tiny_models", "real_models", "installed_cli")


def pytest_collection_modifyitems(items) -> None:
    """Mark every test with its tier, the folder it lives in: `pytest -m tiny_models` runs the fast tier."""
    for item in items:
        for tier in TIERS:
            if f"/tests/{tier}/" in str(item.fspath):
                item.add_marker(tier)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not TATOEBA.is_dir():
        pytest.fail(f"the shared data folder {SHARED} is missing; tests need ../shared next to the repo")
    return SHARED / "data"


@pytest.fixture(scope="session")
def tiny_store_factory(tmp_path_factory, shared_data):
    """factory(model, langs=('ja',), limit=40) -> a float32 store with en-L2 train pairs of each language."""
    cache: dict[tuple, Path] = {}

    def make(model: str = "tiny-llama", langs: tuple[str, ...] = ("ja",), limit: int = 40) -> Path:
        key = (model, langs, limit)
        if key not in cache:
            store = tmp_path_factory.mktemp(f"store-{model}") / "store"
            for lang in langs:
                capture_into(store, TATOEBA / f"en-{lang}.parallel.train.jsonl", model, limit=limit)
            cache[key] = store
        return cache[key]

    return make
