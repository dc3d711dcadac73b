"""The training engine: trainable encoders, MTP pre-training, the round loop, and the math
they share — losses (:mod:`.losses`), token augmentation (:mod:`.augment`) and ambiguous-data
mining (:mod:`.mining`).

Importing this package imports nothing heavy; each module pulls in torch/sklearn itself.
"""
