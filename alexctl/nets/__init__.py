"""The paper's networks (section 3) and the fast forms of their layers (kernels/)."""
