"""Revision files; each names its `down_revision`, so their order is the file contents, not names."""
