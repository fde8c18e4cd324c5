"""reloop: a daily CTR retraining loop where each version learns from its parent's mistakes."""

__version__ = "0.1.0"
