"""The paper's numbers for the training recipe, each with its section: one home for the defaults.

Krizhevsky, Sutskever, Hinton, NIPS 2012. The architecture's numbers (kernel counts, sizes,
strides) live in model.py beside the layers they shape; these are the ones that settings
default to (alexctl.config), the optimiser (optim.py), the schedule (schedule.py) and the
augmentation (data/augment.py) use. This module imports nothing, so reading a default costs
no torch import (`alexctl --help` and `alexctl status` stay fast).
"""

# Section 2: the fixed input. Shorter side rescaled to 256, then the central 256x256 patch.
IMAGE_SIZE = 256
CROP_SIZE = 224  # section 4.1: random 224x224 patches (and the ten test patches)

# Section 3.3: local response normalisation, "chosen using a validation set".
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0

# Section 4.1: PCA colour augmentation, alpha_i ~ N(0, 0.1); an image or its horizontal reflection.
LIGHTING_STD = 0.1
FLIP_PROBABILITY = 0.5

# Section 4.2: dropout on the first two fully connected layers.
DROPOUT = 0.5

# Section 5: SGD, batch 128, momentum 0.9, weight decay 0.0005; lr 0.01 for every layer, divided
# by 10 when the validation error stops improving, "reduced three times prior to termination";
# "roughly 90 cycles through the training set".
BATCH_SIZE = 128
MOMENTUM = 0.9
WEIGHT_DECAY = 0.0005
LR = 0.01
LR_DIVISOR = 10
LR_REDUCTIONS = 3
EPOCHS = 90
