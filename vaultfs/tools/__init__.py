"""Tools on the Vault API without FUSE: export/import/ls/cat, fsck, progress bars."""
