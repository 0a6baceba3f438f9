"""The FUSE layer: inode table, request handlers, mount, lock and mount state."""
