"""The evaluation wing: what a generator learnt, in numbers and pictures.

* :mod:`~npgan.eval.metrics`: mode coverage on the 2-D mixtures, classifier metrics and PRDC on images;
* :mod:`~npgan.eval.classifiers`: the small MLP classifiers the image metrics use (digits and shapes shipped);
* :mod:`~npgan.eval.plots`: image grids, 2-D scatters over the modes, loss curves (matplotlib, imported lazily).

It imports the engine and the data wing (to train its classifiers), never the training loop or the run.
"""

from .classifiers import MLPClassifier, digits_classifier, mnist_classifier, shapes_classifier
from .metrics import classifier_metrics, colour_image_metrics, image_metrics, mode_metrics, prdc

__all__ = ["mode_metrics", "classifier_metrics", "prdc", "image_metrics", "colour_image_metrics", "MLPClassifier",
           "digits_classifier", "mnist_classifier", "shapes_classifier"]
