"""Video extractors: PyAV decoding and frame sampling, MTCNN face tracks and aligned crops, the
face-masked context frame of CAER-Net, MediaPipe FaceMesh landmarks and a frozen CNN face
embedding (the LFAN setup).

Every extractor reads the manifest's ``video_path`` and samples frames the same way
(``sampling``): ``"fps"`` takes the frame on screen at 0, 1/fps, 2/fps, ... seconds (a frame
repeats when ``fps`` exceeds the video's own rate), ``"uniform"`` takes ``n_frames`` frames at
the centres of equal parts of the clip, ``"all"`` takes every frame. Frames whose longer side
exceeds ``max_side`` are scaled down when decoded. Outputs are float32 sequences, one row per
frame:

=================  ==========================================================================
extractor          row layout
=================  ==========================================================================
``face-track``     every sampled frame: [time s, face found 1/0, x0, y0, x1, y1, probability];
                   box corners as fractions of the frame's width and height (a box may reach
                   past an edge), zeros when no face. The explicit record of which sampled
                   frames have a face.
``face-crops``     frames with a face: the aligned crop, RGB, channel-first, flattened
                   (3 * size * size), values in [0, 1]
``context-frames`` every sampled frame: the frame resized to height x width with the face box
                   set to 0, RGB, channel-first, flattened (3 * height * width), in [0, 1]
``facemesh``       frames where FaceMesh finds a face: 468 landmarks x (x, y, z)
``face-embedding`` frames with a face: the backbone's pooled features of the crop (D)
=================  ==========================================================================

MTCNN runs on every ``detect_every``-th sampled frame; the frames between reuse its box and
landmarks (and have no face if it found none). Frames without a face never become zero rows:
``face-crops``, ``face-embedding`` and ``facemesh`` leave them out (``face-track`` with the same
sampling says which they were; for ``facemesh`` MediaPipe's own detector decides) and fail the
clip, with an error naming the file, when no sampled frame has a face. ``context-frames`` keeps
every frame: with no face there is nothing to hide.

Clips run in the base class's process pool, torch single-threaded in each worker; ``facemesh``
runs in the calling process (MediaPipe does not survive a fork).

Installation: decoding needs ``av``; MTCNN (``facenet-pytorch``) and timm come with the
``vision`` extra. FaceMesh needs ``pip install --no-deps mediapipe==0.10.21`` plus
``absl-py flatbuffers matplotlib "protobuf>=6.33.5,<7"``: its declared pins (numpy<2,
protobuf<5) would break this environment, but it runs with numpy 2 and protobuf 6.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import count

import av
import numpy as np

from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS

log = logging.getLogger(__name__)

SAMPLINGS = ("fps", "uniform", "all")
_IMPORT_PID = os.getpid()


def import_torch():
    """torch, single-threaded in a process forked from the one that imported this module.

    A forked pool worker cannot use the OpenMP threads of a parent that already ran torch (it
    hangs), and its siblings use the other cores anyway.
    """
    import torch

    if os.getpid() != _IMPORT_PID and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return torch


class VideoError(ValueError):
    """The file cannot be used as a video; the extractor prefixes the file name."""


class NoFaceError(ValueError):
    """No sampled frame of a clip has a face."""


# --- decoding and frame sampling -------------------------------------------------------------


@dataclass
class Frames:
    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    times: np.ndarray  # (N,) seconds from the first frame


def read_frames(path: str, sampling: str = "fps", fps: float = 5.0, n_frames: int = 16, max_side: int = 640) -> Frames:
    """Decode the first video stream of ``path`` and sample frames (see the module docstring)."""
    check_sampling(sampling, fps, n_frames)
    try:
        container = av.open(path)
    except Exception as exc:  # missing file, not a media file, truncated header (moov atom)
        raise VideoError(f"cannot open the video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise VideoError("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        # The container's duration spans every stream (audio may run longer): a fallback only.
        duration = declared or (container.duration / av.time_base if container.duration else None)
        if sampling == "uniform" and not duration:
            raise VideoError("the video declares no duration, so frames cannot be spread over it")
        targets = _targets(sampling, fps, n_frames, duration)
        timed = _timed_frames(container, stream, rate)
        images, times, end = _pick_frames(timed, targets, 1.0 / rate, _converter(max_side))
    if not images:
        raise VideoError("no frame could be decoded")
    if declared is not None and end < 0.8 * declared - 1.0 / rate:
        raise VideoError(f"the video is truncated: frames cover {end:.2f} s of the declared {declared:.2f} s")
    return Frames(np.stack(images), np.array(times, dtype=np.float64))


def check_sampling(sampling: str, fps: float, n_frames: int) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, not {sampling!r}")
    if sampling == "fps" and not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    if sampling == "uniform" and n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, not {n_frames}")


def _targets(sampling: str, fps: float, n_frames: int, duration: float | None) -> Iterator[float] | None:
    if sampling == "fps":
        return (k / fps for k in count())
    if sampling == "uniform":
        return iter((np.arange(n_frames) + 0.5) * duration / n_frames)
    return None  # every frame


def _timed_frames(container, stream, rate: float) -> Iterator[tuple[av.VideoFrame, float]]:
    """Decoded frames with their times relative to the first frame."""
    start, decoded = None, 0
    try:
        for frame in container.decode(stream):
            t = frame.time if frame.time is not None else decoded / rate
            start = t if start is None else start
            decoded += 1
            yield frame, t - start
    except av.error.FFmpegError as exc:
        raise VideoError(f"decoding failed after {decoded} frames ({exc})") from exc


def _converter(max_side: int) -> Callable[[av.VideoFrame], np.ndarray]:
    """Frame -> RGB array, scaled so the longer side is at most ``max_side``; a frame picked
    twice in a row (fps above the video's rate) is converted once."""
    last: list = [None, None]

    def convert(frame: av.VideoFrame) -> np.ndarray:
        if last[0] is not frame:
            scale = min(1.0, max_side / max(frame.width, frame.height))
            # Even sizes: some pixel formats subsample chroma by 2.
            width, height = (max(2, 2 * round(side * scale / 2)) for side in (frame.width, frame.height))
            last[:] = frame, frame.to_ndarray(format="rgb24", width=width, height=height)
        return last[1]

    return convert


def _pick_frames(frames, targets, frame_duration: float, convert):
    """The frame on screen at each target time (the last one starting at or before it), every
    frame when ``targets`` is None. Returns the images, their times and the end of the last
    decoded frame (all frames are decoded, so that a truncated stream shows)."""
    images, times, previous, end = [], [], None, 0.0
    target = next(targets, None) if targets is not None else None

    def pick(frame, t):
        images.append(convert(frame))
        times.append(t)

    for frame, t in frames:
        end = t + frame_duration
        if targets is None:
            pick(frame, t)
            continue
        while previous is not None and target is not None and target < t - 1e-6:
            pick(*previous)
            target = next(targets, None)
        previous = (frame, t)
    # The last frame stays on screen for one frame duration.
    while previous is not None and target is not None and target < end - 1e-6:
        pick(*previous)
        target = next(targets, None)
    return images, times, end


# --- face detection ---------------------------------------------------------------------------


@dataclass
class Face:
    box: np.ndarray  # x0, y0, x1, y1 in pixels
    prob: float
    landmarks: np.ndarray | None = None  # 5 x (x, y): eye, eye, nose, mouth corner, mouth corner


# A detector maps a batch of frames (N, H, W, 3 uint8 RGB) to the faces found in each frame.
Detector = Callable[[np.ndarray], list[list[Face]]]


@lru_cache(maxsize=1)
def mtcnn_detector() -> Detector:
    try:
        from facenet_pytorch import MTCNN  # weights ship in the wheel: no download
    except Exception as exc:
        raise ImportError(f"face detection needs facenet-pytorch (the vision extra): {exc}") from exc
    mtcnn = MTCNN(keep_all=True, device="cpu")

    def detect(images: np.ndarray) -> list[list[Face]]:
        import_torch()
        boxes, probs, points = mtcnn.detect(images, landmarks=True)
        return [
            [] if b is None else [Face(np.asarray(bx, float), float(p), np.asarray(pt, float)) for bx, p, pt in zip(b, pr, pts)]
            for b, pr, pts in zip(boxes, probs, points)
        ]

    return detect


# Name -> factory; the extractor's ``detector`` field picks one (tests register stubs here).
FACE_DETECTORS: dict[str, Callable[[], Detector]] = {"mtcnn": mtcnn_detector}


def track_faces(images: np.ndarray, detect: Detector, every: int = 1, min_prob: float = 0.9, batch: int = 16) -> list[Face | None]:
    """The largest face of each frame, detected on every ``every``-th frame and reused on the
    frames between (faces move little over a few frames and detection dominates the cost)."""
    keys = np.arange(0, len(images), every)
    found: list[Face | None] = []
    for start in range(0, len(keys), batch):
        for faces in detect(images[keys[start : start + batch]]):
            faces = [f for f in faces if f.prob >= min_prob]
            found.append(max(faces, key=_area) if faces else None)
    return [found[i // every] for i in range(len(images))]


def _area(face: Face) -> float:
    x0, y0, x1, y1 = face.box
    return (x1 - x0) * (y1 - y0)


def aligned_crop(image: np.ndarray, face: Face, size: int, margin: float, align: bool = True) -> np.ndarray:
    """A size x size RGB crop centred on the face box, enlarged by ``margin`` (a fraction of the
    box side, on each side) and, with ``align``, rotated so the eyes lie level."""
    import cv2

    x0, y0, x1, y1 = face.box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    angle = 0.0
    if align and face.landmarks is not None:
        (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
    matrix = cv2.getRotationMatrix2D(centre, angle, size / side)
    matrix[:, 2] += (size / 2 - centre[0], size / 2 - centre[1])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def to_rows(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3*H*W) float32 in [0, 1], channel-first per row."""
    return (images.transpose(0, 3, 1, 2).reshape(len(images), -1) / np.float32(255)).astype(np.float32)


def _require_faces(faces: list[Face | None]) -> None:
    if not any(f is not None for f in faces):
        raise NoFaceError(f"no face found in any of the {len(faces)} sampled frames")


# --- extractors -------------------------------------------------------------------------------


@dataclass
class VideoExtractor(Extractor):
    """Frame sampling shared by the video extractors (see the module docstring)."""

    sampling: str = "fps"
    fps: float = 5.0
    n_frames: int = 16
    max_side: int = 640
    source_column = "video_path"
    kind = "sequence"

    def __post_init__(self):
        check_sampling(self.sampling, self.fps, self.n_frames)

    def frames(self, path: str) -> Frames:
        return read_frames(path, self.sampling, self.fps, self.n_frames, self.max_side)


@dataclass
class FaceExtractor(VideoExtractor):
    """Adds face tracking: ``detector`` names an entry of FACE_DETECTORS (MTCNN by default),
    run on every ``detect_every``-th sampled frame, faces below ``min_prob`` ignored."""

    detector: str = "mtcnn"
    detect_every: int = 1
    min_prob: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, not {self.detect_every}")

    def track(self, frames: Frames) -> list[Face | None]:
        if self.detector not in FACE_DETECTORS:
            raise KeyError(f"unknown face detector {self.detector!r}; known: {', '.join(sorted(FACE_DETECTORS))}")
        return track_faces(frames.images, FACE_DETECTORS[self.detector](), self.detect_every, self.min_prob)


@EXTRACTORS.register("face-track")
@dataclass
class FaceTrack(FaceExtractor):
    """Per sampled frame: [time, face found, x0, y0, x1, y1, probability] (boxes as fractions of
    the frame). A clip without any face is a valid record here (all flags 0)."""

    def extract_clip(self, path: str) -> np.ndarray:
        frames = self.frames(path)
        height, width = frames.images.shape[1:3]
        rows = np.zeros((len(frames.times), 7), np.float32)
        rows[:, 0] = frames.times
        for row, face in zip(rows, self.track(frames)):
            if face is not None:
                row[1] = 1.0
                row[2:6] = np.asarray(face.box) / (width, height, width, height)
                row[6] = face.prob
        return rows


@EXTRACTORS.register("face-crops")
@dataclass
class FaceCrops(FaceExtractor):
    """Aligned face crops, frames x (3 * size * size) in [0, 1], frames without a face left out."""

    size: int = 96
    margin: float = 0.2
    align: bool = True

    def crops(self, path: str) -> np.ndarray:
        """(frames with a face, size, size, 3) uint8."""
        frames = self.frames(path)
        faces = self.track(frames)
        _require_faces(faces)
        return np.stack([
            aligned_crop(image, face, self.size, self.margin, self.align)
            for image, face in zip(frames.images, faces)
            if face is not None
        ])

    def extract_clip(self, path: str) -> np.ndarray:
        return to_rows(self.crops(path))


@EXTRACTORS.register("context-frames")
@dataclass
class ContextFrames(FaceExtractor):
    """CAER-Net's context input: each sampled frame resized to height x width with the face box
    (the detected box, no margin) set to 0 so the context stream cannot read the face."""

    height: int = 96
    width: int = 128

    def extract_clip(self, path: str) -> np.ndarray:
        import cv2

        frames = self.frames(path)
        src_h, src_w = frames.images.shape[1:3]
        out = []
        for image, face in zip(frames.images, self.track(frames)):
            small = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
            if face is not None:
                # Boxes may reach past the frame's edges: clip before slicing.
                x0, x1 = np.clip(face.box[[0, 2]] * self.width / src_w, 0, self.width)
                y0, y1 = np.clip(face.box[[1, 3]] * self.height / src_h, 0, self.height)
                small[math.floor(y0) : math.ceil(y1), math.floor(x0) : math.ceil(x1)] = 0
            out.append(small)
        return to_rows(np.stack(out))


@lru_cache(maxsize=4)
def _file_sha256(path: str, mtime: float, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@lru_cache(maxsize=2)
def load_backbone(backbone: str, checkpoint: str, seed: int):
    """A frozen timm backbone without its classifier (pooled features), on the CPU, in eval mode.

    Random initialisation is seeded so that every worker process builds the same network.
    """
    import timm

    torch = import_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(backbone, pretrained=False, num_classes=0)
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        state = {k.removeprefix("module."): v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"checkpoint {checkpoint} does not fit {backbone}: missing {missing[:5]}...")
        if unexpected:
            log.info("checkpoint %s: ignoring %d keys such as %s", checkpoint, len(unexpected), unexpected[:3])
    model.eval().requires_grad_(False)
    config = timm.data.resolve_data_config({}, model=model)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    return model, mean, std


@EXTRACTORS.register("face-embedding")
@dataclass
class FaceEmbedding(FaceCrops):
    """A frozen CNN embedding of each face crop, frames x D (512 for ``resnet18``).

    ``backbone`` is a timm architecture, ``checkpoint`` a local state dict for it (a file hash
    enters the cache key). Without a checkpoint the network is randomly initialised (seeded by
    ``seed``) and the embedding is untrained: a warning says so. Crops are normalised with the
    backbone's mean and std. LFAN used an IR-ResNet-50 face-recognition network with 512-d
    features; that architecture is not in timm, so reproducing it needs a timm backbone with a
    matching checkpoint (no pretrained face weights are available offline here).
    """

    size: int = 112
    backbone: str = "resnet18"
    checkpoint: str = ""
    seed: int = 0
    batch_size = 64  # not a field: it does not change the output

    def __post_init__(self):
        super().__post_init__()
        if not self.checkpoint:
            log.warning(
                "face-embedding: no checkpoint given, so %s is randomly initialised (seed %d): "
                "the embedding is UNTRAINED", self.backbone, self.seed,
            )
        elif not os.path.isfile(self.checkpoint):
            raise FileNotFoundError(f"face-embedding checkpoint {self.checkpoint} does not exist")

    def params(self) -> dict:
        params = asdict(self)
        if self.checkpoint:
            stat = os.stat(self.checkpoint)
            params["checkpoint_sha256"] = _file_sha256(os.path.abspath(self.checkpoint), stat.st_mtime, stat.st_size)
        return params

    def extract_clip(self, path: str) -> np.ndarray:
        torch = import_torch()
        model, mean, std = load_backbone(self.backbone, self.checkpoint, self.seed)
        crops = torch.from_numpy(self.crops(path)).permute(0, 3, 1, 2).float().div(255)
        with torch.inference_mode():
            out = [model((chunk - mean) / std) for chunk in crops.split(self.batch_size)]
        return torch.cat(out).numpy().astype(np.float32)


# Outer eye corners in MediaPipe's 468-point mesh: their distance sets the scale.
_MESH_EYE_CORNERS = (33, 263)


@lru_cache(maxsize=1)
def _face_mesh():
    try:
        import mediapipe as mp
    except Exception as exc:
        raise ImportError(f"facemesh needs mediapipe==0.10.21 (see the module docstring): {exc}") from exc
    # Sampled frames are far apart in time, so each is treated as a still image (no tracking).
    return mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)


@EXTRACTORS.register("facemesh")
@dataclass
class FaceMesh(VideoExtractor):
    """MediaPipe FaceMesh, frames x (468 * 3), landmarks in the order of MediaPipe's mesh.

    With ``normalise`` (the default) the landmarks are a geometric expression feature: in pixels
    of the frame (x, y and z share a scale), centred on their mean and divided by the distance
    between the outer eye corners, so face position and size drop out. Without it they are
    MediaPipe's coordinates (x, y as fractions of the frame, z relative depth).
    """

    normalise: bool = True

    def extract_many(self, manifest, workers: int) -> dict:
        # In this process: a pool forked after MediaPipe ran here crashes (its native threads and
        # allocator state do not survive a fork), and FaceMesh is fast next to decoding.
        return super().extract_many(manifest, 1)

    def extract_clip(self, path: str) -> np.ndarray:
        frames = self.frames(path)
        height, width = frames.images.shape[1:3]
        mesh = _face_mesh()
        rows = []
        for image in frames.images:
            result = mesh.process(image)
            if not result.multi_face_landmarks:
                continue
            points = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
            rows.append(normalise_mesh(points, width, height) if self.normalise else points)
        if not rows:
            raise NoFaceError(f"FaceMesh found no face in any of the {len(frames.images)} sampled frames")
        return np.stack(rows).reshape(len(rows), -1)


def normalise_mesh(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """MediaPipe landmarks (fractions of the frame; z on the x scale) -> centred on their mean,
    in units of the outer-eye-corner distance."""
    pixels = points * np.array([width, height, width], np.float32)
    pixels -= pixels.mean(axis=0)
    left, right = _MESH_EYE_CORNERS
    return pixels / np.linalg.norm(pixels[left] - pixels[right])
