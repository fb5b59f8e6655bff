"""``gateway serve --dev`` (``make run``) refuses a DHIS2 sandbox port another process holds.

It used to start the sandbox child, which failed to bind, and then take whatever listened on
the port for the sandbox (the connect check succeeded against it): the walkthrough said the
sandbox ran there, and the demo records were delivered to that other process.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer

from gateway.cli import dev as trial


def test_a_taken_sandbox_port_is_refused_before_the_sandbox_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    started: list[object] = []
    monkeypatch.setattr("subprocess.Popen", lambda *args, **kwargs: started.append(args))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(typer.Exit) as stopped:
            trial.start_sandbox(f"http://127.0.0.1:{port}")
    assert stopped.value.exit_code == 2
    assert not started
    err = capsys.readouterr().err
    assert f"gateway: the DHIS2 sandbox cannot listen on 127.0.0.1:{port}: " in err
    assert "another process listens there" in err
