"""``slam vocab build`` end to end on generated images, and ``slam vocab info`` errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.cli.main import main
from slam.errors import VocabularyError
from slam.place.vocabulary import Vocabulary


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 320x240 textured PNGs (random filled rectangles and circles)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        img = np.full((240, 320), 128, np.uint8)
        for _ in range(60):
            x, y = (int(v) for v in rng.integers(0, [320, 240]))
            colour = int(rng.integers(0, 256))
            if rng.random() < 0.5:
                w, h = (int(v) for v in rng.integers(5, 40, 2))
                cv2.rectangle(img, (x, y), (x + w, y + h), colour, -1)
            else:
                cv2.circle(img, (x, y), int(rng.integers(3, 20)), colour, -1)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


def test_build_writes_a_loadable_vocabulary(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "v.npz"
    status = main(["-q", "vocab", "build", "--data", f"images:{image_dir}", "--out", str(out),
                   "--k", "6", "--depth", "3", "--features", "200", "--no-progress"])
    assert status == 0
    vocab = Vocabulary.load(out)
    assert (vocab.k, vocab.depth) == (6, 3) and 36 < vocab.n_words <= 216
    meta = Vocabulary.read_header(out)["metadata"]
    assert meta["n_images"] == 6 and 6 * 100 <= meta["n_descriptors"] <= 6 * 200
    assert f"wrote {out}" in capsys.readouterr().out
    # the images it was trained on find themselves
    from slam.config import FeatureConfig
    from slam.features.orb import OrbExtractor

    orb = OrbExtractor(FeatureConfig.model_validate({}), 200)
    bows = [vocab.transform(orb.extract(np.asarray(cv2.imread(str(p), 0), np.uint8)).descriptors)[0]
            for p in sorted(image_dir.glob("*.png"))]
    scores = np.array([[Vocabulary.score(a, b) for b in bows] for a in bows])
    np.testing.assert_array_equal(np.argmax(scores, axis=1), np.arange(6))


def test_every_and_max_images_choose_the_frames(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.npz"
    args = ["-q", "vocab", "build", "--data", f"images:{image_dir}", f"images:{image_dir}",
            "--out", str(out), "--k", "3", "--depth", "2", "--features", "100",
            "--no-progress"]
    assert main([*args, "--every", "2"]) == 0
    assert Vocabulary.read_header(out)["metadata"]["n_images"] == 2 * 3
    assert main([*args, "--max-images", "2"]) == 0
    assert Vocabulary.read_header(out)["metadata"]["n_images"] == 2 * 2


def test_info_prints_the_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from slam.place.recognizer import default_vocabulary_path

    assert main(["vocab", "info", str(default_vocabulary_path())]) == 0
    out = capsys.readouterr().out
    assert "slam-orb-vocabulary v1, k=10 depth=4" in out and "n_images: 774" in out


@pytest.mark.parametrize("content", [b"", b"not a vocabulary", None])
def test_bad_file_exits_with_the_vocabulary_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    assert main(["vocab", "info", str(path)]) == VocabularyError.exit_code == 9
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("slam: error: ") and "bad.npz" in err[0]


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["vocab", "build", "--data", "images:x", "--out", str(tmp_path / "v"), "--k", "0"])
    assert exc.value.code == 2
    assert main(["-q", "vocab", "build", "--data", f"images:{tmp_path / 'none'}",
                 "--out", str(tmp_path / "v.npz")]) == 3  # DataSourceError
