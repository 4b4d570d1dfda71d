"""The malaria CNN keeps the mean of its last epochs' weights (training/trainers.py
WeightAverage): exactly the mean of the epochs it includes, set on the real model."""

import numpy as np

from training.trainers import WeightAverage


def test_the_average_is_the_mean_of_the_included_epochs_weights() -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.AdamW(0.1, weight_decay=0.05), loss="sparse_categorical_crossentropy")
    seen: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(model.get_weights()))
    average = WeightAverage(lambda epoch: epoch >= 3)
    rows = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    model.fit(rows, (rows[:, 0] > 0).astype(int), epochs=6, batch_size=16, verbose=0,
              callbacks=[record, average.callback()])

    assert average.count == 3
    assert not np.allclose(seen[3][0], seen[5][0])  # the epochs differ: the mean is not one of them
    average.apply(model)
    for index, weights in enumerate(model.get_weights()):
        expected = np.mean([epoch[index] for epoch in seen[3:]], axis=0)
        np.testing.assert_allclose(weights, expected, rtol=1e-6)
        assert weights.dtype == seen[0][index].dtype


def test_no_included_epoch_leaves_the_model_as_it_is() -> None:
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = model.get_weights()
    average = WeightAverage(lambda epoch: False)
    average.apply(model)
    assert average.count == 0
    for now, then in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(now, then)
