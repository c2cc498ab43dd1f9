"""The order of the gallery's examples: the reading order, not the alphabet."""
import os

ORDER = ("plot_sobel.py", "plot_filters_feature_maps.py", "plot_summary.py",
         "train_lenet5.py", "imbalance.py")


class ExampleOrder:
    """Sort key for sphinx-gallery's ``within_subsection_order``: the files of
    ``ORDER`` first, in that order, then any other example by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = os.path.basename(filename)
        return (ORDER.index(name), name) if name in ORDER else (len(ORDER), name)

    def __repr__(self):
        return "<ExampleOrder>"
