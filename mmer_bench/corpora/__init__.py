"""Corpora: one module per corpus, each a manifest parser plus its protocol and tasks."""


def register_all() -> None:
    """Import every corpus module; each registers itself with ``@CORPORA.register``."""
    from mmer_bench.corpora import cexprdb, meld, merc2020, mosei, ravdess, synthetic  # noqa: F401
