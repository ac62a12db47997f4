"""A TCP proxy that can be cut: a database server going away and coming back (RELIABILITY T28).

Run as ``python -m tests.tcpcut LISTEN_PORT TARGET_HOST TARGET_PORT`` (what
:class:`CutProxy` does): it forwards every connection to the target until
it gets SIGUSR1, which closes every open connection and stops listening, so
that new connections are refused, as when the server has stopped; SIGUSR2
listens again. It prints ``ready``, ``cut`` or ``restored`` once each is in
effect. A subprocess, so that its threads and sockets are not counted as the
node's (tests/procwatch.py), and so that the shared PostgreSQL cluster
itself is never stopped.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from types import TracebackType

__all__ = ["CutProxy"]


class CutProxy:
    """The proxy subprocess: ``port`` to connect to, :meth:`cut` and :meth:`restore`."""

    def __init__(self, target_host: str, target_port: int, port: int) -> None:
        self.port = port
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.tcpcut", str(port), target_host, str(target_port)],
            stdout=subprocess.PIPE, text=True)
        self._expect("ready")

    def _expect(self, word: str) -> None:
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        assert line == word, f"tcpcut said {line!r}, expected {word!r}"

    def cut(self) -> None:
        self._process.send_signal(signal.SIGUSR1)
        self._expect("cut")

    def restore(self) -> None:
        self._process.send_signal(signal.SIGUSR2)
        self._expect("restored")

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _main(port: int, host: str, target: int) -> None:
    open_writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, target)
        except OSError:
            writer.close()
            return
        open_writers.update((writer, up_writer))
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        open_writers.difference_update((writer, up_writer))

    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
    commands: asyncio.Queue[str] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGUSR1, commands.put_nowait, "cut")
    loop.add_signal_handler(signal.SIGUSR2, commands.put_nowait, "restored")
    print("ready", flush=True)
    while True:
        command = await commands.get()
        if command == "cut":
            server.close()
            for writer in list(open_writers):
                writer.transport.abort()  # a reset, as from a server that went away
            open_writers.clear()
            await server.wait_closed()
        else:
            server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
        print(command, flush=True)


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
