"""GoogLeNet (Inception v1) in JAX/Flax, built around weight initialization."""

from googlenet_jax.inits import InitScheme, get_init, list_inits
from googlenet_jax.models import GoogLeNet, Inception

__all__ = ["GoogLeNet", "Inception", "InitScheme", "get_init", "list_inits"]
__version__ = "0.1.0"
