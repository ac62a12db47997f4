"""The key file: created once, whole, when several nodes start on one data folder at once."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from gateway.secrets import load_key


def test_nodes_starting_together_all_read_the_one_key_created(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets" / "hmac.key"
    start = threading.Barrier(8)
    keys: list[bytes] = []

    def node() -> None:
        start.wait()
        keys.append(load_key("", key_file, {}))

    threads = [threading.Thread(target=node) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 32
    assert key_file.read_text(encoding="ascii") == keys[0].hex() + "\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in key_file.parent.iterdir()] == ["hmac.key"], "a temporary was left"
    assert load_key("", key_file, {}) == keys[0]
