"""Feature extractors and the Parquet feature store they write to."""


def register_all() -> None:
    """Import every extractor module; each registers itself with ``@EXTRACTORS.register``."""
    from mmer_bench.features import audio, audio_models, csd, face, text, text_frames, video, voice  # noqa: F401
