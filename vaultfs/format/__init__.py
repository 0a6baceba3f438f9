"""The on-disk format: keys, key file, names, directory IDs, contents, conflict names."""
