"""MELD (Poria et al. 2019): utterances of Friends dialogues, read from the official release layout.

``train_sent_emo.csv``, ``dev_sent_emo.csv`` and ``test_sent_emo.csv`` hold one row per utterance
(Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season, Episode,
StartTime, EndTime); the optional clips are ``train_splits/``, ``dev_splits_complete/`` and
``output_repeated_splits_test/`` ``dia{D}_utt{U}.mp4``. Dialogue ids restart in every split, so a
clip id is ``{split}_dia{D}_utt{U}`` and a dialogue ``{split}_{D}``.

Speakers (Ross, Rachel, ...) appear in every official split, so the split keeps *dialogues*
apart, not speakers: ``dialogue`` is the leakage column and ``subject`` (the speaker) is not.

Text repair. Copies of the release differ in how they encode punctuation: the first release
wrote Windows-1252 bytes (0x92 for an apostrophe, 0x85 for an ellipsis, ...), the current one is
UTF-8 with curly quotes, and copies re-saved through the wrong codec hold mojibake ("â€™") or
C1 control characters (U+0092). ``repair_text`` maps all of them to the same plain text, so a
model sees the same words whichever copy a user has:

- mojibake (UTF-8 bytes read as Windows-1252 or Latin-1) is decoded back: "â€™" -> "’", "Ã©" -> "é"
- C1 control characters U+0080-U+009F are read as the Windows-1252 bytes they stand for
- typographic punctuation becomes ASCII: ‘ ’ -> ', “ ” -> ", … -> ..., – — -> -, no-break space -> space
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

import pandas as pd

from mmer_bench.corpora.base import Corpus, CorpusFormatError, CorpusNotFoundError, reads_file
from mmer_bench.protocols import official_split
from mmer_bench.registry import CORPORA
from mmer_bench.tasks import ClassificationTask

log = logging.getLogger(__name__)

EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SENTIMENTS = ("negative", "neutral", "positive")
# split -> (annotation CSV, clip folder) as named in the release.
SPLITS = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "val": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
           "Season", "Episode", "StartTime", "EndTime")

NOT_FOUND = (
    "MELD was not found under {root}. Get the MELD release (https://affective-meld.github.io, GPL-3.0) "
    "and put train_sent_emo.csv, dev_sent_emo.csv and test_sent_emo.csv (and, for video, the extracted "
    "train_splits/, dev_splits_complete/ and output_repeated_splits_test/ folders) in {root}."
)


class MeldFormatError(CorpusFormatError):
    """A MELD CSV row that cannot be read; the message names the file and the line."""


# --- text repair ---------------------------------------------------------------------------------

def _byte_of_char() -> dict[str, int]:
    """Each character that a byte 0x80-0xFF becomes under Windows-1252 or Latin-1 -> that byte."""
    table = {}
    for byte in range(0x80, 0x100):
        table[chr(byte)] = byte  # Latin-1 (also how C1 controls survive a wrong decode)
        try:
            table[bytes([byte]).decode("cp1252")] = byte
        except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D are undefined in Windows-1252
            pass
    return table


_BYTE = _byte_of_char()
_CONTINUATION = "".join(re.escape(c) for c, b in _BYTE.items() if b < 0xC0)
# A UTF-8 sequence read as Windows-1252 / Latin-1 text: a lead byte and as many continuation
# bytes (0x80-0xBF) as the lead announces.
_MOJIBAKE = re.compile(
    f"[\u00c2-\u00df][{_CONTINUATION}]|[\u00e0-\u00ef][{_CONTINUATION}]{{2}}|[\u00f0-\u00f4][{_CONTINUATION}]{{3}}"
)
_C1 = re.compile("[\u0080-\u009f]")
_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"',
                        "\u201d": '"', "\u201e": '"', "\u2026": "...", "\u2013": "-", "\u2014": "-",
                        "\u00a0": " "})


def _undo_mojibake(match: re.Match) -> str:
    try:
        decoded = bytes(_BYTE[c] for c in match.group()).decode("utf-8")
    except UnicodeDecodeError:  # not a UTF-8 sequence after all: leave it as it is
        return match.group()
    # English subtitles damaged this way hold accented Latin letters and punctuation (quotes,
    # dashes, ellipsis, euro, trade mark); anything else is more likely real text, e.g. "Ü’".
    plausible = all(ord(c) < 0x250 or 0x2000 <= ord(c) < 0x2200 for c in decoded)
    return decoded if plausible else match.group()


def _c1_to_cp1252(match: re.Match) -> str:
    try:
        return bytes([ord(match.group())]).decode("cp1252")
    except UnicodeDecodeError:  # no Windows-1252 meaning: a stray control character
        return ""


def repair_text(text: str) -> str:
    """The utterance with MELD's encoding damage undone and punctuation in ASCII (module doc)."""
    text = _MOJIBAKE.sub(_undo_mojibake, text)
    text = _C1.sub(_c1_to_cp1252, text)
    return text.translate(_ASCII).strip()


def read_release_text(path: Path) -> str:
    """A CSV of any copy of the release as text: UTF-8, else the first release's Windows-1252."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Latin-1 never fails; repair_text then reads the 0x80-0x9F bytes as Windows-1252.
        return raw.decode("latin-1")


# --- parsing -------------------------------------------------------------------------------------

def _label(value: str, classes: tuple[str, ...], what: str, where: str) -> int:
    label = value.strip().lower()
    if label not in classes:
        raise MeldFormatError(f"{where}: unknown {what} label {value!r}; expected one of {', '.join(classes)}")
    return classes.index(label)


def _integer(value: str, column: str, where: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise MeldFormatError(f"{where}: {column} {value!r} is not an integer") from None
    if number < 0:
        raise MeldFormatError(f"{where}: {column} {number} is negative")
    return number


@reads_file(MeldFormatError)
def parse_csv(path: Path, split: str) -> list[dict]:
    """The rows of one release CSV as manifest rows (without media paths)."""
    # Not str.splitlines: it would also break lines at U+0085, the first release's ellipsis byte.
    reader = csv.reader(io.StringIO(read_release_text(path), newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise MeldFormatError(f"{path}: columns {missing} are missing (found {header})")
    col = {name: header.index(name) for name in COLUMNS}
    rows, seen = [], {}
    for fields in reader:
        where = f"{path}, line {reader.line_num}"
        if not any(f.strip() for f in fields):
            continue  # a blank line, e.g. at the end of the file
        if len(fields) != len(header):
            raise MeldFormatError(f"{where}: {len(fields)} fields, the header has {len(header)} (unquoted comma?)")
        where += f" (Sr No. {fields[col['Sr No.']]})"
        dialogue = _integer(fields[col["Dialogue_ID"]], "Dialogue_ID", where)
        utterance = _integer(fields[col["Utterance_ID"]], "Utterance_ID", where)
        if (dialogue, utterance) in seen:
            raise MeldFormatError(f"{where}: dia{dialogue}_utt{utterance} is already on line {seen[dialogue, utterance]}")
        seen[dialogue, utterance] = reader.line_num
        speaker = repair_text(fields[col["Speaker"]])
        rows.append({
            "clip_id": f"{split}_dia{dialogue}_utt{utterance}",
            "split": split,
            "subject": speaker,
            "dialogue": f"{split}_{dialogue}",
            "dialogue_id": dialogue,
            "utterance": utterance,
            "text": repair_text(fields[col["Utterance"]]),
            "emotion": _label(fields[col["Emotion"]], EMOTIONS, "emotion", where),
            "sentiment": _label(fields[col["Sentiment"]], SENTIMENTS, "sentiment", where),
            "season": _integer(fields[col["Season"]], "Season", where),
            "episode": _integer(fields[col["Episode"]], "Episode", where),
            "start_time": fields[col["StartTime"]].strip(),
            "end_time": fields[col["EndTime"]].strip(),
        })
    if not rows:
        raise MeldFormatError(f"{path}: the file holds no utterances")
    return rows


def find_root(data_root: Path) -> Path:
    """The folder holding the CSVs: ``data_root/meld`` or ``data_root`` itself."""
    for candidate in (data_root / "meld", data_root):
        if (candidate / SPLITS["train"][0]).is_file():
            return candidate
    raise CorpusNotFoundError(NOT_FOUND.format(root=data_root / "meld"))


@CORPORA.register("meld")
class Meld(Corpus):
    tasks = (ClassificationTask("emotion", EMOTIONS), ClassificationTask("sentiment", SENTIMENTS))
    primary_metric = "weighted_f1"
    report_metrics = ("weighted_f1", "accuracy", "macro_f1")
    group_columns = ("dialogue",)  # speakers recur in every split by design; dialogues must not
    dialogue_columns = ("dialogue", "utterance")
    protocol = "official split (train 9,989 / dev 1,109 / test 2,610 utterances); val = dev"

    def build_manifest(self) -> pd.DataFrame:
        if self.data_root is None:
            raise CorpusNotFoundError("MELD needs a data root: pass --data-root PATH")
        root = find_root(self.data_root)
        frames = []
        self.missing_video: dict[str, int] = {}
        for split, (csv_name, clip_folder) in SPLITS.items():
            path = root / csv_name
            if not path.is_file():
                raise CorpusNotFoundError(f"{path} is missing. " + NOT_FOUND.format(root=root))
            frame = pd.DataFrame(parse_csv(path, split))
            clips = root / clip_folder
            videos = [clips / f"dia{d}_utt{u}.mp4" for d, u in zip(frame["dialogue_id"], frame["utterance"])]
            frame["video_path"] = [str(v) if v.is_file() else None for v in videos]
            # MELD ships no separate audio: the speech extractors read the mp4's audio track.
            frame["audio_path"] = frame["video_path"]
            self.missing_video[split] = int(frame["video_path"].isna().sum())
            if clips.is_dir() and self.missing_video[split]:
                log.warning("meld %s: %d of %d clips have no video in %s", split, self.missing_video[split],
                            len(frame), clips)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def folds(self, manifest: pd.DataFrame):
        # Dialogue names carry their split, so none can cross; checked all the same.
        return official_split(manifest, "split", group_column="dialogue")
