"""Test session settings: strict dtype promotion, so a silent float16/float32/int mix in agent code fails a test
(Equinox's own tests do the same). Agents cast explicitly where they mix dtypes."""

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
