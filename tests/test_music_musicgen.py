"""The MusicGen backend's real code path, on a tiny randomly initialised model saved to a
temporary folder with a tiny word-level tokenizer: no weights are downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chorus.services import get

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_musicgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        PreTrainedTokenizerFast,
        T5Config,
    )

    folder = tmp_path_factory.mktemp("musicgen-tiny")
    text = T5Config(
        vocab_size=64,
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    audio = EncodecConfig(
        sampling_rate=32000,
        num_filters=4,
        codebook_size=32,
        codebook_dim=8,
        hidden_size=8,
        upsampling_ratios=[8, 5, 4, 4],
        num_residual_layers=1,
        num_lstm_layers=1,
        target_bandwidths=[2.2],
        audio_channels=1,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        num_codebooks=audio.num_quantizers,
        pad_token_id=32,
        bos_token_id=32,
    )
    config = MusicgenConfig(
        text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict()
    )
    MusicgenForConditionalGeneration(config).save_pretrained(folder)
    words = ["<pad>", "</s>", "<unk>", "funk", "groove", "in", "E", "minor", "at", "BPM"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)
    return folder


def test_musicgen_composes_exact_duration_from_local_weights(tiny_musicgen: Path) -> None:
    backend = get("music").load_backend("musicgen", weights=str(tiny_musicgen))
    assert backend.sample_rate == 32000 and backend.model == f"musicgen:{tiny_musicgen.name}"
    samples, rate = backend.compose("funk groove in E minor at 112 BPM", 1.0)
    assert rate == 32000 and samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / rate - 1.0) <= 0.1 and np.isfinite(samples).all()
    assert np.abs(samples).max() <= 0.9
    again, _ = backend.compose("funk groove in E minor at 112 BPM", 1.0)
    assert np.allclose(samples, again)  # sampling is seeded by the prompt
    with pytest.raises(ValueError):
        backend.compose("funk", 90.0)


def test_musicgen_refuses_to_start_without_local_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weights"):
        get("music").load_backend("musicgen")
    with pytest.raises(ValueError, match="weights"):
        get("music").load_backend("musicgen", weights=str(tmp_path / "absent"))
