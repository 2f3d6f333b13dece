"""DeadlineSession: a request ends by its timeout in total, however slowly the server answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from sinks.request_deadline import DeadlineSession, total_seconds


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """Answers every request with a status line, then one header byte every 0.1 s, for 30 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(300):
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(b"X")
                    except OSError:
                        break
                    time.sleep(0.1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/logs"
    stop.set()
    thread.join(5)
    listener.close()


def test_a_trickling_answer_is_cut_at_the_deadline(trickling_server: str) -> None:
    session = DeadlineSession(default_deadline_s=30.0)
    started = time.monotonic()

    with pytest.raises(requests.RequestException):
        session.post(trickling_server, data=b"x", timeout=1.0)

    assert time.monotonic() - started < 3.0  # per-read timeouts alone would wait 30 s


def test_the_session_still_works_after_a_cut(trickling_server: str) -> None:
    session = DeadlineSession(default_deadline_s=0.5)
    for _ in range(2):
        with pytest.raises(requests.RequestException):
            session.post(trickling_server, data=b"x")


@pytest.mark.parametrize(
    ("timeout", "total"), [(10, 10.0), (2.5, 2.5), ((3, 7), 10.0), (None, None), ((3, None), None)]
)
def test_total_seconds(timeout: object, total: float | None) -> None:
    assert total_seconds(timeout) == total
