"""Python modules generated from proto/distill/v1 by ``make proto`` (see :mod:`.generate`); do not edit."""
