"""Router service: reads tasks and decides which teachers answer them."""

__version__ = "0.1.0"
