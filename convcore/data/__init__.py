"""Datasets and batches: Fashion-MNIST (default), MNIST and CIFAR-10 loaders with
checked file readers, a seeded batch iterator and AlexNet's PCA colour
augmentation."""
from convcore.data._files import (extract_tar, read_cifar_binary, read_cifar_python,
                                  read_idx_header, read_idx_pair, read_idx_payload)
from convcore.data.datasets import (CIFAR10_CLASSES, DATASETS, FASHION_CLASSES,
                                    MNIST_CLASSES, Dataset, DatasetNotFoundError,
                                    load_cifar10, load_dataset, load_fashion_mnist,
                                    load_mnist, long_tailed_indices)
from convcore.data.loader import BatchIterator, channel_stats
from convcore.data.lighting import PCALighting, pca_lighting_basis, training_augmentation

__all__ = [
    "Dataset", "DatasetNotFoundError", "BatchIterator", "channel_stats",
    "load_dataset", "load_fashion_mnist", "load_mnist", "load_cifar10",
    "long_tailed_indices", "read_idx_header", "read_idx_payload", "read_idx_pair",
    "read_cifar_binary", "read_cifar_python", "extract_tar",
    "FASHION_CLASSES", "MNIST_CLASSES", "CIFAR10_CLASSES", "DATASETS",
    "PCALighting", "pca_lighting_basis", "training_augmentation",
]


def __dir__():   # dir() shows the public names only
    return sorted(__all__)
