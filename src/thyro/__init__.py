"""thyro: transfer-learning studies for thyroid-nodule ultrasound classification."""

__version__ = "0.1.0"
