"""Offline data: loading and checking DSRL files, downloading them, and collecting new ones."""
