"""The `make run` broker: kombu's filesystem transport with messages written atomically."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from queue import Empty

from kombu import Connection
from kombu.transport import filesystem

from studio import broker


def _channel(tmp_path):
    (tmp_path / "queue").mkdir(exist_ok=True)
    (tmp_path / "control").mkdir(exist_ok=True)
    folder = str(tmp_path / "queue")
    options = {
        "data_folder_in": folder,
        "data_folder_out": folder,
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
    }
    return Connection(transport=broker.Transport, transport_options=options).channel()


def _read_mid_write(monkeypatch, module, writer, reader) -> object:
    """Put a message through `writer` and, when half of it is on disk, try to read it."""
    seen: list[object] = []

    class HalfThenLook:
        def __init__(self, fh) -> None:
            self.fh = fh

        def write(self, data: bytes) -> int:
            half = len(data) // 2
            self.fh.write(data[:half])
            self.fh.flush()
            try:
                seen.append(reader._get("jobs"))
            except Exception as exc:
                seen.append(exc)
            return half + self.fh.write(data[half:])

        def __getattr__(self, name: str) -> object:
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    def opener(path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by the wrapper or the caller
        return HalfThenLook(fh) if "w" in mode else fh

    monkeypatch.setattr(module, "open", opener, raising=False)
    writer._put("jobs", {"body": "x" * 10_000})
    monkeypatch.undo()
    return seen[0]


def test_a_reader_never_sees_a_half_written_message(monkeypatch, tmp_path):
    writer, reader = _channel(tmp_path), _channel(tmp_path)
    assert isinstance(_read_mid_write(monkeypatch, broker, writer, reader), Empty)
    assert reader._get("jobs") == {"body": "x" * 10_000}


def test_kombus_own_transport_hands_it_out(monkeypatch, tmp_path):
    """The race the subclass exists for; if kombu fixes it, this test says the subclass can go."""
    writer, reader = _channel(tmp_path), _channel(tmp_path)
    own_put = filesystem.Channel._put.__get__(writer)
    monkeypatch.setattr(writer, "_put", own_put)
    outcome = _read_mid_write(monkeypatch, filesystem, writer, reader)
    assert isinstance(outcome, ValueError)  # json.JSONDecodeError: the worker would exit


def test_make_runs_default_broker_uses_it():
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env["DJANGO_SETTINGS_MODULE"] = "studio.settings"
    code = "from django.conf import settings; print(settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["filesystem://", "studio.broker:Transport"]
