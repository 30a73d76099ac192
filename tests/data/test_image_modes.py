"""The stream decoder reads 16-bit and float images by their real range, as the image processors do.

PIL's `convert("RGB")` clips such pixels to [0, 255]: a 16-bit PNG came out almost all white, a float TIFF in [0, 1]
almost all black. Rule (see `to_8bit_images`): 16-bit by the full 16-bit range, floats in [0, 1] times 255.
"""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from hfvision.data import load_image_stream

RAMP = np.tile(np.linspace(0.0, 1.0, 40, dtype=np.float32), (36, 1))  # (36, 40) grayscale ramp in [0, 1]
EIGHT_BIT_RGB = np.repeat(np.rint(RAMP * 255).astype(np.uint8)[..., None], 3, axis=-1)
ENCODED = {  # sample key -> (file suffix, image)
    "sixteen": ("png", Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16))),
    "int32": ("tiff", Image.fromarray(np.rint(RAMP * 65535).astype(np.int32))),
    "float": ("tiff", Image.fromarray(RAMP)),
}


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> dict[str, Image.Image]:
    """The stream's images of one WebDataset shard holding ENCODED, by sample key."""
    root = tmp_path_factory.mktemp("modes")
    for index, (key, (suffix, image)) in enumerate(ENCODED.items()):  # PNG holds 16 bits, TIFF 32-bit int and float
        buffer = io.BytesIO()
        image.save(buffer, format=suffix.upper())
        with tarfile.open(root / f"modes-{index:06d}.tar", "w") as archive:  # one shard per image type
            for name, payload in ((f"{key}.{suffix}", buffer.getvalue()), (f"{key}.txt", b"a ramp")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    return {sample["__key__"]: sample["image"] for sample in load_image_stream(str(root))}


@pytest.mark.parametrize("key", list(ENCODED))
def test_stream_decodes_high_bit_depth_images_by_their_range(decoded, key):
    assert decoded[key].mode == "RGB"
    np.testing.assert_allclose(np.asarray(decoded[key], dtype=np.int16), EIGHT_BIT_RGB, atol=1)
