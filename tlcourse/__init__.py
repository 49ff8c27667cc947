"""tlcourse: the tested package behind the transfer-learning course's lessons."""

__version__ = "0.1.0"
