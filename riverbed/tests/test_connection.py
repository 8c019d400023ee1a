"""Connecting to Redis the ways operators configure it: ACL users, TLS, and a clean close.

The Redis servers here are private ``redis-server`` processes started by the tests
(``own_redis`` or :class:`TlsRedisServer`); nothing is written to any other Redis.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import redis.asyncio
from pydantic import ValidationError
from redis.asyncio.connection import SSLConnection
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from riverbed.connection import connect, redacted_url, redis_connection
from riverbed.settings import RedisSettings
from riverbed.testing import RedisServer, free_port, wait_for

ACCEPTED = "redis://, rediss:// or unix://"


@pytest.fixture(autouse=True)
def _single_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests start single-node servers of their own, also in a cluster test run."""
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)


# -- REDIS_URL validation -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("http://127.0.0.1:6379/0", "http"),
        ("tcp://127.0.0.1:6379", "tcp"),
        ("valkey://127.0.0.1:6379/0", "valkey"),
        ("REDIS://127.0.0.1:6379/0", "REDIS"),
    ],
)
def test_an_unsupported_scheme_is_refused_naming_it_and_the_accepted_ones(
    url: str, scheme: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        RedisSettings(url=url)
    message = str(refused.value)
    assert f"scheme {scheme!r} is not supported" in message
    assert ACCEPTED in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://app:s3cret@127.0.0.1:6379/0",
        "rediss://app:s3cret@redis.internal:6380/1?ssl_ca_certs=%2Fetc%2Fssl%2Fca.pem",
        "unix:///run/redis/redis.sock?db=2",
    ],
)
def test_the_accepted_schemes_validate(url: str) -> None:
    assert RedisSettings(url=url).url.get_secret_value() == url


@pytest.mark.parametrize("url", ["http://app:s3cret@127.0.0.1:6379/0", "app:s3cret@127.0.0.1:6379"])
def test_a_refused_url_does_not_echo_its_password(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        RedisSettings(url=url)
    assert "s3cret" not in str(refused.value)


# -- redacted_url ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # unencoded '@' in the password: the host is what follows the last '@'
        ("redis://app:p@ss@127.0.0.1:6379/0", "redis://app:***@127.0.0.1:6379/0"),
        (
            "rediss://app:s3cret@h:6380/0?ssl_ca_certs=%2Fca.pem",
            "rediss://app:***@h:6380/0?ssl_ca_certs=%2Fca.pem",
        ),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ],
)
def test_redacted_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0?password=s3cret",
        "rediss://127.0.0.1:6380/0?ssl_keyfile=%2Fk.pem&ssl_password=s3cret",
    ],
)
def test_redacted_url_hides_a_password_given_in_the_query_string(url: str) -> None:
    assert "s3cret" not in redacted_url(url)


# -- ACL users ------------------------------------------------------------------


@pytest.fixture
async def acl_redis(own_redis: RedisServer) -> RedisServer:
    """A private Redis with the ACL users ``app`` (password s3cret) and ``odd``.

    Both may touch only ``rb:*`` keys; ``odd`` has a password full of URL delimiters.
    """
    async with redis.asyncio.Redis(port=own_redis.port) as admin:
        # ACL SETUSER <name> on ><password> ~rb:* +@all
        for user, password in (("app", "s3cret"), ("odd", "p@ss:w/rd #1?%")):
            await admin.acl_setuser(
                user, enabled=True, passwords=[f"+{password}"], keys=["rb:*"], commands=["+@all"]
            )
    return own_redis


def acl_url(server: RedisServer, user: str = "app", password: str = "s3cret") -> str:
    # Percent-encoding makes any password safe in a URL; redis-py decodes it.
    return f"redis://{user}:{quote(password, safe='')}@127.0.0.1:{server.port}/0"


@pytest.mark.integration
@pytest.mark.parametrize(("user", "password"), [("app", "s3cret"), ("odd", "p@ss:w/rd #1?%")])
async def test_an_acl_user_in_the_url_can_ping_and_write_under_rb(
    acl_redis: RedisServer, unique: str, user: str, password: str
) -> None:
    client = connect(RedisSettings(url=acl_url(acl_redis, user, password)))
    try:
        assert await client.ping()
        whoami = await client.acl_whoami()
        assert (whoami.decode() if isinstance(whoami, bytes) else whoami) == user
        assert await client.set(f"rb:{{test}}:{unique}", b"v")
        assert await client.get(f"rb:{{test}}:{unique}") == b"v"
        # The ACL is really in force: the connection is not the all-powerful default user.
        with pytest.raises(NoPermissionError):
            await client.set(f"other:{unique}", b"v")
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_a_wrong_password_is_refused_with_an_authentication_error(
    acl_redis: RedisServer,
) -> None:
    settings = RedisSettings(url=acl_url(acl_redis, password="wrong"))
    entered = False
    with pytest.raises(AuthenticationError):
        async with redis_connection(settings):
            entered = True
    assert not entered, "redis_connection must prove the URL at entry"


@pytest.mark.integration
async def test_redacted_url_hides_the_acl_password_but_names_user_and_host(
    acl_redis: RedisServer,
) -> None:
    url = acl_url(acl_redis)
    async with redis_connection(RedisSettings(url=url)) as client:
        assert await client.ping()  # the URL is a working one
    shown = redacted_url(url)
    assert "s3cret" not in shown
    assert shown == f"redis://app:***@127.0.0.1:{acl_redis.port}/0"


# -- redis_connection: open at entry, closed at exit ----------------------------


@pytest.mark.integration
async def test_redis_connection_fails_at_entry_when_nothing_listens() -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1.0)
    entered = False
    with pytest.raises(RedisConnectionError):
        async with redis_connection(settings):
            entered = True
    assert not entered


class BodyFailed(Exception):
    pass


@pytest.mark.integration
@pytest.mark.parametrize("body_raises", [False, True], ids=["normal-exit", "body-raises"])
async def test_redis_connection_closes_its_connections_at_exit(
    own_redis: RedisServer, body_raises: bool
) -> None:
    async with redis.asyncio.Redis(port=own_redis.port) as admin:

        async def connected(client_id: int) -> bool:
            return bool(await admin.client_list(client_id=[client_id]))

        client_id = -1
        with pytest.raises(BodyFailed) if body_raises else contextlib.nullcontext():
            async with redis_connection(RedisSettings(url=own_redis.url)) as client:
                client_id = await client.client_id()
                assert await connected(client_id), "the client's connection is open inside"
                if body_raises:
                    raise BodyFailed

        async def dropped() -> bool:
            return not await connected(client_id)

        await wait_for(
            dropped, timeout=5.0, what=f"Redis to drop client {client_id} after the exit"
        )


# -- TLS (rediss://) ------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _issue(directory: Path, name: str, subject: str, extensions: str) -> None:
    """A P-256 key and a one-day certificate for it, signed by ca.key."""
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        directory,
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
    )  # fmt: skip
    _openssl(
        directory,
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-set_serial", str(int(time.time_ns())), "-days", "1",
        "-out", f"{name}.crt", "-extfile", f"{name}.ext",
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the TLS tests make their certificates with the openssl CLI, not on PATH")
    directory = tmp_path_factory.mktemp("tls")
    _openssl(
        directory,
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=Riverbed test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    common = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _issue(
        directory,
        "server",
        "/CN=127.0.0.1",
        common + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    _issue(directory, "client", "/CN=app", common + "extendedKeyUsage=clientAuth\n")
    return TlsFiles(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


@dataclass
class TlsRedisServer(RedisServer):
    """A redis-server listening only on a TLS port: ``self.port`` is the TLS port."""

    tls: TlsFiles | None = None
    auth_clients: bool = False

    def __post_init__(self) -> None:
        assert self.tls is not None
        # Later arguments win: this "--port 0" turns off the plain port RedisServer opens.
        self.extra_config = {
            "port": "0",
            "tls-port": str(self.port),
            "tls-cert-file": str(self.tls.server_cert),
            "tls-key-file": str(self.tls.server_key),
            "tls-ca-cert-file": str(self.tls.ca),
            "tls-auth-clients": "yes" if self.auth_clients else "no",
            **self.extra_config,
        }

    def url_with(self, **query: Path) -> str:
        """``rediss://`` with ``query`` as redis-py's ssl_* URL parameters, percent-encoded."""
        params = "&".join(f"{name}={quote(str(value), safe='')}" for name, value in query.items())
        return f"rediss://127.0.0.1:{self.port}/0" + (f"?{params}" if params else "")

    def _wait_until_answering(self, timeout: float = 10.0) -> None:
        # RedisServer pings the plain port, which is off here: PING over TLS instead.
        assert self.tls is not None
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.tls.ca),
            ssl_certfile=str(self.tls.client_cert),
            ssl_keyfile=str(self.tls.client_key),
            socket_connect_timeout=0.2,
        )
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    log = (self.directory / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server exited at start:\n{log[-2000:]}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)  # poll interval under the deadline above
        finally:
            client.close()


# What a redis-server built without TLS says when given --tls-port (6.x: unknown
# directive; 7.2+: no "tls" connection type).
NO_TLS_SUPPORT = re.compile(
    r"bad directive|not supported|missing implement|unknown|unrecognized", re.IGNORECASE
)


@pytest.fixture
def start_tls_redis(tls_files: TlsFiles) -> Iterator[Callable[..., TlsRedisServer]]:
    """Start TLS-only Redis servers; skip when this redis-server cannot do TLS."""
    if shutil.which("redis-server") is None:
        pytest.skip("the TLS tests start a private redis-server, which is not on PATH")
    started: list[tuple[TlsRedisServer, Path]] = []

    def start(*, auth_clients: bool = False) -> TlsRedisServer:
        directory = Path(tempfile.mkdtemp(prefix="rb-tls-redis-"))
        server = TlsRedisServer(directory, tls=tls_files, auth_clients=auth_clients)
        started.append((server, directory))
        try:
            server.start()
        except RuntimeError as error:
            log = str(error)
            if "tls" in log.lower() and NO_TLS_SUPPORT.search(log):
                pytest.skip(f"this redis-server has no TLS support (built without it?):\n{log}")
            raise
        return server

    yield start
    for server, directory in started:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.integration
async def test_a_rediss_url_with_the_ca_in_its_query_string_connects_over_tls(
    start_tls_redis: Callable[..., TlsRedisServer], tls_files: TlsFiles
) -> None:
    server = start_tls_redis()
    settings = RedisSettings(url=server.url_with(ssl_ca_certs=tls_files.ca))
    async with redis_connection(settings) as client:
        assert client.connection_pool.connection_class is SSLConnection
        assert await client.ping()
        assert await client.echo(b"over tls") == b"over tls"


@pytest.mark.integration
async def test_a_rediss_url_without_the_ca_fails_certificate_verification(
    start_tls_redis: Callable[..., TlsRedisServer],
) -> None:
    server = start_tls_redis()
    with pytest.raises(RedisConnectionError, match=r"(?i)certificate verify failed"):
        async with redis_connection(RedisSettings(url=server.url_with())):
            pass


@pytest.mark.integration
async def test_a_plain_redis_url_cannot_talk_to_the_tls_port(
    start_tls_redis: Callable[..., TlsRedisServer],
) -> None:
    server = start_tls_redis()
    settings = RedisSettings(url=f"redis://127.0.0.1:{server.port}/0", connect_timeout=1.0)
    with pytest.raises(RedisConnectionError):
        async with redis_connection(settings):
            pass


@pytest.mark.integration
async def test_mutual_tls_takes_the_client_certificate_from_the_query_string(
    start_tls_redis: Callable[..., TlsRedisServer], tls_files: TlsFiles
) -> None:
    server = start_tls_redis(auth_clients=True)
    with_cert = server.url_with(
        ssl_ca_certs=tls_files.ca,
        ssl_certfile=tls_files.client_cert,
        ssl_keyfile=tls_files.client_key,
    )
    async with redis_connection(RedisSettings(url=with_cert)) as client:
        assert await client.ping()

    without_cert = RedisSettings(url=server.url_with(ssl_ca_certs=tls_files.ca))
    with pytest.raises(RedisConnectionError):
        async with redis_connection(without_cert):
            pass


async def test_more_concurrent_commands_than_connections_wait_for_one(redis_url: str) -> None:
    import asyncio

    from riverbed.connection import connect
    from riverbed.settings import RedisSettings

    client = connect(RedisSettings(url=redis_url, max_connections=2))
    try:
        # 50 at once on 2 connections: each waits for a free one, none fails
        replies = await asyncio.gather(*(client.ping() for _ in range(50)))
        assert replies == [True] * 50
    finally:
        await client.aclose()
