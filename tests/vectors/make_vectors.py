"""Write the committed test-vector vault tests/vectors/v1 and its description v1.json.

Run once per format version (``python tests/vectors/make_vectors.py``); the output is
committed and must keep decrypting forever (tests/test_vectors.py), so this script is
not run by the suite.  Contents are deterministic; ciphertext is not (random nonces).
It wrote format version 1 with the version-1 Vault and is kept as the record of how
``v1/`` was made; the version-2 vectors are written by the version-2 Vault.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from vaultfs.format.keyfile import TEST_KDF  # noqa: E402
from vaultfs.vault import Vault, init_vault  # noqa: E402

PASSWORD = "correct horse vector staple"
LONG_NAME = "a very long file name that needs the long-name sidecar because its encryption is long " + "x" * 60 + ".jpg"


def contents() -> dict[str, bytes | None | str]:
    """Plaintext tree: bytes = file, None = directory, str = symlink target."""
    rng = random.Random(20261128)
    return {
        "/hello.txt": b"Hello, vaultfs!\n",
        "/empty": b"",
        "/block-4096.bin": bytes(rng.randrange(256) for _ in range(4096)),
        "/chats": None,
        "/chats/msgstore.db": bytes(rng.randrange(256) for _ in range(10000)),
        "/chats/Ünïcödé naïve.txt": "Grüße 👋\n".encode(),
        "/chats/media": None,
        "/chats/media/photo.jpg": bytes(rng.randrange(256) for _ in range(5000)),
        "/chats/media/" + LONG_NAME: b"long name contents\n",
        "/link": "chats/msgstore.db",
    }


def main() -> None:
    target = os.path.join(HERE, "v1")
    if os.path.exists(target):
        shutil.rmtree(target)
    recovery_key = init_vault(target, PASSWORD, TEST_KDF)
    vault = Vault.unlock(target, PASSWORD)
    tree: dict[str, dict[str, object]] = {}
    for path, value in contents().items():
        if value is None:
            vault.mkdir(path, 0o755)
            tree[path] = {"type": "dir"}
        elif isinstance(value, str):
            vault.symlink(value, path)
            tree[path] = {"type": "symlink", "target": value}
        else:
            handle = vault.create(path, 0o644, os.O_RDWR)
            handle.write(0, value)
            handle.close()
            tree[path] = {"type": "file", "size": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    vault.close()
    description = {
        "password": PASSWORD,
        "recovery_key": recovery_key,
        "kdf": {"memory_kib": TEST_KDF.memory_kib, "time_cost": TEST_KDF.time_cost,
                "parallelism": TEST_KDF.parallelism},
        "tree": tree,
    }
    with open(os.path.join(HERE, "v1.json"), "w", encoding="utf-8") as handle:
        json.dump(description, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


if __name__ == "__main__":
    main()
