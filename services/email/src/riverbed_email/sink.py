"""A local SMTP sink for ``make run``: accepts every message, writes each as an ``.eml`` file.

``python -m riverbed_email.sink --port 1025 --directory var/mail`` listens on
127.0.0.1 and writes one file per message and recipient, named by arrival time, with
``Return-Path`` and ``Delivered-To`` lines added on top as a mailbox would. Files are
written under a temporary name and renamed, so a reader never sees half a message. It
is for development: no TLS, no auth, no size limit beyond aiosmtpd's 32 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from riverbed.logging import configure_logging

log = structlog.get_logger("riverbed_email.sink")


class MaildirWriter:
    """aiosmtpd handler: every message accepted, each recipient's copy written to a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        for recipient in envelope.rcpt_tos:
            path = self._write(envelope.mail_from or "", recipient, content)
            log.info("mail received", file=path.name, size=len(content))
        return "250 2.0.0 OK: written to the sink"

    def _write(self, sender: str, recipient: str, content: bytes) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{stamp}-{uuid.uuid4().hex[:12]}.eml"
        header = f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode()
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(header + content)
        final = self.directory / name
        os.replace(temporary, final)
        return final


async def serve(host: str, port: int, directory: Path) -> None:
    loop = asyncio.get_running_loop()
    handler = MaildirWriter(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="riverbed-sink", ident="riverbed sink"), host, port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("SMTP sink listening", host=host, port=port, directory=str(directory))
    await stop.wait()
    server.close()
    await server.wait_closed()
    log.info("SMTP sink stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--directory", type=Path, default=Path("var/mail"))
    args: Any = parser.parse_args(argv)
    configure_logging("INFO", "auto", service="email-sink")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per command
    asyncio.run(serve(args.host, args.port, args.directory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
