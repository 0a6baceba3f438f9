"""Write the committed format-v2 test-vector vault tests/vectors/v2 and its description v2.json.

Run once per format version (``python tests/vectors/make_vectors.py``); the output is
committed and must keep decrypting forever (tests/test_vectors.py), so this script is
not run by the suite.  Contents are deterministic; ciphertext is not (random nonces).
It writes with the version-2 Vault.  ``v1/`` and ``v1.json`` were written by an earlier
version of this script with the version-1 Vault (the same tree without the entries only
version 2 has) and stay as they are: they are what ``vaultfs upgrade`` is tested on.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from vaultfs.format.keyfile import TEST_KDF  # noqa: E402
from vaultfs.vault import Vault, init_vault  # noqa: E402

PASSWORD = "correct horse vector staple, version 2"
LONG_NAME = "a very long file name that needs the long-name sidecar because its encryption is long " + "x" * 60 + ".jpg"
NFC = unicodedata.normalize("NFC", "Résumé café.txt")
NFD = unicodedata.normalize("NFD", "Résumé café.txt")
SPARSE = 300 * 4096 + 17  # bytes; data at the start, in the middle and at the end, holes between


def contents() -> dict[str, object]:
    """Plaintext tree: bytes = file, None = directory, str = symlink target, ("fifo",) / ("chardev", rdev)."""
    rng = random.Random(20261201)
    return {
        "/hello.txt": b"Hello, vaultfs version 2!\n",
        "/empty": b"",
        "/block-4096.bin": bytes(rng.randrange(256) for _ in range(4096)),
        "/chats": None,
        "/chats/msgstore.db": bytes(rng.randrange(256) for _ in range(10000)),
        "/chats/" + NFC: b"written on Linux (NFC)\n",
        "/chats/" + NFD: b"written from a Mac (NFD)\n",
        "/chats/media": None,
        "/chats/media/photo.jpg": bytes(rng.randrange(256) for _ in range(5000)),
        "/chats/media/" + LONG_NAME: b"long name contents\n",
        "/sparse.db": None,  # written below: a sparse file
        "/link": "chats/msgstore.db",
        "/pipe": ("fifo",),
        "/null": ("chardev", os.makedev(1, 3)),
    }


def sparse_content() -> bytes:
    data = bytearray(SPARSE)
    data[:5] = b"start"
    data[150 * 4096 : 150 * 4096 + 6] = b"middle"
    data[-3:] = b"end"
    return bytes(data)


def main() -> None:
    target = os.path.join(HERE, "v2")
    if os.path.exists(target):
        shutil.rmtree(target)
    recovery_key = init_vault(target, PASSWORD, TEST_KDF)
    vault = Vault.unlock(target, PASSWORD)
    tree: dict[str, dict[str, object]] = {}
    for path, value in contents().items():
        if path == "/sparse.db":
            handle = vault.create(path, 0o644, os.O_RDWR)
            handle.write(0, b"start")
            handle.truncate(SPARSE)  # O(1): holes
            handle.write(150 * 4096, b"middle")  # into a hole
            handle.write(SPARSE - 3, b"end")
            handle.close()
            value = sparse_content()
        if value is None:
            vault.mkdir(path, 0o755)
            tree[path] = {"type": "dir"}
        elif isinstance(value, str):
            vault.symlink(value, path)
            tree[path] = {"type": "symlink", "target": value}
        elif isinstance(value, tuple) and value[0] == "fifo":
            vault.mknod(path, stat.S_IFIFO | 0o600)
            tree[path] = {"type": "fifo"}
        elif isinstance(value, tuple):
            vault.mknod(path, stat.S_IFCHR | 0o666, value[1])
            tree[path] = {"type": "chardev", "rdev": value[1]}
        else:
            assert isinstance(value, bytes)
            if path != "/sparse.db":
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
    with open(os.path.join(HERE, "v2.json"), "w", encoding="utf-8") as handle:
        json.dump(description, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


if __name__ == "__main__":
    main()
