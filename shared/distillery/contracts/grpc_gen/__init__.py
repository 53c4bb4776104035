"""Python modules generated from proto/distill/v1 by ``make proto`` (see ``distillery_gen.grpc``); do not edit."""
