"""Weights from elsewhere: PyTorch files read without PyTorch, published networks mapped onto ours."""
