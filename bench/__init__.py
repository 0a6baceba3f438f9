"""The vaultfs benchmark (scripts/bench): workloads, mounts of vaultfs and its peers, probes."""
