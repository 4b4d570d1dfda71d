"""The malaria training augmentation (training/trainers.py augmented_cells) changes a cell
only as a smear can vary: turned or flipped, a little brighter or darker, on black."""

import numpy as np

from training.trainers import augmented_cells


def test_a_cell_keeps_its_outline_and_the_background_stays_black():
    sides = [10 + i % 20 for i in range(64)]
    images = np.zeros((64, 50, 50, 1), np.float32)
    for image, side in zip(images, sides, strict=True):
        image[5:5 + side, 8:8 + side // 2] = 0.5  # a rectangle: a quarter turn swaps its sides
    labels = np.arange(64) % 2
    batch, batch_labels = (part.numpy() for part in next(iter(augmented_cells(images, labels, 64, seed=3))))
    shapes, turned = set(), 0
    for image in batch:
        inside = image[..., 0] > 0.02
        rows, columns = np.nonzero(inside)
        height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
        assert inside.sum() == height * width  # still a whole rectangle: no pixel lost or blurred
        assert np.all(image[~inside] == 0.0)
        assert 0.5 * 0.9 - 0.03 - 1e-6 <= image[inside].min() == image[inside].max() <= 0.5 * 1.1 + 0.03 + 1e-6
        shapes.add(tuple(sorted((height, width))))
        turned += height < width
    assert shapes <= {tuple(sorted((side, side // 2))) for side in sides}
    assert 0 < turned < len(batch)  # some cells turned a quarter, some not
    assert sorted(batch_labels.tolist()) == sorted(labels.tolist())
