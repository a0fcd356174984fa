"""Video features on small videos written here with PyAV: decoding and frame sampling, face
tracks with box reuse, aligned crops, context frames, FaceMesh and the face embedding.

The drawn face below (skin ellipse, brows, eyes with pupils, nostrils, mouth) is one MTCNN finds
with probability > 0.99; a stub detector tests the bookkeeping without the vision extra.
"""

import logging

import av
import cv2
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import _require

from mmer_bench.features.base import extract
from mmer_bench.features.store import FeatureStore
from mmer_bench.features.video import (
    FACE_DETECTORS,
    ContextFrames,
    Face,
    FaceCrops,
    FaceEmbedding,
    FaceMesh,
    FaceTrack,
    aligned_crop,
    load_backbone,
    mtcnn_detector,
    read_frames,
)

RATE = 8  # frames per second of the written videos
SIZE = 96


def drawn_face(size: int = SIZE, shift: int = 0) -> np.ndarray:
    s, c, x = size, size // 2, size // 2 + shift
    img = np.full((s, s, 3), 70, np.uint8)
    cv2.ellipse(img, (x, c), (int(s * 0.27), int(s * 0.35)), 0, 0, 360, (225, 190, 170), -1)
    cv2.ellipse(img, (x, c + int(s * 0.02)), (int(s * 0.04), int(s * 0.09)), 0, 0, 360, (200, 160, 145), -1)
    for side in (-1, 1):
        eye = (x + side * int(s * 0.11), c - int(s * 0.07))
        cv2.ellipse(img, eye, (int(s * 0.055), int(s * 0.025)), 0, 0, 360, (240, 240, 240), -1)
        cv2.circle(img, eye, int(s * 0.025), (30, 20, 20), -1)
        cv2.ellipse(img, (eye[0], c - int(s * 0.13)), (int(s * 0.07), int(s * 0.02)), 0, 180, 360, (80, 50, 40), 1)
        cv2.circle(img, (x + side * int(s * 0.025), c + int(s * 0.08)), 1, (120, 80, 70), -1)
    cv2.ellipse(img, (x, c + int(s * 0.17)), (int(s * 0.09), int(s * 0.03)), 0, 0, 360, (150, 60, 70), -1)
    return img


def write_video(path, images, audio: bool = False):
    """H.264 at RATE fps (near-lossless), with a mono AAC tone over the same duration if asked."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        video.options = {"crf": "12"}
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for image in images:
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode(None))
        if audio:
            t = np.arange(16000 * len(images) // RATE) / 16000
            frame = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None], format="fltp", layout="mono")
            frame.sample_rate = 16000
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    grey = np.full((SIZE, SIZE, 3), 128, np.uint8)
    paths = {
        "face": write_video(root / "face.mp4", [drawn_face(shift=i % 5 - 2) for i in range(16)], audio=True),
        # Frame i is grey level 10 + 15 i, so the sampled frame's index can be read back.
        "counter": write_video(root / "counter.mp4", [np.full((SIZE, SIZE, 3), 10 + 15 * i, np.uint8) for i in range(16)]),
        "grey": write_video(root / "grey.mp4", [grey] * 8),
        "half": write_video(root / "half.mp4", [drawn_face()] * 8 + [grey] * 8),
    }
    data = open(paths["face"], "rb").read()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    paths["truncated"] = str(root / "truncated.mp4")
    sf.write(root / "speech.wav", np.zeros(8000, np.float32), 16000)
    paths["audio_only"] = str(root / "speech.wav")
    return paths


class StubDetector:
    """A 'face' at a fixed box wherever the frame's centre is skin-coloured; records its calls."""

    BOX = np.array([22.0, 12.0, 74.0, 84.0])
    EYES = np.array([[37.0, 40.0], [59.0, 40.0], [48, 52], [40, 64], [56, 64]])

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, images):
        self.calls.append(len(images))
        centre = images[:, SIZE // 2, SIZE // 2].astype(int)
        return [[Face(self.BOX, 0.99, self.EYES)] if r > 180 and r - b > 30 else [] for r, _, b in centre]


@pytest.fixture
def stub(monkeypatch):
    detector = StubDetector()
    monkeypatch.setitem(FACE_DETECTORS, "stub", lambda: detector)
    return detector


def frame_index(images):
    return np.round((images.mean(axis=(1, 2, 3)) - 10) / 15).astype(int).tolist()


def test_sampling_fixed_rate_uniform_and_every_frame(videos):
    every = read_frames(videos["counter"], "all")
    assert every.images.shape == (16, SIZE, SIZE, 3) and every.images.dtype == np.uint8
    assert frame_index(every.images) == list(range(16))
    assert np.allclose(every.times, np.arange(16) / RATE)
    fixed = read_frames(videos["counter"], "fps", fps=4)
    assert frame_index(fixed.images) == list(range(0, 16, 2)) and np.allclose(np.diff(fixed.times), 0.25)
    # Centres of 4 equal parts of the 2 s clip: 0.25, 0.75, 1.25, 1.75 s.
    assert frame_index(read_frames(videos["counter"], "uniform", n_frames=4).images) == [2, 6, 10, 14]
    assert frame_index(read_frames(videos["counter"], "uniform", n_frames=1).images) == [8]
    # Above the video's own rate a frame repeats, so the output rate stays fixed.
    assert frame_index(read_frames(videos["counter"], "fps", fps=16).images) == [i // 2 for i in range(32)]
    assert read_frames(videos["face"], "fps", fps=4, max_side=48).images.shape == (8, 48, 48, 3)
    with pytest.raises(ValueError, match="sampling"):
        FaceCrops(sampling="keyframes")


def test_bad_videos_are_errors_naming_the_file(videos, stub, tmp_path):
    manifest = pd.DataFrame([
        {"clip_id": "ok", "video_path": videos["face"]},
        {"clip_id": "cut", "video_path": videos["truncated"]},
        {"clip_id": "wav", "video_path": videos["audio_only"]},
        {"clip_id": "gone", "video_path": str(tmp_path / "missing.mp4")},
        {"clip_id": "grey", "video_path": videos["grey"]},
        {"clip_id": "none", "video_path": None},
    ])
    store = FeatureStore(tmp_path / "store")
    crops = extract(FaceCrops(detector="stub", fps=4), manifest, "m", store, workers=1)
    assert list(crops.arrays) == ["ok"] and crops.arrays["ok"].shape == (8, 3 * 96 * 96)
    assert "truncated.mp4" in crops.errors["cut"] and "cannot open" in crops.errors["cut"]
    assert "speech.wav" in crops.errors["wav"] and "no video stream" in crops.errors["wav"]
    assert "missing.mp4" in crops.errors["gone"]
    assert "grey.mp4" in crops.errors["grey"] and "no face" in crops.errors["grey"]
    assert "no video file" in crops.errors["none"]
    # The track keeps the faceless clip as an explicit record: every flag 0, no box.
    track = extract(FaceTrack(detector="stub", fps=4), manifest, "m", store, workers=1)
    assert track.arrays["grey"].shape == (4, 7) and not track.arrays["grey"][:, 1:].any()


def test_box_reuse_no_face_frames_and_alignment(videos, stub):
    extractor = FaceCrops(detector="stub", sampling="all", detect_every=4, margin=0.0, align=False)
    track = FaceTrack(detector="stub", sampling="all", detect_every=4).extract_clip(videos["half"])
    assert stub.calls == [4]  # frames 0, 4, 8 and 12, in one batch
    assert track[:, 1].tolist() == [1.0] * 8 + [0.0] * 8
    assert np.allclose(track[:8, 2:6], StubDetector.BOX / SIZE) and np.allclose(track[:8, 6], 0.99)
    crops = extractor.crops(videos["half"])
    assert crops.shape == (8, 96, 96, 3)  # the 8 faceless frames are left out, not zero-filled
    rows = extractor.extract_clip(videos["half"])
    assert rows.shape == (8, 3 * 96 * 96) and rows.dtype == np.float32 and 0 <= rows.min() and rows.max() <= 1
    assert np.array_equal(rows[0], crops[0].transpose(2, 0, 1).ravel() / np.float32(255))
    # Alignment: eyes drawn on a tilted line come out level in the crop.
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    eyes = np.array([[30.0, 40.0], [60.0, 52.0]])
    for x, y in eyes:
        cv2.circle(image, (int(x), int(y)), 3, (255, 255, 255), -1)
    face = Face(np.array([20.0, 20.0, 70.0, 80.0]), 1.0, np.vstack([eyes, np.zeros((3, 2))]))
    assert abs(eye_height_difference(aligned_crop(image, face, 64, 0.2, align=True))) < 1
    assert eye_height_difference(aligned_crop(image, face, 64, 0.2, align=False)) > 6


def eye_height_difference(crop):
    """Mean row of the bright pixels in the right half minus that in the left half."""
    rows, cols = np.nonzero(crop[..., 0] > 128)
    return rows[cols >= 32].mean() - rows[cols < 32].mean()


def test_cache_key_follows_parameters(tmp_path):
    base = FaceCrops().cache_key("m")
    assert base == FaceCrops().cache_key("m")
    for changed in (FaceCrops(size=64), FaceCrops(margin=0.3), FaceCrops(detect_every=3), FaceCrops(fps=10),
                    FaceCrops(sampling="uniform"), FaceCrops(detector="other")):
        assert changed.cache_key("m") != base
    assert ContextFrames().cache_key("m") != FaceTrack().cache_key("m")
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"one")
    first = FaceEmbedding(checkpoint=str(checkpoint)).cache_key("m")
    checkpoint.write_bytes(b"other")  # same path, new weights: a new key
    assert FaceEmbedding(checkpoint=str(checkpoint)).cache_key("m") != first


@pytest.fixture(scope="module")
def mtcnn():
    try:
        return mtcnn_detector()
    except ImportError as exc:
        _require("MMER_REQUIRE_VISION", f"MTCNN is not usable here: {exc}")


def test_mtcnn_tracks_crops_and_masks_the_drawn_face(videos, mtcnn, tmp_path):
    track = FaceTrack(fps=4, detect_every=4).extract_clip(videos["face"])
    assert track.shape == (8, 7) and track[:, 1].all() and (track[:, 6] > 0.9).all()
    centre = (track[:, 2:4] + track[:, 4:6]) / 2
    assert np.allclose(centre, 0.5, atol=0.1)
    crops = FaceCrops(fps=4, detect_every=4)
    first = crops.extract_clip(videos["face"])
    assert first.shape == (8, 3 * 96 * 96) and first.dtype == np.float32
    assert np.array_equal(first, crops.extract_clip(videos["face"]))  # deterministic
    context = ContextFrames(fps=4, detect_every=4).extract_clip(videos["face"])
    assert context.shape == (8, 3 * 96 * 128)
    image = context[0].reshape(3, 96, 128)
    x0, y0, x1, y1 = track[0, 2:6] * (128, 96, 128, 96)
    assert not image[:, int(y0) + 1 : int(y1), int(x0) + 1 : int(x1)].any()  # the face is hidden
    assert image[:, :, :5].min() > 0.2  # the background is not
    # Two forked workers after torch ran here (its threads do not survive a fork).
    manifest = pd.DataFrame([{"clip_id": "grey", "video_path": videos["grey"]}, {"clip_id": "face", "video_path": videos["face"]}])
    features = extract(FaceCrops(fps=4, detect_every=4), manifest, "m", FeatureStore(tmp_path), workers=2)
    assert np.abs(features.arrays["face"] - first).max() <= 2 / 255
    assert "grey.mp4: NoFaceError: no face found" in features.errors["grey"]


def test_face_embedding(videos, stub, timm_module, tmp_path, caplog):
    import torch

    options = {"detector": "stub", "fps": 4}  # the MTCNN crops are tested above
    with caplog.at_level(logging.WARNING):
        extractor = FaceEmbedding(**options)
    assert "UNTRAINED" in caplog.text
    untrained = extractor.extract_clip(videos["face"])
    assert untrained.shape == (8, 512) and untrained.dtype == np.float32 and np.isfinite(untrained).all()
    load_backbone.cache_clear()  # a fresh network from the same seed, as in another worker process
    assert np.array_equal(untrained, FaceEmbedding(**options).extract_clip(videos["face"]))
    torch.manual_seed(1)
    checkpoint = tmp_path / "resnet18.pt"
    torch.save(timm_module.create_model("resnet18", num_classes=7).state_dict(), checkpoint)
    trained = FaceEmbedding(**options, checkpoint=str(checkpoint)).extract_clip(videos["face"])
    assert not np.allclose(trained, untrained)  # the weights were loaded
    with pytest.raises(ValueError, match="does not fit"):
        FaceEmbedding(**options, backbone="resnet34", checkpoint=str(checkpoint)).extract_clip(videos["face"])


@pytest.fixture(scope="module")
def mediapipe_module():
    try:
        import mediapipe
    except Exception as exc:
        _require("MMER_REQUIRE_FACEMESH", f"mediapipe is not usable here: {type(exc).__name__}: {exc}")
    return mediapipe


def test_facemesh_landmarks(videos, mediapipe_module, tmp_path):
    mesh = FaceMesh(fps=4).extract_clip(videos["face"])
    assert mesh.shape == (8, 468 * 3) and mesh.dtype == np.float32
    points = mesh.reshape(8, 468, 3)
    assert np.allclose(points.mean(axis=1), 0, atol=1e-4)
    assert np.allclose(np.linalg.norm(points[:, 33] - points[:, 263], axis=1), 1, atol=1e-4)
    raw = FaceMesh(fps=4, normalise=False).extract_clip(videos["face"]).reshape(8, 468, 3)
    assert 0.1 < raw[..., :2].min() and raw[..., :2].max() < 0.9  # the face lies inside the frame
    manifest = pd.DataFrame([{"clip_id": "grey", "video_path": videos["grey"]}, {"clip_id": "face", "video_path": videos["face"]}])
    # Asked for 2 workers, FaceMesh stays in this process: MediaPipe does not survive a fork.
    features = extract(FaceMesh(fps=4), manifest, "m", FeatureStore(tmp_path), workers=2)
    assert np.allclose(features.arrays["face"], mesh, atol=1e-3)
    assert "grey.mp4: NoFaceError: FaceMesh found no face" in features.errors["grey"]
