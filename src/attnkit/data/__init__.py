"""Data: loaders for bundled real data and generated tasks."""

from attnkit.data.cluttered import ClutteredMNIST, load_digits, make_cluttered, split_digits

__all__ = ["ClutteredMNIST", "load_digits", "make_cluttered", "split_digits"]
