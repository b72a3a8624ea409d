"""Language models behind one interface: the embedded SmolLM2, Hugging Face models, and the exactly solvable toy."""

from rea.lm.device import ModelError, cache_dir, resolve_device
from rea.lm.fastdecode import LlamaDecoder
from rea.lm.models import (
    DEFAULT_MODEL,
    TINYSTORIES_TOKENIZER,
    Decoder,
    HFDecoder,
    HFLanguageModel,
    LanguageModel,
    check_model_name,
    embedded_gguf,
    embedded_model_dir,
    embedded_summary,
    load_model,
    load_tokenizer,
)
from rea.lm.toy import DEFAULT_PROMPT, ToyLM

__all__ = ["ModelError", "cache_dir", "resolve_device", "LlamaDecoder", "DEFAULT_MODEL", "TINYSTORIES_TOKENIZER",
           "Decoder", "HFDecoder", "HFLanguageModel", "LanguageModel", "check_model_name", "embedded_gguf",
           "embedded_model_dir", "embedded_summary", "load_model", "load_tokenizer", "DEFAULT_PROMPT", "ToyLM"]
