"""Corpora: one module per corpus, each a manifest parser plus its protocol and tasks."""
