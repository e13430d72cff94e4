"""Built datasets and the input pipeline: the layer between the TFDS builder and training.

`dataset` opens a built config of the `pisa` builder as random-access train/test sources;
`pipeline` turns them into shuffled, flipped, device-split batches and normalises them on the
device. Nothing here builds a dataset or knows the model.
"""
