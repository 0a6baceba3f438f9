"""vaultfs: an encrypted FUSE filesystem for chat backups bound for the cloud."""

__version__ = "0.1.0"
