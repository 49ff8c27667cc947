"""Data: from a folder of class subfolders to a labels table (:mod:`.folders`), photos (:mod:`.images`),
transforms (:mod:`.transforms`), a seeded split (:mod:`.split`) and the course's Datasets (:mod:`.course`).
Every public name is importable from ``tlcourse.data``, as the lessons do."""

from .course import CourseData, CSVDataset, load_course_data, make_loader
from .folders import (IMAGE_EXTENSIONS, LABEL_COLUMNS, SYSTEM_FILES, FolderScan, SkippedFile, SkippedFilesWarning,
                      class_names, create_csv, find_classes, inspect_folder, label_folder, read_labels_csv,
                      scan_folder, worth_warning, write_labels_csv)
from .images import CHECKS, MIN_IMAGE_SIDE, inspect_image, load_image, to_rgb
from .split import Split, stratified_split, subset_per_class
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, AugmentSettings, Downscale, ImageToTensor, SquareCrop,
                         TransformSettings, denormalize, downscale, eval_transform, train_transform)

