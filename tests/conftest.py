"""Test set-up: two simulated CPU devices for the pmap tests.

This must run before any JAX backend is initialised, hence the conftest.
"""

import chex

chex.set_n_cpu_devices(2)
