"""The README's worked example of adding a method must run as written and learn."""

import re
from pathlib import Path

from mmer_bench.registry import METHODS
from mmer_bench.runner import BenchConfig, run_bench

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make bench", "make test"]


def test_readme_method_example_trains(tmp_path):
    example = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "METHODS.register" in b)
    namespace: dict = {}
    exec(compile(example, "README example", "exec"), namespace)
    assert "egemaps-gru" in METHODS.names()
    results = run_bench(BenchConfig(corpus="synthetic", methods=["egemaps-gru"], folds=["fold0"], out=str(tmp_path),
                                    loggers=["csv"], hparams={"egemaps-gru": {"max_epochs": 30}}))
    accuracy = results.query("split == 'test' and metric == 'accuracy'")["value"].item()
    assert accuracy > 1 / 6 + 0.2
