"""Widgets for exploring: a photo tester, an augmentation explorer and a mistakes browser.

Each is one line in a lesson::

    PhotoTester(checkpoint_path, gradcam=True, mode=cfg.dashboard).show()
    AugmentationExplorer(photo_path, settings, mode=cfg.dashboard).show()
    MistakesBrowser(results, data.classes, exclusions=cfg.excluded_csv, mode=cfg.dashboard).show()

In JupyterLab, ``show()`` displays ipywidgets controls. Elsewhere (plain python,
a terminal, or a notebook run without a browser, as nbval does) it draws the same
content once as a static matplotlib figure and prints a table, so a lesson still
makes sense. ``mode`` chooses, as for the training dashboard: ``"widgets"``,
``"text"`` or ``"auto"`` (widgets inside a Jupyter kernel); lessons pass
``mode=cfg.dashboard`` (``TLCOURSE_DASHBOARD``), which headless runs set to ``text``.

Each widget keeps its state in plain Python attributes (``prediction``,
``tiles``, ``current``, ...) and has methods that do what its buttons do, so it
can be driven and checked without a browser. None of them writes into the photo
folder: the mistakes browser's marks go to the exclusion list in the output
folder (:mod:`tlcourse.exclusions`).
"""

from .augment_explorer import AugmentationExplorer
from .common import COLORS
from .mistakes import SORTS, MistakesBrowser, with_loss
from .photo_tester import PhotoPrediction, PhotoTester, gradcam_section, photo_section, probabilities_section

