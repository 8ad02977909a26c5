"""Hostile input: every broken, lying or oddly named file is that sample's ERROR, never the
process's. The decoder is fuzzed with generated files (truncations, bit flips, header lies,
a decompression bomb, huge and empty files, odd names); the station runs as a real
``flowedge run`` process over a folder mixing good and poison files. Audio (truncated WAV
and FLAC, lying headers) and machine-data logs (NaN/inf rows, columns changing mid-file, a
2 GiB log) go through the station's sources and ``flowedge predict`` the same way."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import Broker, Subscriber, require_mosquitto  # noqa: E402
from runtime_fakes import (  # noqa: E402
    FakeBackend,
    fake_card,
    station_config,
    validator,
    write_images,
    write_onnx_model,
)
from test_runtime_pipeline import decisions, events, run_pipeline  # noqa: E402

from flowedge.core.card import AudioInput, ModelCard, SeriesInput  # noqa: E402
from flowedge.core.errors import BadInputError  # noqa: E402
from flowedge.edge.loop.filenames import safe_file_stem  # noqa: E402
from flowedge.edge.loop.messages import encode  # noqa: E402
from flowedge.edge.sources import Frame  # noqa: E402
from flowedge.edge.sources.tail import LogTailSource, TailConfig  # noqa: E402
from flowedge.modalities.audio import decode_audio  # noqa: E402
from flowedge.modalities.image_decode import (  # noqa: E402
    DEFAULT_LIMITS,
    DecodeLimits,
    decode_image_bytes,
    read_image_file,
)
from flowedge.modalities.series_cycles import SegmentConfig  # noqa: E402
from flowedge.modalities.series_io import LogFormat  # noqa: E402

RNG_SEED = 7
IMAGE = cv2.GaussianBlur(
    np.random.default_rng(RNG_SEED).integers(0, 256, (48, 40, 3), dtype=np.uint8), (5, 5), 0
)


# --- generated files ------------------------------------------------------------------------
def encoded(ext: str, image: np.ndarray = IMAGE) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, idat: bytes) -> bytes:
    """A well-formed PNG (valid CRCs) whose IHDR says ``width`` x ``height`` 8-bit gray."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_bomb(side: int = 10_000) -> bytes:
    """``side`` x ``side`` zeros: ~100 KB on disk, 100 megapixels once decoded."""
    packer = zlib.compressobj(9)
    rows = b"\x00" * ((side + 1) * 100)  # filter byte + pixels, 100 rows at a time
    idat = b"".join(packer.compress(rows) for _ in range(side // 100)) + packer.flush()
    return png_claiming(side, side, idat)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG with its SOF0 size patched (the entropy data stays 48x40)."""
    data = bytearray(encoded(".jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def cut_points(data: bytes, count: int = 60) -> list[int]:
    return sorted({*range(0, len(data), max(1, len(data) // count)), len(data) - 1, len(data) - 2})


def bit_flips(data: bytes, count: int = 200) -> Iterator[bytes]:
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(count):
        position = int(rng.integers(len(data)))
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        yield bytes(flipped)


def refused(data: bytes, match: str | None = None, limits: DecodeLimits = DEFAULT_LIMITS) -> str:
    with pytest.raises(BadInputError, match=match) as caught:
        decode_image_bytes(data, "sample.bin", limits)
    return str(caught.value)


def decodes_or_refuses(data: bytes) -> None:
    """The only acceptable outcomes: an image, or BadInputError (never another exception)."""
    try:
        image = decode_image_bytes(data, "sample.bin")
    except BadInputError:
        return
    assert isinstance(image, np.ndarray) and image.size > 0


# --- the decoder ----------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff"])
def test_every_truncation_is_refused(ext: str) -> None:
    data = encoded(ext)
    for cut in cut_points(data):
        if ext == ".tiff":
            decodes_or_refuses(data[:cut])  # libtiff may decode the strips it has
        else:
            refused(data[:cut])


def test_truncated_files_say_truncated() -> None:
    for ext in (".png", ".jpg", ".bmp"):
        data = encoded(ext)
        assert "truncated" in refused(data[: len(data) * 2 // 3])


def test_truncated_jpeg_with_an_end_marker_is_refused() -> None:
    """Ending with FF D9 is not enough: libjpeg's corrupt-data warning is an error."""
    data = encoded(".jpg")
    for cut in cut_points(data)[1:-2]:  # the last two would restore the original EOI
        refused(data[:cut] + b"\xff\xd9")


@pytest.mark.parametrize("ext", [".png", ".bmp"])
def test_bit_flips_in_png_and_bmp_never_escape(ext: str) -> None:
    for flipped in bit_flips(encoded(ext)):
        if ext == ".png":
            refused(flipped)  # every chunk has a CRC: a single flipped bit is always caught
        else:
            decodes_or_refuses(flipped)


@pytest.mark.parametrize("ext", [".jpg", ".tiff"])
def test_bit_flips_in_jpeg_and_tiff_never_escape(ext: str) -> None:
    for flipped in bit_flips(encoded(ext)):
        decodes_or_refuses(flipped)


def test_header_lies_are_refused_before_decoding() -> None:
    lie = png_claiming(65535, 65535, zlib.compress(b"\x00" * 64))
    assert len(lie) < 100
    assert "65535x65535" in refused(lie, "megapixels")
    assert "20000x20000" in refused(jpeg_claiming(20000, 20000), "megapixels")


def test_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png_bomb()
    assert len(bomb) < 200_000
    refused(bomb, "10000x10000 = 100.0 megapixels")


def test_limits_are_configurable() -> None:
    data = encoded(".png")
    refused(data, "megapixels", DecodeLimits(max_pixels=48 * 40 - 1))
    refused(data, "over the limit", DecodeLimits(max_bytes=len(data) - 1))
    assert decode_image_bytes(data, "ok.png", DecodeLimits(max_pixels=48 * 40)).shape == (48, 40, 3)


def test_benign_oddities_decode_as_before() -> None:
    """Bytes after JPEG's EOI or PNG's IEND are harmless; formats and depths stay as OpenCV gives."""
    jpeg = encoded(".jpg")
    expected = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decode_image_bytes(jpeg + b"\x00trailer" * 50), expected)
    np.testing.assert_array_equal(decode_image_bytes(encoded(".png") + b"junk"), IMAGE)
    gray = IMAGE[:, :, 0]
    gray_jpeg = encoded(".jpg", gray)
    np.testing.assert_array_equal(
        decode_image_bytes(gray_jpeg),
        cv2.imdecode(np.frombuffer(gray_jpeg, np.uint8), cv2.IMREAD_UNCHANGED),
    )
    deep = IMAGE.astype(np.uint16) * 257
    assert decode_image_bytes(encoded(".png", deep)).dtype == np.uint16
    bgra = np.dstack([IMAGE, IMAGE[:, :, 0]])
    np.testing.assert_array_equal(decode_image_bytes(encoded(".png", bgra)), bgra)
    for ext in (".bmp", ".tiff"):
        np.testing.assert_array_equal(decode_image_bytes(encoded(ext)), IMAGE)


def test_empty_and_non_image_bytes_are_refused() -> None:
    refused(b"", "empty")
    refused(b"Hello, this is a text file renamed to .png\n" * 20, "unknown format")
    refused(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "not a decodable image")


def test_file_over_the_byte_limit_is_refused_without_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(2 * 2**30)  # sparse: 2 GiB by size, no disk used
    with pytest.raises(BadInputError, match=r"huge\.png.*2147483648 bytes, over the limit"):
        read_image_file(huge)


ODD_NAMES = [b"bad\xff\xfename.png", b"line\nbreak.png", b"x" * 200 + b".png", b"..png"]


@pytest.mark.parametrize("raw_name", ODD_NAMES, ids=["non-utf8", "newline", "200-chars", "dots"])
def test_odd_file_names_read_and_are_named_in_errors(tmp_path: Path, raw_name: bytes) -> None:
    path = os.fsdecode(os.path.join(os.fsencode(tmp_path), raw_name))
    Path(path).write_bytes(encoded(".png"))
    np.testing.assert_array_equal(read_image_file(path), IMAGE)
    Path(path).write_bytes(encoded(".png")[:100])
    with pytest.raises(BadInputError) as caught:
        read_image_file(path)
    assert path in str(caught.value)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read"):
        read_image_file(tmp_path / "gone.png")
    with pytest.raises(BadInputError, match="cannot read"):
        read_image_file(tmp_path)


# --- names the station derives from part ids ------------------------------------------------
@pytest.mark.parametrize(
    "part_id",
    ["bad\udcff\udcfename.png", "line\nbreak.png", "x" * 300 + ".png", "..", "../../etc/passwd"],
)
def test_safe_file_stem_is_short_ascii_and_stays_in_its_folder(part_id: str) -> None:
    stem = safe_file_stem(part_id)
    assert stem.isascii() and len(stem) <= 80 and "/" not in stem
    assert not stem.startswith(".") and "\n" not in stem


def test_safe_file_stems_of_different_ids_differ() -> None:
    ids = ["a\udcff.png", "a\udcfe.png", "a?.png", "a_.png", "a.png", "a.jpg"]
    assert len({safe_file_stem(part_id) for part_id in ids}) == len(ids)


def test_messages_with_non_utf8_names_are_valid_utf8_json() -> None:
    payload = encode({"part_id": "bad\udcffname.png", "details": {"file": ["\udc80"]}})
    doc = json.loads(payload.decode("utf-8", "strict"))
    assert doc["part_id"] == "bad\\udcffname.png"
    assert encode({"part_id": "Teil_ä.png"}).decode("utf-8") == '{"part_id":"Teil_ä.png"}'


# --- the station in-process: failures of one sample stay with that sample --------------------
class Frames:
    """A source yielding given (part id, payload) pairs once."""

    modality = "image"

    def __init__(self, name: str, frames: list[tuple[str, Any]]) -> None:
        self.name, self.items = name, frames

    def frames(self, stop: Any) -> Iterator[Frame]:
        yield from (Frame(part_id, payload) for part_id, payload in self.items)


class RunsOutOfMemory(np.ndarray):
    """A frame whose conversion fails the way a huge allocation does."""

    def astype(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise MemoryError


def source_of(frames: list[tuple[str, Any]]) -> Callable[..., Frames]:
    return lambda cfg, context: Frames(cfg.name, frames)


@pytest.mark.parametrize(
    "poison, kind",
    [
        (np.full((8, 8), "text", dtype=object), "ValueError"),
        (np.zeros((8, 8, 3), np.uint8).view(RunsOutOfMemory), "MemoryError"),
    ],
)
def test_unexpected_preprocessing_failure_is_that_samples_error(
    tmp_path: Path, poison: np.ndarray, kind: str
) -> None:
    good = np.full((8, 8, 3), 100, np.uint8)
    frames = [("1", good), ("2", poison), ("3", good)]
    pipeline, rows = run_pipeline(station_config(tmp_path), source_factory=source_of(frames))
    assert pipeline.failure is None
    assert [d["decision"] == "ERROR" for d in decisions(rows)] == [False, True, False]
    assert kind in decisions(rows)[1]["error"] and "cam1/2" in decisions(rows)[1]["error"]
    bad = [e for e in events(rows) if e["kind"] == "bad_input"]
    assert len(bad) == 1 and bad[0]["details"]["part_id"] == "2"


def test_heatmap_failure_keeps_the_decision_and_is_reported(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 2)
    (tmp_path / "not_a_folder").write_text("")
    cfg = station_config(
        tmp_path, pipeline={"heatmaps": "all", "heatmap_dir": str(tmp_path / "not_a_folder")}
    )
    pipeline, rows = run_pipeline(cfg)
    assert pipeline.failure is None
    assert [(d["decision"], d["heatmap"]) for d in decisions(rows)] == [("OK", None)] * 2
    failed = [e for e in events(rows) if e["kind"] == "heatmap_failed"]
    assert len(failed) == 2 and "img_0000.png" in failed[0]["message"]
    validator("event").validate(failed[0])


def test_odd_part_ids_get_heatmaps_inside_the_heatmap_folder(tmp_path: Path) -> None:
    ids = ["bad\udcffname.png", "line\nbreak.png", "x" * 300 + ".png", "../../escape.png"]
    frames = [(part_id, np.full((8, 8, 3), 50, np.uint8)) for part_id in ids]
    heat = tmp_path / "heat"
    cfg = station_config(tmp_path, pipeline={"heatmaps": "all", "heatmap_dir": str(heat)})
    _, rows = run_pipeline(cfg, source_factory=source_of(frames))
    docs = decisions(rows)
    assert [d["decision"] for d in docs] == ["OK"] * len(ids)
    assert [d["part_id"] for d in docs] == [
        i.encode("utf-8", "backslashreplace").decode() for i in ids
    ]
    written = {Path(d["heatmap"]) for d in docs}
    assert len(written) == len(ids) and all(
        p.parent == heat / "cam1" and p.is_file() for p in written
    )


# --- the station as a process ---------------------------------------------------------------
MAX_RSS_BYTES = 1.5 * 2**30

MEASURED = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def poison_folder(folder: Path) -> tuple[set[bytes], set[bytes]]:
    """Good and poison files side by side; returns (good names, poison names)."""
    folder.mkdir()
    png, jpeg = encoded(".png"), encoded(".jpg")
    good = {
        b"good_1.png": png,
        b"good_2.jpg": jpeg + b"vendor trailer after EOI",
        b"odd_\xff\xfe.png": png,
        b"odd_line\nbreak.png": png,
        b"odd_" + b"y" * 196 + b".png": png,
    }
    poison = {
        b"lie_65535.png": png_claiming(65535, 65535, zlib.compress(b"\x00" * 64)),
        b"lie_20000.jpg": jpeg_claiming(20000, 20000),
        b"bomb.png": png_bomb(),
        b"cut.png": png[: len(png) // 2],
        b"cut.jpg": jpeg[: len(jpeg) // 2],
        b"cut_with_eoi.jpg": jpeg[: len(jpeg) // 2] + b"\xff\xd9",
        b"flipped.png": next(bit_flips(png)),
        b"empty.png": b"",
        b"text.png": b"not an image at all\n",
        b"huge.png": b"",
    }
    for name, data in {**good, **poison}.items():
        (Path(os.fsdecode(os.fsencode(folder) + b"/" + name))).write_bytes(data)
    with open(folder / "huge.png", "wb") as handle:
        handle.truncate(2 * 2**30)
    return set(good), set(poison)


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_station_process_survives_a_folder_of_poison(tmp_path: Path) -> None:
    """Exit 0 after the folder, one decision per file over a real broker, bounded memory."""
    from test_export import StandInDetector

    from flowedge.export.onnx_export import export_onnx

    require_mosquitto()
    detector = StandInDetector().eval()
    model = tmp_path / "model.onnx"
    export_onnx(detector, detector.card(), model)
    good, poison = poison_folder(tmp_path / "images")
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker").start()
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        model: {{path: {model}, backend: onnxruntime, threshold: 1.0e9}}
        sources: [{{name: cam1, kind: folder, path: {tmp_path / "images"}}}]
        mqtt: {{port: {broker.port}}}
        metrics: {{enabled: false}}
        spool: {{path: {tmp_path / "spool.sqlite"}}}
        pipeline: {{heatmaps: all, heatmap_dir: {tmp_path / "heat"}}}
        """),
        encoding="utf-8",
    )
    sub = Subscriber(broker.port, topic="flowedge/site/station/cam1/#")
    try:
        done = subprocess.run(
            [sys.executable, "-c", MEASURED, sys.executable, "-m", "flowedge.cli", "run"]
            + ["--config", str(config), "--exit-when-done"],
            capture_output=True,
            text=True,
            timeout=150,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        files = len(good) + len(poison)
        assert f"{files} decisions, {len(poison)} errors" in done.stderr, done.stderr[-3000:]
        received = sub.wait_for("/decision", files)
        bad_inputs = [e for e in sub.on("/event") if e["kind"] == "bad_input"]
    finally:
        sub.close()
        broker.stop()

    docs = {doc["part_id"]: doc for doc in received}
    as_part_id = {
        os.fsdecode(n).encode("utf-8", "backslashreplace").decode(): n for n in good | poison
    }
    assert len(received) == len(docs) == files and set(docs) == set(as_part_id)
    for part_id, doc in docs.items():
        validator("decision").validate(doc)
        if as_part_id[part_id] in poison:
            assert doc["decision"] == "ERROR" and part_id in doc["error"], doc
        else:
            assert doc["decision"] == "OK", doc
            assert Path(doc["heatmap"]).parent == tmp_path / "heat" / "cam1"
    assert sorted(e["details"]["part_id"] for e in bad_inputs) == sorted(
        p for p, n in as_part_id.items() if n in poison
    )
    max_rss = int(done.stdout.split("MAXRSS_KB")[1]) * 1024
    assert max_rss < MAX_RSS_BYTES, f"peak memory {max_rss / 2**20:.0f} MiB"


# --- audio: truncated WAV and FLAC, headers that lie about their size --------------------------
AUDIO_RATE = 16000
AUDIO_SPEC = AudioInput(
    sample_rate=AUDIO_RATE, n_fft=512, win_length=512, hop_length=160, n_mels=16, duration_s=0.5
)
NOISE = (0.2 * np.random.default_rng(RNG_SEED).standard_normal(AUDIO_RATE // 2)).astype(np.float32)


def sound(fmt: str) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, NOISE, AUDIO_RATE, format=fmt)
    return buffer.getvalue()


def wav_patched(offset: int, value: int) -> bytes:
    """A good WAV with the 32-bit header field at ``offset`` replaced by ``value``."""
    data = bytearray(sound("WAV"))
    struct.pack_into("<I", data, offset, value)
    return bytes(data)


def wav_lies() -> dict[str, bytes]:
    """Header fields of a canonical 44-byte WAV header that lie about the file."""
    return {
        "data_size_huge": wav_patched(40, 0x7FFFFFF0),  # more samples than the file holds
        "data_size_small": wav_patched(40, 100),  # and the rest no WAV chunk
        "riff_size_huge": wav_patched(4, 0x7FFFFFF0),
        "riff_size_small": wav_patched(4, 100),  # the samples reach past the RIFF
        "rate_1e9": wav_patched(24, 10**9),
    }


def audio_refused(data: bytes, match: str | None = None) -> str:
    with pytest.raises(BadInputError, match=match) as caught:
        decode_audio(data, "clip.wav")
    return str(caught.value)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_every_audio_truncation_is_refused(fmt: str) -> None:
    data = sound(fmt)
    assert decode_audio(data, "clip").samples.shape == (len(NOISE), 1)
    for cut in cut_points(data):
        audio_refused(data[:cut])


@pytest.mark.parametrize("lie", sorted(wav_lies()))
def test_wav_headers_that_lie_about_the_size_are_refused(lie: str) -> None:
    message = audio_refused(wav_lies()[lie])
    assert "clip.wav" in message and ("header" in message or "truncated" in message)


def test_wav_chunks_after_the_samples_are_fine() -> None:
    data = bytearray(sound("WAV"))
    info = b"LIST" + struct.pack("<I", 4) + b"INFO"
    struct.pack_into("<I", data, 4, len(data) + len(info) - 8)
    assert decode_audio(bytes(data) + info, "clip").samples.shape == (len(NOISE), 1)


def poison_audio(folder: Path) -> tuple[list[str], list[str]]:
    """Good and poison audio files side by side: (good names, poison names)."""
    folder.mkdir()
    wav, flac = sound("WAV"), sound("FLAC")
    good = {"good_1.wav": wav, "good_2.flac": flac, "GOOD_3.WAV": wav}
    poison = {
        "cut.wav": wav[: len(wav) // 2],
        "cut.flac": flac[: len(flac) // 2],
        "empty.wav": b"",
        "text.flac": b"not audio at all\n",
        **{f"lie_{name}.wav": data for name, data in wav_lies().items()},
        "huge.wav": b"",
    }
    for name, data in {**good, **poison}.items():
        (folder / name).write_bytes(data)
    with open(folder / "huge.wav", "wb") as handle:
        handle.truncate(2 * 2**30)  # sparse: over the 64 MiB file limit, never read
    return sorted(good), sorted(poison)


def test_station_answers_every_poison_audio_file_and_goes_on(tmp_path: Path) -> None:
    good, poison = poison_audio(tmp_path / "clips")
    source = {"name": "mic", "kind": "folder", "path": str(tmp_path / "clips"), "modality": "audio"}
    cfg = station_config(tmp_path, sources=[source])
    backend = FakeBackend(card=fake_card(AUDIO_SPEC))
    pipeline, rows = run_pipeline(cfg, backend)
    assert pipeline.failure is None
    docs = {doc["part_id"]: doc for doc in decisions(rows)}
    assert sorted(docs) == sorted(good + poison)
    for name in poison:
        assert docs[name]["decision"] == "ERROR" and name in docs[name]["error"], docs[name]
    assert all(docs[name]["decision"] != "ERROR" for name in good)
    bad = sorted(e["details"]["part_id"] for e in events(rows) if e["kind"] == "bad_input")
    assert bad == sorted(poison)


def test_predict_answers_every_poison_audio_file_with_an_error_row(tmp_path: Path) -> None:
    good, poison = poison_audio(tmp_path / "clips")
    rows = predicted(fake_card(AUDIO_SPEC), tmp_path / "clips", tmp_path)
    assert sorted(rows) == sorted(good + poison)
    for name in poison:
        assert rows[name]["decision"] == "ERROR" and name in rows[name]["error"], rows[name]
    assert all(rows[name]["decision"] == "OK" and rows[name]["score"] for name in good)


def predicted(card: ModelCard, inputs: Path, tmp_path: Path) -> dict[str, dict[str, str]]:
    """``flowedge predict`` of a stand-in ONNX model with ``card`` over ``inputs``: rows by
    file name (exit 0, no traceback)."""
    from flowedge.cli import main

    model = write_onnx_model(tmp_path / "model.onnx", card=card)
    out = tmp_path / "scores.csv"
    argv = ["predict", str(model), str(inputs), "--out", str(out), "--threshold", "1e9"]
    assert main([*argv, "--no-progress"]) == 0
    with out.open(encoding="utf-8") as handle:
        return {Path(row["file"]).name: row for row in csv.DictReader(handle)}


# --- machine-data logs: NaN/inf rows, columns that change mid-file, a 2 GiB log -----------------
SERIES_SPEC = SeriesInput(
    signals=("current", "speed"),
    units=("A", "rpm"),
    rate_hz=10.0,
    length=4,
    mean=(0, 0),
    std=(1, 1),
)
LOG = {"separator": ";", "decimal": ",", "cycle_column": "cycle"}
SEGMENT = {"mode": "cycle_id", "column": "cycle"}
LOG_HEADER = "time;cycle;current;speed;;\n"


def log_rows(cycle: int, n: int = 4, current: str = "{i},5", speed: str = "-{i},25") -> str:
    """``n`` rows of cycle ``cycle`` at 10 Hz (time goes on from cycle to cycle)."""
    return "".join(
        f"{0.4 * cycle + 0.1 * i:.1f};{cycle};{current.format(i=i)};{speed.format(i=i)};;\n"
        for i in range(n)
    )


def hostile_log(path: Path) -> dict[str, str]:
    """A log with every kind of bad row and a header change; returns part id -> what it is."""
    text = (
        LOG_HEADER
        + log_rows(1)
        + log_rows(2, current="nan")  # NaN longer than the repairable two rows
        + log_rows(3, speed="inf")  # a sensor overflow
        + log_rows(4)
        + "2.0;5;1,0;1,0;;;extra\n"  # a row with more fields than the header (row 17)
        + "2.1;5;1,0\n"  # and one with fewer (row 18)
        + log_rows(5)
        + log_rows(6, n=1)  # cycle 6 has begun when the logger restarts
        + "time;cycle;speed;current;;\n"  # a new header: its columns in another order
        + "".join(f"{2.8 + 0.1 * i:.1f};7;{i}0,0;{i},0;;\n" for i in range(4))
        + log_rows(8, n=1)
    )
    path.write_text(text, encoding="utf-8")
    return {
        "1": "OK",
        "2": "ERROR",
        "3": "ERROR",
        "4": "OK",
        "row-17": "ERROR",
        "row-18": "ERROR",
        "5": "OK",
        "6": "ERROR",
        "7": "OK",
    }


def test_station_answers_every_bad_row_of_a_tailed_log_and_goes_on(tmp_path: Path) -> None:
    expected = hostile_log(tmp_path / "robot.csv")
    source = {"name": "robot1", "kind": "tail", "path": str(tmp_path / "robot.csv")}
    cfg = station_config(tmp_path, sources=[{**source, "log": LOG, "segment": SEGMENT}])
    backend = FakeBackend(card=fake_card(SERIES_SPEC))
    pipeline, rows = run_pipeline(cfg, backend, max_samples=len(expected))
    assert pipeline.failure is None
    docs = decisions(rows)
    decided = {d["part_id"]: "ERROR" if d["decision"] == "ERROR" else "OK" for d in docs}
    assert decided == expected, {d["part_id"]: d.get("error") for d in docs}
    assert [d["part_id"] for d in docs] == list(expected)  # in the log's order
    errors = {d["part_id"]: d["error"] for d in docs if d["decision"] == "ERROR"}
    assert "NaN" in errors["2"] and "NaN" in errors["3"]
    assert "7 fields" in errors["row-17"] and "3 fields" in errors["row-18"]
    assert "header" in errors["6"]
    bad = sorted(e["details"]["part_id"] for e in events(rows) if e["kind"] == "bad_input")
    assert bad == sorted(errors)
    assert any("header" in e["message"] for e in events(rows) if e["kind"] == "source_reconnected")


def test_a_header_line_mid_file_names_the_columns_of_the_rows_after_it(tmp_path: Path) -> None:
    hostile_log(tmp_path / "robot.csv")
    source = LogTailSource(tail_log_config(tmp_path / "robot.csv"), lambda *a, **k: None)
    frames = {f.part_id: f for f in first_frames(source, 9)}
    assert frames["7"].payload.columns["current"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert frames["7"].payload.columns["speed"].tolist() == [0.0, 10.0, 20.0, 30.0]


def tail_log_config(path: Path) -> TailConfig:
    return TailConfig(
        name="robot1",
        path=path,
        log=LogFormat.model_validate(LOG),
        segment=SegmentConfig.model_validate(SEGMENT),
    )


def first_frames(source: LogTailSource, count: int, wait_s: float = 20.0) -> list[Frame]:
    """The first ``count`` frames of ``source`` (fewer when it stalls for ``wait_s``)."""
    stop, taken = threading.Event(), []
    guard = threading.Timer(wait_s, stop.set)  # a stalled source fails the test, never hangs it
    guard.start()
    for frame in source.frames(stop):
        taken.append(frame)
        if len(taken) == count:
            break
    guard.cancel()
    return taken


def sparse_log(path: Path, size: int = 2 * 2**30) -> None:
    """Two cycles, a hole of NUL bytes up to ``size`` (a crash; sparse, no disk used), then the
    logger going on with cycles 3 and 4."""
    path.write_text(LOG_HEADER + log_rows(1) + log_rows(2), encoding="utf-8")
    with open(path, "r+b") as handle:
        handle.truncate(size)
        handle.seek(size)
        handle.write(("\n" + log_rows(3) + log_rows(4)).encode())


def test_a_2_gib_log_is_read_a_slice_at_a_time(tmp_path: Path) -> None:
    import tracemalloc

    sparse_log(tmp_path / "robot.csv")
    source = LogTailSource(tail_log_config(tmp_path / "robot.csv"), lambda *a, **k: None)
    tracemalloc.start()
    try:
        frames = first_frames(source, 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(f.part_id, f.error is None) for f in frames] == [
        ("1", True),
        ("2", False),  # cut short by the crash
        ("row-9", False),  # the hole: one line of 2 GiB, answered ERROR
        ("3", True),
    ]
    assert "row 9" in frames[1].error and "NUL" in frames[2].error
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_predict_answers_every_bad_log_with_an_error_row(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    hostile_log(logs / "hostile.csv")
    sparse_log(logs / "huge.csv")
    (logs / "more_fields.csv").write_text(LOG_HEADER + log_rows(1) + "0.4;2;1;1;;;x\n")
    (logs / "empty.csv").write_text("")
    card = fake_card(SERIES_SPEC, log=LOG, segment=SEGMENT)
    rows = predicted(card, logs, tmp_path)
    for name in ("hostile.csv", "huge.csv", "more_fields.csv", "empty.csv"):
        assert rows[name]["decision"] == "ERROR" and name in rows[name]["error"], rows[name]
    assert "MiB" in rows["huge.csv"]["error"]
