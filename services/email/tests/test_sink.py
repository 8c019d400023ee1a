"""The local SMTP sink of ``make run``: every message becomes an ``.eml`` file."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import aiosmtplib

from riverbed.testing import free_port, wait_for


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_sink(port: int, directory: Path, log: Path) -> subprocess.Popen[bytes]:
    args = ["-m", "riverbed_email.sink", "--port", str(port), "--directory", str(directory)]
    with open(log, "ab") as output:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, *args],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def test_the_sink_writes_each_message_as_an_eml_file_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    port, directory, log = free_port(), tmp_path / "mail", tmp_path / "sink.log"
    sink = start_sink(port, directory, log)
    try:
        await wait_for(lambda: accepts_connections(port), timeout=30, what="the sink listening")
        message = (
            "From: a@riverbed.test\r\nTo: ada@example.com\r\nSubject: Hi\r\n"
            "Message-ID: <sink-1@riverbed.test>\r\n\r\nHello sink\r\n"
        )
        await aiosmtplib.send(
            message,
            sender="a@riverbed.test",
            recipients=["ada@example.com"],
            hostname="127.0.0.1",
            port=port,
            local_hostname="client.test",
        )
        await wait_for(lambda: any(directory.glob("*.eml")), what="an .eml file")
        [file] = directory.glob("*.eml")
        written = message_from_bytes(file.read_bytes(), policy=policy.default)
        assert written["Message-ID"] == "<sink-1@riverbed.test>"
        assert written["Delivered-To"] == "ada@example.com"
        assert written["Return-Path"] == "<a@riverbed.test>"
        assert not list(directory.glob(".*.tmp")), "no temporary file is left behind"
    finally:
        sink.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(sink.wait, 10)
    output = log.read_text(errors="replace")
    assert code == 0, output
    assert "SMTP sink stopped" in output
