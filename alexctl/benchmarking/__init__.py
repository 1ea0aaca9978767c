"""Benchmarking: where the time goes (bench), the GPU check, and the stock torchvision recipe as baseline."""
