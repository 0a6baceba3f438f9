"""Extended attribute handlers: user.* only, encrypted on the backing entry (xattrstore.py)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

import pyfuse3

from vaultfs.fuse.handler import handler
from vaultfs.fuse.inodes import ROOT_INODE

if TYPE_CHECKING:
    pass



class XattrHandlers:
    """Mixed into VaultOperations (its inode table, Vault and ``_run``)."""


    async def _xattr_place(self, inode: int) -> tuple[Any, str, Any]:
        """(directory, name, key): the open file's own fd is used when it is open (even unlinked)."""
        node = self.inodes.get(inode)
        if node.ino == ROOT_INODE:
            return None, ".", None
        try:
            directory, name = await self._place(node)
        except FileNotFoundError:
            if self.vault.open_files.get(self.inodes.key_of(node)) is None:
                raise
            directory, name = None, ""  # only its open fd is left
        return directory, name, self.inodes.key_of(node)

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if not name.startswith(b"user."):  # security.capability before every write: the shim answers it in C
            raise pyfuse3.FUSEError(errno.ENODATA)
        directory, entry, key = await self._xattr_place(inode)
        return await self._run(self.vault.getxattr_at, directory, entry, name, key)

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        directory, entry, key = await self._xattr_place(inode)
        await self._run(self.vault.setxattr_at, directory, entry, name, value, key)

    @handler
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        directory, entry, key = await self._xattr_place(inode)
        return await self._run(self.vault.listxattr_at, directory, entry, key)

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        directory, entry, key = await self._xattr_place(inode)
        await self._run(self.vault.removexattr_at, directory, entry, name, key)
