"""Methods: one module per published system, each a subclass of EmotionRecognizer."""


def register_all() -> None:
    """Import every method module; each registers itself with ``@METHODS.register`` (stackers
    with ``@STACKERS.register``). A new method file adds its name here."""
    from mmer_bench.methods import (  # noqa: F401
        baselines,
        frames,
        lfan,
        luna2022,
        meld2019,
        merc2020,
        ssl,
        text_ft,
        williams2018,
    )
