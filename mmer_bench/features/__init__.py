"""Feature extractors and the Parquet feature store they write to."""


def register_all() -> None:
    """Import every extractor module; each registers itself with ``@EXTRACTORS.register``."""
    from mmer_bench.features import (  # noqa: F401
        audio,
        audio_models,
        csd,
        encoders,
        face,
        text,
        text_frames,
        video,
        voice,
    )
