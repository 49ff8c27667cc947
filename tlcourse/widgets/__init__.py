"""Widgets for exploring: a photo tester, an augmentation explorer and a mistakes browser, each one line
in a lesson, e.g. ``PhotoTester(checkpoint_path, gradcam=True, mode=cfg.dashboard).show()``.

In JupyterLab ``show()`` displays ipywidgets controls; elsewhere (plain python, a terminal, nbval) it draws
the same content once as a matplotlib figure and prints a table. ``mode`` chooses as for the training
dashboard: ``"widgets"``, ``"text"`` or ``"auto"`` (lessons pass ``cfg.dashboard``). Each widget keeps its
state in plain attributes and has methods that do what its buttons do, so it can be checked without a
browser. None writes into the photo folder: the mistakes browser's marks go to :mod:`tlcourse.exclusions`."""

from .augment_explorer import AugmentationExplorer
from .common import COLORS
from .mistakes import SORTS, MistakesBrowser, with_loss
from .photo_tester import PhotoPrediction, PhotoTester, gradcam_section, photo_section, probabilities_section

