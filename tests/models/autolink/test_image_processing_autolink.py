"""AutoLink image processor (resize, [-1, 1] pixels, keypoints back to pixels) and the drawing helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.models.autolink import AutoLinkImageProcessor, draw_keypoint_strip, draw_keypoints
from tests.models.autolink.conftest import random_image, tiny_processor


def test_preprocess_resizes_and_maps_pixels_to_minus_one_one():
    processor = tiny_processor()
    black, white = Image.new("RGB", (50, 30), (0, 0, 0)), Image.new("RGB", (50, 30), (255, 255, 255))
    pixel_values = processor([black, white, random_image(0)], return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (3, 3, 32, 32)
    assert torch.equal(pixel_values[0], torch.full((3, 32, 32), -1.0))
    assert torch.equal(pixel_values[1], torch.full((3, 32, 32), 1.0))
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1
    again = processor([random_image(0)], return_tensors="pt")["pixel_values"]
    assert torch.equal(again[0], pixel_values[2])  # deterministic: no random flip in the processor
    assert AutoLinkImageProcessor().size == {"height": 128, "width": 128}  # the paper's detector input


def test_post_process_maps_align_corners_coordinates_to_pixels():
    processor = tiny_processor()
    keypoints = torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [1.0, -1.0]]]).repeat(2, 1, 1)
    weights = torch.tensor([[0, 4.0, 0.1, 1.9], [4.0, 0, 2.0, 0.3], [0.1, 2.0, 0, 0], [1.9, 0.3, 0, 0]])
    outputs = {"keypoints": keypoints, "edge_weights": weights}
    results = processor.post_process_keypoint_detection(outputs, target_sizes=[(40, 60), (11, 21)])
    # (x, y): -1 -> the first pixel centre, +1 -> the last (width - 1, height - 1)
    expected = torch.tensor([[0.0, 0.0], [59.0, 39.0], [29.5, 19.5], [59.0, 0.0]])
    torch.testing.assert_close(results[0]["keypoints"], expected)
    torch.testing.assert_close(
        results[1]["keypoints"], torch.tensor([[0.0, 0.0], [20.0, 10.0], [10.0, 5.0], [20.0, 0]])
    )
    # edges at least half the strongest (4.0), strongest first, i < j
    assert [(i, j) for i, j, _ in results[0]["edges"]] == [(0, 1), (1, 2)]
    assert results[0]["edges"][0][2] == pytest.approx(4.0)
    every = processor.post_process_keypoint_detection(outputs, edge_threshold=0.0)
    assert len(every[0]["edges"]) == 6 and every[0]["keypoints"][1].tolist() == [31.0, 31.0]  # processor size
    strongest = processor.post_process_keypoint_detection(outputs, edge_threshold=1.0)
    assert [(i, j) for i, j, _ in strongest[0]["edges"]] == [(0, 1)]
    with pytest.raises(ValueError, match="edge_threshold"):
        processor.post_process_keypoint_detection(outputs, edge_threshold=1.5)
    with pytest.raises(ValueError, match="target_sizes"):
        processor.post_process_keypoint_detection(outputs, target_sizes=[(4, 4)])
    with pytest.raises(ValueError, match="edge_weights"):
        processor.post_process_keypoint_detection({"keypoints": keypoints, "edge_weights": weights[:3, :3]})


def test_draw_keypoints_overlays_points_and_skeleton():
    image = Image.new("RGB", (80, 60), (0, 0, 0))
    keypoints = [[10.0, 10.0], [70.0, 10.0], [40.0, 50.0]]
    edges = [(0, 1, 2.0), (1, 2, 0.5)]
    drawn = draw_keypoints(image, keypoints, edges, radius=3, max_line_width=4)
    assert drawn.size == image.size and drawn.mode == "RGB"
    assert np.asarray(image).max() == 0  # the input is left untouched
    pixels = np.asarray(drawn).astype(int)
    for x, y in keypoints:  # each keypoint's colour at its centre, distinct per keypoint
        assert pixels[int(y), int(x)].sum() > 0
    assert len({tuple(pixels[int(y), int(x)]) for x, y in keypoints}) == 3
    assert tuple(pixels[10, 40]) == (255, 0, 0)  # midpoint of the strong edge: a red line
    assert pixels[30, 5].sum() == 0  # away from everything: untouched
    # width proportional to weight: the strong (horizontal) edge is 4 px wide, the weak (diagonal) one 1 px
    assert (pixels[:30, 40].sum(axis=1) > 0).sum() == 4
    assert 1 <= (pixels[30, 45:66].sum(axis=1) > 0).sum() <= 2
    no_edges = np.asarray(draw_keypoints(image, torch.tensor(keypoints)))
    assert no_edges[10, 40].sum() == 0
    enlarged = np.asarray(draw_keypoints(image, keypoints, edges, radius=3, max_line_width=4, scale=3)).astype(int)
    assert enlarged.shape == (180, 240, 3)
    assert tuple(enlarged[31, 121]) == (255, 0, 0)  # the strong edge, between the moved keypoints (31, 31), (211, 31)
    assert (enlarged[31, 211] == pixels[10, 70]).all()  # keypoint 1's colour at its mapped centre
    with pytest.raises(ValueError, match="scale"):
        draw_keypoints(image, keypoints, scale=0)
    with pytest.raises(ValueError, match="keypoints"):
        draw_keypoints(image, [1.0, 2.0])
    with pytest.raises(ValueError, match="edges"):
        draw_keypoints(image, keypoints, [(0, 5, 1.0)])
    with pytest.raises(TypeError, match="image"):
        draw_keypoints(np.zeros((4, 4, 3)), keypoints)


def test_draw_keypoint_strip_lays_enlarged_overlays_side_by_side():
    images = [Image.new("RGB", (32, 32), (0, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 90))]
    results = [{"keypoints": [[4.0, 4.0], [28.0, 4.0]], "edges": [(0, 1, 1.0)]}] * 2
    strip = draw_keypoint_strip(images, results)  # 32 px -> drawn 4x
    assert strip.size == (2 * 130 + 2, 132)
    pixels = np.asarray(strip)
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # padding
    expected = np.asarray(draw_keypoints(images[1], **results[1], scale=4))
    assert (pixels[2:130, 132:260] == expected).all()  # the second cell, after 2 + 128 + 2 pixels
    with pytest.raises(ValueError, match="results"):
        draw_keypoint_strip(images, results[:1])
