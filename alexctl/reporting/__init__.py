"""Reporting: the paper's figures and claims from run directories, and the status of a pipeline."""
