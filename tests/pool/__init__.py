"""Tests of the pooling family: max, average and adaptive average pooling."""
