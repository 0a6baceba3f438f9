"""Randomized model-based test: random operations on a mount and on an in-memory model.

The tree is compared after every step (names, contents, sizes, link counts) and again
after a remount.  Seeded: the seed is in every failure message; rerun one with
``VAULTFS_MODEL_SEED=<seed>``; ``VAULTFS_MODEL_STEPS`` changes the length.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tests.mounting import Vault

STEPS = int(os.environ.get("VAULTFS_MODEL_STEPS", "1500"))
NAMES = ["a", "b", "c", "long-" + "n" * 60, "ü"]
DIRS = ["d1", "d2"]


@dataclass(eq=False)
class Node:
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Handle:
    fd: int
    node: Node
    append: bool
    path: str | None  # the name it was opened through, while that name still holds it


class Model:
    """What the tree must look like: paths -> Node (files; hard links share) or None (dirs)."""

    def __init__(self) -> None:
        self.entries: dict[str, Node | None] = {"": None}

    def children(self, d: str) -> list[str]:
        prefix = d + "/" if d else ""
        return [p for p in self.entries if p and p.startswith(prefix) and "/" not in p[len(prefix) :]]

    def nlink(self, node: Node) -> int:
        return sum(1 for n in self.entries.values() if n is node)


class Run:
    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng, self.model, self.handles = root, rng, Model(), []
        self.log: list[str] = []

    def real(self, p: str) -> Path:
        return self.root / p

    def any_path(self) -> str:
        parent = self.rng.choice(["", *DIRS])
        return f"{parent}/{self.rng.choice(NAMES)}".lstrip("/")

    def files(self) -> list[str]:
        return [p for p, n in self.model.entries.items() if n is not None]

    def expect(self, code: int, func, *args) -> None:
        try:
            func(*args)
        except OSError as e:
            assert e.errno == code, f"{func.__name__}{args}: errno {e.errno}, expected {code}"
        else:
            raise AssertionError(f"{func.__name__}{args} succeeded, expected errno {code}")

    def step(self) -> None:
        rng, m = self.rng, self.model
        op = rng.choice(["create", "open", "write", "write", "write", "read", "truncate", "ftruncate",
                         "rename", "unlink", "link", "mkdir", "rmdir", "fsync", "close", "close"])  # fmt: skip
        path = self.any_path()
        parent = path.rpartition("/")[0]
        exists, parent_ok = path in m.entries, parent in m.entries
        self.log.append(f"{op} {path}")
        if op == "create":
            if exists or not parent_ok:
                code = errno.EEXIST if exists else errno.ENOENT
                self.expect(code, os.open, self.real(path), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
                return
            fd = os.open(self.real(path), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            m.entries[path] = node = Node()
            self.handles.append(Handle(fd, node, False, path))
        elif op == "open" and self.files():
            path = rng.choice(self.files())
            self.log.append(f"  = open {path}")
            append, trunc = rng.random() < 0.3, rng.random() < 0.1
            fd = os.open(self.real(path), os.O_RDWR | (os.O_APPEND if append else 0) | (os.O_TRUNC if trunc else 0))
            node = m.entries[path]
            assert node is not None
            if trunc:
                node.data.clear()
            self.handles.append(Handle(fd, node, append, path))
        elif op == "write" and self.handles:
            h = rng.choice(self.handles)
            size = rng.choice([1, 7, 4095, 4096, 4097, rng.randrange(1, 20_000)])
            offset = len(h.node.data) if h.append else rng.choice([0, 4096, rng.randrange(0, 30_000)])
            data = rng.randbytes(size)
            assert os.pwrite(h.fd, data, offset) == size
            if len(h.node.data) < offset:
                h.node.data.extend(bytes(offset - len(h.node.data)))
            h.node.data[offset : offset + size] = data
        elif op == "read" and self.handles:
            h = rng.choice(self.handles)
            offset, size = rng.randrange(0, 35_000), rng.randrange(0, 20_000)
            assert os.pread(h.fd, size, offset) == bytes(h.node.data[offset : offset + size])
        elif op in ("truncate", "ftruncate") and self.files():
            size = rng.choice([0, 1, 4096, rng.randrange(0, 40_000)])
            if op == "ftruncate" and self.handles:
                h = rng.choice(self.handles)
                os.ftruncate(h.fd, size)
                node = h.node
            else:
                path = rng.choice(self.files())
                os.truncate(self.real(path), size)
                node = m.entries[path]
            assert node is not None
            del node.data[size:]
            node.data.extend(bytes(size - len(node.data)))
        elif op == "rename" and len(m.entries) > 1:
            src = rng.choice([p for p in m.entries if p])
            dst = self.any_path()
            if m.entries[src] is None or dst.rpartition("/")[0] not in m.entries or src == dst:
                return  # directory renames and their corner cases: test_fs_posix covers them
            if m.entries.get(dst) is m.entries[src] and any(h.node is m.entries[src] for h in self.handles):
                # Known limitation: libfuse hides an open target (.fuse_hidden) before
                # renaming, so rename between two links of one open file is not a no-op.
                return
            if dst in m.entries and m.entries[dst] is None:
                self.expect(errno.EISDIR, os.rename, self.real(src), self.real(dst))
                return
            self.log.append(f"  = rename {src} -> {dst}")
            os.rename(self.real(src), self.real(dst))
            if m.entries.get(dst) is not m.entries[src]:  # links of one inode: a no-op
                m.entries[dst] = m.entries[src]
                del m.entries[src]
                for h in self.handles:
                    h.path = dst if h.path == src else None if h.path == dst else h.path
        elif op == "unlink":
            if not exists:
                self.expect(errno.ENOENT, os.unlink, self.real(path))
            elif m.entries[path] is None:
                self.expect(errno.EISDIR, os.unlink, self.real(path))
            else:
                os.unlink(self.real(path))
                del m.entries[path]
                for h in self.handles:
                    h.path = None if h.path == path else h.path
        elif op == "link" and self.files():
            src = rng.choice(self.files())
            if exists or not parent_ok:
                self.expect(errno.EEXIST if exists else errno.ENOENT, os.link, self.real(src), self.real(path))
                return
            self.log.append(f"  = link {src} -> {path}")
            os.link(self.real(src), self.real(path))
            m.entries[path] = m.entries[src]
        elif op == "mkdir":
            path = rng.choice(DIRS)
            if path in m.entries:
                self.expect(errno.EEXIST, os.mkdir, self.real(path))
            else:
                os.mkdir(self.real(path))
                m.entries[path] = None
        elif op == "rmdir":
            path = rng.choice(DIRS)
            if path not in m.entries:
                self.expect(errno.ENOENT, os.rmdir, self.real(path))
            elif m.children(path):
                self.expect(errno.ENOTEMPTY, os.rmdir, self.real(path))
            else:
                os.rmdir(self.real(path))
                del m.entries[path]
        elif op == "fsync" and self.handles:
            os.fsync(rng.choice(self.handles).fd)
        elif op == "close" and self.handles:
            h = self.handles.pop(rng.randrange(len(self.handles)))
            os.close(h.fd)

    def compare(self) -> None:
        m = self.model
        for d, node in m.entries.items():
            if node is not None:
                continue
            names = sorted(p.rpartition("/")[2] for p in m.children(d))
            assert sorted(os.listdir(self.real(d))) == names, f"listing of /{d}"
        for p, node in m.entries.items():
            if node is None:
                continue
            st = os.stat(self.real(p))
            assert stat.S_ISREG(st.st_mode)
            assert st.st_size == len(node.data), f"size of /{p}"
            assert st.st_nlink == m.nlink(node), f"link count of /{p}"
            assert self.real(p).read_bytes() == node.data, f"content of /{p}"
        for h in self.handles:
            if h.path is not None:
                assert os.fstat(h.fd).st_size == len(h.node.data)
            # Opened through a name since unlinked: fh-based I/O always works.  (fstat
            # carries no handle to libfuse; once that name's directory is gone too it
            # gets ESTALE: a documented libfuse limitation.)
            assert os.pread(h.fd, len(h.node.data) + 1, 0) == h.node.data

    def close_all(self) -> None:
        for h in self.handles:
            os.close(h.fd)
        self.handles.clear()


def run_model(vault: Vault, steps: int, compare_every: int = 1) -> int:
    """Run ``steps`` random operations on ``vault``'s mount and the model, remount, compare; return the seed."""
    seed = int(os.environ.get("VAULTFS_MODEL_SEED", random.SystemRandom().randrange(2**32)))
    root = vault.mnt / "model"
    root.mkdir()
    run = Run(root, random.Random(seed))
    try:
        for step in range(steps):
            run.step()
            if step % compare_every == 0 or step == steps - 1:
                run.compare()
        run.close_all()
        vault.remount()
        run.compare()
    except BaseException as e:
        recent = "; ".join(run.log[-8:])
        raise AssertionError(f"model test failed with VAULTFS_MODEL_SEED={seed} after: {recent}") from e
    finally:
        for h in run.handles:
            with contextlib.suppress(OSError):
                os.close(h.fd)
    return seed


def test_random_operations_match_the_model(mounted_vault: Vault) -> None:
    run_model(mounted_vault, STEPS)
    assert not mounted_vault.log_problems()
