"""Training defaults, in a module light enough for `seqsentry train --help` to show them."""

PRETRAIN_STEPS = 300  # masked-event pretraining steps, at most
PRETRAIN_EPOCHS = 4  # ... and at most this many passes over the training windows (small logs train fast)
MIN_PRETRAIN_STEPS = 30
FINETUNE_EPOCHS = 4  # at most; early stopping on validation PR-AUC
BATCH_SIZE = 128
LR = 2e-3
MAX_TRAIN_WINDOWS = 40_000  # every positive window (up to half) plus a sample of the rest
SUSTAIN = 3  # a classifier alerts once this many consecutive events' windows reach the threshold
USER_ALERT_RATE = 0.005  # share of normal users alerted, over the calibration log and per day
CROSS_FIT_FOLDS = 5  # a small log calibrates on every user, cross-fitted in this many folds (training.train._calibrate)
