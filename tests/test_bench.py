"""chorus bench: its JSON rows and the report file it rewrites in place."""

from __future__ import annotations

import json

from chorus.bench import VECTOR_FLAGS, Row, markdown, write_report
from tests.cli import run_chorus


def test_bench_json_rows_for_music(tmp_path):
    args = ["--service", "music", "--duration", "3", "--runs", "1", "--json"]
    r = run_chorus("bench", *args, root=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(x["service"], x["task"]) for x in rows] == [
        ("music", "generation"),
        ("music", "evaluation"),
    ]
    for x in rows:
        assert set(x) == {
            "service",
            "task",
            "duration_s",
            "avg_s",
            "max_s",
            "min_s",
            "rtf",
            "peak_rss_mb",
            "cpu",
            "cpu_kind",
            "vector_extensions",
        }
        assert abs(x["duration_s"] - 3) <= 0.1 and 0 < x["min_s"] <= x["avg_s"] <= x["max_s"]
        assert abs(x["rtf"] - x["avg_s"] / x["duration_s"]) < 1e-3 and x["peak_rss_mb"] > 50
        # the machine behind the numbers: this one's CPU, in the words the tables use
        assert x["cpu"] and set(x["vector_extensions"]) <= set(VECTOR_FLAGS)
        avx512, avx2 = "avx512f" in x["vector_extensions"], "avx2" in x["vector_extensions"]
        assert x["cpu_kind"] == ("AVX-512" if avx512 else "AVX2-only" if avx2 else "no AVX2")


def test_report_sections_are_replaced_in_place(tmp_path):
    path = tmp_path / "b.md"
    path.write_text("# Benchmarks\n\nintro kept\n")
    row = Row("tts", "evaluation", 30.0, 1.0, 1.2, 0.9, 0.033, 900.0)
    write_report(path, "services", markdown([row], "test machine"))
    write_report(path, "load", "load table")
    write_report(path, "services", markdown([row], "second run"))
    text = path.read_text()
    assert text.count("<!-- bench:services -->") == 1 and "second run" in text
    assert "test machine" not in text and "intro kept" in text and "load table" in text
    assert "| TTS | evaluation | 1.00 | 1.10 | A100 | 0.91 |" in text  # beside the seed's best


def test_speed_tables_are_kept_per_maker_and_kind(monkeypatch):
    """An AVX-512 EPYC run must not overwrite the AVX-512 Xeon's table, nor an AVX2 one."""
    import chorus.bench as bench

    def on(vendor: str, flags: str) -> str:
        cpuinfo = f"vendor_id\t: {vendor}\nmodel name\t: x\nflags\t\t: fpu sse2 {flags}\n"
        monkeypatch.setattr(bench, "_cpuinfo", lambda: cpuinfo)
        return bench.section("services")

    xeon = on("GenuineIntel", "avx2 fma avx512f avx512_vnni")
    epyc = on("AuthenticAMD", "avx2 fma avx512f avx512_vnni avx512_bf16")
    epyc_avx2 = on("AuthenticAMD", "avx2 fma")
    assert (xeon, epyc, epyc_avx2) == (
        "services-intel-avx512",
        "services-amd-avx512",
        "services-amd-avx2",
    )


def test_the_asr_corpus_reads_each_text_clean_degraded_and_with_a_tail():
    """`chorus bench --asr` holds our Whisper decoding to faster-whisper's WER on this
    corpus: every text clean, through four kinds of damage, and one of three tails."""
    import numpy as np

    from chorus.audio import SPEECH_RATE
    from chorus.bench import asr_corpus

    clips = asr_corpus(short=2, long=0)
    assert len(clips) == 12 and len({c.text for c in clips}) == 2
    first = [c for c in clips if c.text == clips[0].text]
    conditions = [c.condition for c in first]
    assert conditions[:5] == [
        "clean",
        "noise 20 dB SNR",
        "reverb RT60 0.6 s",
        "telephone band",
        "8 kHz mu-law",
    ]
    clean, tail = first[0].audio, first[5].audio
    assert conditions[5] == "2.5 s of silence after"
    assert tail.size == clean.size + int(2.5 * SPEECH_RATE) and not tail[clean.size :].any()
    assert all(c.audio.dtype == np.float32 and np.abs(c.audio).max() > 0.05 for c in clips)
    assert all(not np.array_equal(c.audio[: clean.size], clean) for c in first[1:5])
