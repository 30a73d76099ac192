"""One folder per method, shaped like transformers' `models/<name>/`; each is self-contained (remote code)."""
