"""Model loading: embedded default, local directories of both architectures, offline errors."""

import pytest
import torch

from rea.lm import ModelError, load_model, resolve_device


def test_local_directories_load_both_architectures(tiny_llama, tiny_neo):
    assert tiny_llama.model.config.model_type == "llama"
    assert tiny_neo.model.config.model_type == "gpt_neo"
    for lm in (tiny_llama, tiny_neo):
        ids = lm.encode("The sky is blue.")
        assert lm.decode(ids) == "The sky is blue."
        assert lm.logits(torch.tensor([ids])).shape == (1, len(ids), lm.vocab_size)
        assert lm.context_length == 128 and lm.eos_token_id is not None


def test_gpt_neo_decoder_matches_full_forward(tiny_neo):
    ids = torch.tensor([tiny_neo.encode("Once upon a time, in a big forest")] * 2)
    full = tiny_neo.logits(ids)
    dec = tiny_neo.decoder(2)
    out = [dec.prefill(ids[:, :3])]
    for t in range(3, ids.shape[1]):
        out.append(dec.step(ids[:, t]))
    assert torch.allclose(torch.stack(out[:-1], 1), full[:, 2:-1], atol=1e-4)


def test_unknown_model_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_model("roneneldan/TinyStories-8M")
    msg = str(err.value)
    assert "\n" not in msg and "TinyStories-8M" in msg and "HF_HUB_OFFLINE" in msg


@pytest.mark.parametrize("bad, match", [("", "model must be"), ("   ", "model must be")])
def test_bad_model_names(bad, match):
    with pytest.raises(ModelError, match=match):
        load_model(bad)


def test_bad_dtype_and_device():
    with pytest.raises(ModelError, match="dtype must be"):
        load_model("toy", dtype="float99")
    with pytest.raises(ModelError, match="device must be"):
        resolve_device("tpu:0")


@pytest.mark.slow
def test_embedded_model_offline(smollm):
    assert smollm.name == "smollm2-135m" and smollm.vocab_size == 49152
    assert smollm.decode(smollm.encode("Once upon a time")) == "Once upon a time"


def test_processes_loading_at_once_convert_the_embedded_model_once(tmp_path, monkeypatch):
    """Two loads that start together on an empty cache (two chapters of ``make book``, two sweep workers): the
    first converts the GGUF under a lock, the second waits and reads the result instead of converting again (a second
    conversion would fail to replace the finished folder)."""
    import threading
    import time

    from rea.lm import models

    monkeypatch.setenv("REA_CACHE", str(tmp_path))
    conversions = []

    def slow_convert(target):
        conversions.append(target)
        time.sleep(0.5)
        with models.atomic_path(target, directory=True) as tmp:
            (tmp / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_embedded", slow_convert)
    monkeypatch.setattr(models, "_from_pretrained", lambda tok, src, dtype: (None, torch.nn.Linear(1, 1)))
    monkeypatch.setattr(models, "HFLanguageModel", lambda model, tok, **kw: model)
    errors = []

    def load():
        try:
            load_model("smollm2-135m", device="cpu")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(conversions) == 1
