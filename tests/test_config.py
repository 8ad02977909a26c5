"""Configuration errors name the key path and the expectation; the CLI exits 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowedge.cli import main
from flowedge.core.errors import EXIT_USAGE, ConfigError
from flowedge.edge.config import load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def _error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="station.yaml")
    return str(info.value)


def test_defaults_are_valid() -> None:
    config = parse_config({})
    assert config.detector.kind == "csflow" and config.sources == []


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config.yaml")
    assert config.sources and config.detector.backbone.name


def uncommented(text: str, start: str, end: str, indent: str) -> str:
    """The lines between ``start`` and ``end`` with their ``<indent># `` commenting removed."""
    lines = text[text.index(start) : text.index(end)].splitlines()
    return "\n".join(
        indent + line[len(indent) + 2 :] if line.startswith(indent + "# ") else line
        for line in lines
    )


def test_every_commented_example_in_config_yaml_is_valid() -> None:
    """A robot-cell, microphone or second-broker engineer starts from the commented
    examples: each source kind and the further sink must load as written."""
    import yaml

    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["sources"] = yaml.safe_load(uncommented(text, "sources:", "pipeline:", "  "))["sources"]
    data["sinks"] = yaml.safe_load(uncommented(text, "# sinks:", "# Store and", ""))["sinks"]
    config = parse_config(data)
    kinds = {source.kind for source in config.sources}
    assert kinds == {"folder", "camera", "watch", "tail", "ethercat", "microphone", "triggered"}
    assert [source.modality for source in config.sources if source.kind == "folder"] == [
        "image",
        "audio",
    ]
    assert [sink.name for sink in config.active_sinks()] == [
        "mqtt",
        "uns",
        "scada",
        "opcua",
        "history",
        "web",
    ]


def test_a_key_of_another_detector_is_named() -> None:
    message = _error({"detector": {"kind": "gaussian", "n_blocks": 4}})
    assert "detector.n_blocks: unknown key" in message and "1 problem(s)" in message


def test_image_size_is_one_side_or_height_and_width() -> None:
    assert parse_config({"detector": {"image_size": [256, 512]}}).detector.input_hw == (256, 512)
    assert parse_config(
        {"detector": {"kind": "gaussian", "image_size": 256}}
    ).detector.input_hw == (
        256,
        256,
    )
    assert "detector.image_size: give one side or [height, width]" in _error(
        {"detector": {"image_size": [256, 512, 3]}}
    )


def test_a_detector_brings_its_training_defaults_under_the_files_section(tmp_path: Path) -> None:
    """CNF is measured with its own optimiser settings: `--detector cnf` alone gets them, and
    whatever the file's training section says still wins."""
    from flowedge.flows.cmd_train import training_configs
    from flowedge.flows.config import CNF_TRAINING, TrainingConfig

    _, training = training_configs(None, {"detector": "cnf"})
    assert training == TrainingConfig(**CNF_TRAINING)
    path = tmp_path / "cnf.yaml"
    path.write_text("detector: {kind: cnf}\ntraining: {lr: 0.002, epochs: 3}\n", encoding="utf-8")
    _, training = training_configs(path, {})
    assert (training.lr, training.epochs, training.adam_eps) == (0.002, 3, CNF_TRAINING["adam_eps"])
    assert parse_config({"detector": {"kind": "cnf"}}).training == TrainingConfig(**CNF_TRAINING)
    assert training_configs(None, {})[1] == TrainingConfig()  # CS-Flow: the plain defaults
    assert training_configs(None, {"detector": "ast"})[1].epochs == 64  # both phases
    assert training_configs(None, {"detector": "ast", "epochs": 2})[1].epochs == 2


def test_detector_configs_validate_without_torch() -> None:
    """The station checks config.yaml with the detector models and must not pull in torch."""
    code = (
        "import sys; import flowedge.edge.config, flowedge.flows.config; "
        "assert not {'torch', 'timm', 'FrEIA'} & set(sys.modules), 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_key_names_its_path() -> None:
    message = _error({"mqtt": {"hots": "broker"}})
    assert "mqtt.hots: unknown key" in message
    assert message.startswith("station.yaml: invalid configuration (1 problem(s))")


def test_wrong_enum_names_path_choices_and_value() -> None:
    message = _error(
        {"sources": [{"name": "cam", "kind": "folder", "path": "x", "backpressure": "drop"}]}
    )
    assert (
        "sources[0].backpressure: Input should be 'block' or 'drop_oldest' (got 'drop')" in message
    )


def test_missing_source_path_is_explained() -> None:
    message = _error(
        {
            "sources": [
                {"name": "ok", "kind": "folder", "path": "x"},
                {"name": "cam", "kind": "watch"},
            ]
        }
    )
    assert "sources[1].path: Field required" in message  # the watch kind's own key
    assert "got {" not in message  # the whole section is not dumped into the message


def test_several_problems_are_all_listed() -> None:
    message = _error({"detector": {"image_size": 8, "kind": "flow"}, "training": {"epochs": 0}})
    assert "3 problem(s)" in message
    for path in ("detector.image_size", "detector.kind", "training.epochs"):
        assert path in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- a\n- b\n", "top level must be a mapping"),
        ("site: [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_train_cli_bad_config_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "detector:\n  kind: csflow\n  backbone:\n    wieghts: none\ntraining:\n  epochs: -1\n"
    )
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "out"), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "detector.backbone.wieghts: unknown key" in err
    assert "training.epochs: Input should be greater than or equal to 1 (got -1)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_train_cli_flag_is_validated_like_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "out"), "--image-size", "16"])
    err = capsys.readouterr().err
    assert (
        code == EXIT_USAGE
        and "command line" in err
        and "detector.image_size" in err
        and "Traceback" not in err
    )


# --- issue 10: what would fail at run time is refused at load ---------------------------

FOLDER = {"name": "cam", "kind": "folder", "path": "x"}


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_threshold_is_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(f"model:\n  threshold: {value}\nsources: [{{name: a, kind: watch, path: x}}]\n")
    with pytest.raises(ConfigError, match="model.threshold: Input should be a finite number"):
        load_config(path)


@pytest.mark.parametrize(
    "prefix, expected",
    [
        ("plant/#", "wildcards"),
        ("plant/+/x", "wildcards"),
        ("a\0b", "NUL"),
        ("$SYS/flowedge", "must not start with '$'"),
        ("", "must not be empty"),
        ("plant//flowedge", "empty topic level"),
        ("é" * 40_000, "MQTT allows at most 65535"),
    ],
)
def test_topic_prefix_follows_the_mqtt_topic_rules(prefix: str, expected: str) -> None:
    message = _error({"mqtt": {"topic_prefix": prefix}})
    assert "mqtt.topic_prefix:" in message and expected in message
    assert len(message) < 500  # a huge hostile value is shortened, not echoed


def test_valid_multi_level_prefix_is_accepted() -> None:
    assert parse_config({"mqtt": {"topic_prefix": "plant-a/vision"}}).mqtt.topic_prefix


def test_names_used_in_topics_refuse_wildcards() -> None:
    message = _error({"site": "a/#", "station": "s+", "sources": [{**FOLDER, "name": "c\0"}]})
    for path in ("site:", "station:", "sources[0].name:"):
        assert path in message


def test_prefix_that_makes_topics_too_long_is_refused() -> None:
    message = _error({"mqtt": {"topic_prefix": "p" * 65_520}, "sources": [FOLDER]})
    assert "topics would be" in message


@pytest.mark.parametrize(
    "mqtt, path",
    [
        ({"keepalive_s": 70_000}, "mqtt.keepalive_s"),
        ({"message_expiry_s": 2**32}, "mqtt.message_expiry_s"),
        ({"client_id": ""}, "mqtt.client_id"),
        ({"client_id": "x" * 70_000}, "mqtt.client_id"),
        ({"client_id": "a\0b"}, "mqtt.client_id"),
        ({"username": "u\0"}, "mqtt.username"),
        ({"reconnect_min_s": 60, "reconnect_max_s": 30}, "mqtt"),
        ({"tls": {"key_file": "client.key"}}, "mqtt.tls"),
    ],
)
def test_mqtt_limits(mqtt: dict, path: str) -> None:
    assert f"  {path}" in _error({"mqtt": mqtt})


def test_mqtt_maximum_values_are_accepted() -> None:
    cfg = parse_config({"mqtt": {"keepalive_s": 65535, "message_expiry_s": 2**32 - 1}})
    assert cfg.mqtt.keepalive_s == 65535


@pytest.mark.parametrize("pattern", ["../*.png", "*.png,sub/../../*.png", "/etc/*", "C:\\x\\*.png"])
def test_patterns_stay_inside_the_source_folder(pattern: str) -> None:
    message = _error({"sources": [{**FOLDER, "pattern": pattern}]})
    assert "sources[0].pattern:" in message


def test_empty_pattern_list_is_refused() -> None:
    assert "at least one file pattern" in _error({"sources": [{**FOLDER, "pattern": " , "}]})


def _station_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text("sources:\n  - {name: cam, kind: folder, path: x}\n" + text)
    return path


def test_a_station_needs_a_source(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("sources: []\n")
    with pytest.raises(ConfigError, match="sources: a station needs at least one source"):
        load_config(path)


def test_username_without_password_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATION_PW", raising=False)
    path = _station_file(tmp_path, "mqtt:\n  username: station3\n  password_env: STATION_PW\n")
    with pytest.raises(ConfigError, match="STATION_PW is empty or unset"):
        load_config(path)
    monkeypatch.setenv("STATION_PW", "secret")
    assert load_config(path).mqtt.resolved_password() == "secret"


def test_username_from_the_environment_needs_a_password_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWEDGE_MQTT_USERNAME", "station3")
    monkeypatch.delenv("FLOWEDGE_MQTT_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="FLOWEDGE_MQTT_PASSWORD"):
        load_config(_station_file(tmp_path, ""))


def test_unreadable_tls_files_are_named(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    path = _station_file(
        tmp_path, f"mqtt:\n  tls:\n    ca_file: {ca}\n    cert_file: {tmp_path / 'absent.crt'}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "mqtt.tls.cert_file: cannot read" in str(info.value)
    assert "ca_file" not in str(info.value)


def test_disabled_mqtt_needs_no_credentials(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FLOWEDGE_MQTT_PASSWORD", raising=False)
    path = _station_file(tmp_path, "mqtt:\n  enabled: false\n  username: u\n")
    assert not load_config(path).mqtt.enabled


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "site: a\nstation: b\nsite: c\n",
            "line 3, column 1: not valid YAML: duplicate key 'site'",
        ),
        ("mqtt:\n  port: 1\n  port: 2\n", "duplicate key 'port' (first given on line 2)"),
        (
            "a: &a [x, x]\nb: [*a, *a]\n",
            "line 2, column 5: not valid YAML: alias *a is not allowed",
        ),
        ("x: \x00\n", "not valid YAML"),
    ],
)
def test_yaml_duplicates_and_aliases_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"config file {path}") and expected in str(info.value)


def test_billion_laughs_is_refused_before_expansion(tmp_path: Path) -> None:
    levels = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")
    with pytest.raises(ConfigError, match="alias \\*l0 is not allowed"):
        load_config(path)


def test_oversized_and_non_utf8_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="too large for a configuration file"):
        load_config(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"site: caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(latin)


def test_train_reads_its_sections_with_the_same_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("training:\n  epochs: 1\n  epochs: 2\n")
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "out"), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "duplicate key 'epochs'" in err and "Traceback" not in err


# --- issue 20: absurd but well-typed values are bounded at load, naming the key ----------------

WATCH = {"name": "cam", "kind": "watch", "path": "x"}
CAMERA = {"name": "cam", "kind": "camera", "uri": "0"}
TAIL = {"name": "robot", "kind": "tail", "path": "x.csv"}
MICROPHONE = {"name": "mic", "kind": "microphone"}
ETHERCAT = {
    "name": "bus",
    "kind": "ethercat",
    "ethercat": {
        "interface": "eth1",
        "signals": [{"name": "t", "slave": 0, "offset": 0, "type": "int16"}],
    },
}


def _with(source: dict, section: str, values: dict) -> dict:
    return {"sources": [{**source, section: {**source.get(section, {}), **values}}]}


ABSURD = [
    ({"model": {"intra_op_threads": 10**12}}, "model.intra_op_threads"),  # was a TypeError
    ({"model": {"intra_op_threads": 2000}}, "model.intra_op_threads"),  # the station hung
    ({"sources": [{**FOLDER, "rate_hz": 1e-300}]}, "sources[0].rate_hz"),  # OverflowError
    ({"sources": [{**CAMERA, "rate_hz": 1e-300}]}, "sources[0].rate_hz"),
    ({"sources": [{**FOLDER, "reconnect_max_s": 1e300}]}, "sources[0].reconnect_max_s"),
    ({"sources": [{**FOLDER, "queue_size": 10**12}]}, "sources[0].queue_size"),
    ({"sources": [{**WATCH, "settle_timeout_s": 1e300}]}, "sources[0].settle_timeout_s"),
    ({"sources": [{**TAIL, "log": {"rate_hz": 1e-300}}]}, "sources[0].log.rate_hz"),
    ({"sources": [{**TAIL, "segment": {"mode": "window", "window_rows": 10**12}}]}, "window_rows"),
    (_with(MICROPHONE, "microphone", {"ring_s": 1e300}), "sources[0].microphone.ring_s"),
    (
        _with(MICROPHONE, "microphone", {"events": {"floor_window_s": 1e300}}),
        "sources[0].microphone.events.floor_window_s",
    ),
    (
        _with(MICROPHONE, "microphone", {"events": {"max_duration_s": 1e300}}),
        "sources[0].microphone.events.max_duration_s",
    ),
    (
        _with(MICROPHONE, "microphone", {"events": {"pre_roll_s": 1e300}}),
        "sources[0].microphone.events.pre_roll_s",
    ),
    (_with(ETHERCAT, "ethercat", {"cycle_s": 1e300}), "sources[0].ethercat.cycle_s"),
    (_with(ETHERCAT, "ethercat", {"block_rows": 10**12}), "sources[0].ethercat.block_rows"),
    (
        _with(ETHERCAT, "ethercat", {"receive_timeout_us": 10**12}),
        "sources[0].ethercat.receive_timeout_us",
    ),
    ({"pipeline": {"queue_size": 10**12}}, "pipeline.queue_size"),
    ({"pipeline": {"max_batch": 10**12}}, "pipeline.max_batch"),
    ({"pipeline": {"heatmap_keep": 10**30}}, "pipeline.heatmap_keep"),
    ({"pipeline": {"heatmap_keep_mb": 1e300}}, "pipeline.heatmap_keep_mb"),
    ({"pipeline": {"limits": {"max_file_mib": 1e300}}}, "pipeline.limits.max_file_mib"),
    ({"pipeline": {"limits": {"max_megapixels": 1e300}}}, "pipeline.limits.max_megapixels"),
    ({"spool": {"max_messages": 10**30}}, "spool.max_messages"),  # SQLite: OverflowError
    ({"mqtt": {"max_backlog": 10**30}}, "mqtt.max_backlog"),
    ({"mqtt": {"reconnect_max_s": 1e300}}, "mqtt.reconnect_max_s"),
    ({"drift": {"window": 10**12}}, "drift.window"),
    ({"drift": {"check_every": 10**30}}, "drift.check_every"),
]


@pytest.mark.parametrize("data, key", ABSURD, ids=[key for _, key in ABSURD])
def test_absurd_values_are_refused_at_load_naming_the_key(data: dict, key: str) -> None:
    message = _error(data)
    assert f"  {key}: " in message or f".{key}: " in message, message


def test_the_largest_sensible_values_are_accepted() -> None:
    cfg = parse_config(
        {
            "model": {"intra_op_threads": 256},
            "sources": [{**FOLDER, "rate_hz": 1 / 86_400, "reconnect_max_s": 86_400}],
            "pipeline": {"limits": {"max_megapixels": 1000}},
        }
    )
    assert cfg.model.intra_op_threads == 256 and cfg.sources[0].rate_hz == 1 / 86_400


def test_absurd_thread_count_ends_the_station_with_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _station_file(tmp_path, "model:\n  intra_op_threads: 1000000000000\n")
    code = main(["check", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == EXIT_USAGE and "model.intra_op_threads: " in out and "Traceback" not in out


def test_predict_refuses_an_absurd_thread_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from runtime_fakes import write_onnx_model

    model = write_onnx_model(tmp_path / "model.onnx")
    argv = ["predict", str(model), str(tmp_path), "--out", str(tmp_path / "s.csv")]
    code = main([*argv, "--threads", str(10**12)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "--threads" in err and "Traceback" not in err
