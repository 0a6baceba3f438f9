"""Vaults beyond one machine's disk, with rclone as the engine (docs/remote.md).

``rclone.py`` runs the program and reads its JSON log; ``rules.py`` says what never
leaves the machine; ``guard.py`` refuses a transfer of a mounted or foreign vault;
``manifest.py`` makes remotes without times or checksums safe; ``transfer.py`` is push
and pull, ``bisync.py`` is sync; ``rmount.py`` runs rclone's own mount under a vaultfs
mount and ``mounthook.py`` is the small face it shows to the mount lifecycle.
"""
