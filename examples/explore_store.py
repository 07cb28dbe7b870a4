# %% [markdown]
# # Exploring a tnstore store from Python
#
# A percent-format notebook (open it with Jupyter through jupytext, or run it as a script:
# `python examples/explore_store.py`). It captures tnstore's built-in demo corpus (140 sentences in en, ja, nl,
# ko, it) into a store, then reads the store the way an analysis notebook would: tables as DuckDB relations turned
# into Polars frames at the edge, stored states as numpy arrays, and the paper's analyses as typed function calls
# whose results are written back into the store.
#
# Settings (environment variables): `TNSTORE_EXAMPLE_MODEL` (default `smollm2-135m`; the test suite runs it on
# `tiny-llama`), `TNSTORE_EXAMPLE_STORE` (default `example-store`).

# %%
import os

import numpy as np

import tnstore
from tnstore.cli.demo import demo_corpus_path

MODEL = os.environ.get("TNSTORE_EXAMPLE_MODEL", "smollm2-135m")
STORE = os.environ.get("TNSTORE_EXAMPLE_STORE", "example-store")

# %% [markdown]
# ## Capture once
# One forward pass per sentence writes last-token states into the store (resumable; a second call is a no-op).

# %%
result = tnstore.capture_corpus(STORE, demo_corpus_path(), model=MODEL, split="train", storage_dtype="float32")
print(result.describe())

# %% [markdown]
# ## What the store holds

# %%
s = tnstore.open(STORE)
info = s.info()
print(info.model["model_spec"], info.model["n_layers"], "layers,", info.n_rows, "sentences")
s.sql("SELECT lang, count(*) AS n, avg(n_tokens) AS mean_tokens FROM sentences GROUP BY lang ORDER BY lang").pl()

# %% [markdown]
# ## States as numpy
# `states` reads any stored array for a selection of sentences and layers, in float32, and says which rows it
# used. Here: how close the Japanese centroid comes to the English one, layer by layer (method §3.3).

# %%
n_hidden = info.model["n_layers"] + 1
en, en_rows = s.states("hidden", where="lang = 'en'", layers=range(n_hidden))
ja, ja_rows = s.states("hidden", where="lang = 'ja'", layers=range(n_hidden))
assert en.shape == (140, n_hidden, info.model["d_model"]) and len(ja_rows) == 140


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


centroid_cos = cosine(en.astype(np.float64).mean(axis=0), ja.astype(np.float64).mean(axis=0))
print("cos(C_en, C_ja) per hidden index:", np.round(centroid_cos, 3))

# %% [markdown]
# ## Transfer neurons (method §4) and a random baseline

# %%
n_layers, d_mlp = info.model["n_layers"], info.model["d_mlp"]
type1_layers = range(0, (n_layers * 20 + 16) // 32)  # the paper's first 20 of 32 layers, scaled
top = min(1000, len(type1_layers) * d_mlp // 4)
r = tnstore.detect(s, type=1, lang="ja", top=top, layers=type1_layers)
print(r.set_id, "from", r.n_sentences, "sentences")
r.ranking.head(5)

# %%
baseline = tnstore.neurons.random_baseline(s, r.set_id, seed=42, match_layers=True)  # same count per layer
tnstore.neurons.list_sets(s)

# %% [markdown]
# ## Their nature (method §6) and the latent space (method §3)

# %%
corr = tnstore.stats.corr_ratio(s, label="language")
corr.summary

# %%
knn = tnstore.latent.knn(s, k=[5], lang="ja")
knn.summary

# %% [markdown]
# ## Deactivation (method §5): the ja side run again with the set, and with its baseline, deactivated
# English stays the plain capture; each set becomes a condition of the same sentences.

# %%
tnstore.replay(s, sets=[r.set_id, baseline.name], split="train", langs=["ja"])
deactivated = tnstore.latent.knn(s, k=[5], lang="ja", conditions=["none", r.set_id, baseline.name])
deactivated.summary

# %% [markdown]
# Every result is also a table in the store, for ad hoc SQL next to the activations:

# %%
s.sql("SELECT lang, type, avg(eta2) AS mean_eta2 FROM tn_corr_ratio WHERE label = 'language' GROUP BY ALL").pl()
