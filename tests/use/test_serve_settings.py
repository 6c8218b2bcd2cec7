"""The server's settings: every option in one value, validated once, errors naming the setting as typed."""

from __future__ import annotations

import pytest

from thyro.errors import ConfigError
from thyro.use.serve import ServeSettings, ServeSettingsError, create_app

TOKEN = "s3cret-token-for-tests-0123456789"


def test_a_refused_setting_is_named_as_a_python_caller_typed_it():
    cases = {
        "max_concurrency=0: must be at least 1.": {"max_concurrency": 0},
        "engine='tensorrt': choose 'torch' or 'onnx'.": {"engine": "tensorrt"},
        "method='cam': choose 'gradcam' or 'gradcam++'.": {"method": "cam"},
        "body_deadline_s=0: must be more than 0.": {"body_deadline_s": 0},
        "port=70000: must be at most 65535.": {"port": 70000},
        "max_upload_mb=5: not a setting of thyro serve.": {"max_upload_mb": 5},
    }
    for message, options in cases.items():
        with pytest.raises(ServeSettingsError) as info:
            ServeSettings(**options)
        assert str(info.value) == message
    with pytest.raises(ServeSettingsError) as info:  # every problem at once
        ServeSettings(queue=-1, max_batch=0)
    assert str(info.value) == "queue=-1: must be at least 0. max_batch=0: must be at least 1."
    assert [p.field for p in info.value.problems] == ["queue", "max_batch"]


def test_the_command_line_renders_the_same_problems_with_its_flags():
    with pytest.raises(ServeSettingsError) as info:
        ServeSettings(host="10.0.0.7")
    flags = info.value.render({"token": "--token", "insecure": "--insecure"}, lambda f, v: f"--{f} {v}")
    assert flags.startswith("--host 10.0.0.7 makes the server reachable from other machines")
    assert "(--token;" in flags and "pass --insecure if" in flags and "insecure=True" not in flags
    assert "(token='...';" in str(info.value) and "pass insecure=True if" in str(info.value)


def test_settings_are_frozen_and_a_changed_copy_is_validated_again():
    settings = ServeSettings(token=TOKEN, host="0.0.0.0", max_upload_bytes=1000)
    assert settings.max_body_bytes == 1000 + 64 * 1024
    with pytest.raises(Exception):
        settings.port = 1  # frozen
    assert settings.replace(port=9000).port == 9000 and settings.replace(port=9000).token_value == TOKEN
    with pytest.raises(ServeSettingsError, match="max_reading=0"):
        settings.replace(max_reading=0)
    with pytest.raises(ServeSettingsError, match="host='0.0.0.0' makes"):
        settings.replace(token=None)
    assert ServeSettings(host="0.0.0.0", insecure=True).token is None
    assert ServeSettings(token="").token is None  # an empty THYRO_SERVE_TOKEN is no token
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())  # never shown


def test_settings_or_options_not_both(model_dir):
    with pytest.raises(ConfigError, match="either settings or keyword options"):
        create_app(model_dir, ServeSettings(), queue=3)
    app = create_app(model_dir, ServeSettings(queue=3, max_batch=2))
    assert app.state.settings.queue == 3 and app.state.service.batcher.max_batch == 2
    assert app.state.service.health()["queue"] == 3
    app.state.service.close()
