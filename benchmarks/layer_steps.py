"""Compiles and times one layer's forward+backward step on any Keras backend.

A step computes the gradients of `sum(y^2)` with respect to the input and
the weights: `tf.function` (graph, or XLA with `jit_compile=True`) under
TensorFlow, `jax.jit` of `layer.stateless_call` under JAX, eager
`torch.autograd.grad` under PyTorch. `measure_group` times a group of
layers round-robin so that machine load shifts all of them alike.
`timeit` was considered: it neither compiles once per layer nor
interleaves a group, which the ratios need.
"""

import statistics
import time

import keras
import numpy as np

if keras.backend.backend() == "tensorflow":  # other backends run without it
    import tensorflow as tf

MAX_SECONDS_PER_MEASURE = 4.0  # stop repeating (after 2) past this

_OpError = (
    tf.errors.OpError
    if keras.backend.backend() == "tensorflow"
    else RuntimeError
)


def _wait(grads):
    """Returns once the device has computed `grads` (dispatch is async)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.block_until_ready(grads)
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    else:
        for g in grads:  # TF has no wait without a copy to the host
            np.asarray(g)


def _run(step, x):
    _wait(step(x))


def _first_run(step, x):
    """`(step, x, seconds)` of the first call (tracing and compiling)."""
    start = time.perf_counter()
    _run(step, x)
    return step, x, time.perf_counter() - start


def _compile_tf(make_layer, shape, jit):
    """`tf.function` of the step, with XLA when `jit`."""
    layer = make_layer()
    layer.build(shape)
    x = tf.random.stateless_normal(shape, seed=(1, 2))
    weights = layer.trainable_weights

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.square(tf.cast(y, tf.float32)))
        return tape.gradient(loss, [x, *weights])

    return _first_run(step, x)


def _compile_jax(make_layer, shape):
    """`jax.jit` of the same step through `layer.stateless_call`."""
    import jax

    layer = make_layer()
    layer.build(shape)
    x = jax.random.normal(jax.random.key(1), shape)
    weights = [v.value for v in layer.trainable_variables]

    def loss(x, weights):
        y, _ = layer.stateless_call(weights, [], x)
        return jax.numpy.sum(jax.numpy.square(y.astype("float32")))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))

    def step(x):
        gx, gw = grad(x, weights)
        return [gx, *gw]

    return _first_run(step, x)


def _compile_torch(make_layer, shape):
    """The same step in PyTorch eager mode, with `torch.autograd.grad`."""
    import torch

    layer = make_layer()
    layer.build(shape)
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    x = keras.ops.convert_to_tensor(x).requires_grad_(True)  # Keras' device
    weights = [v.value for v in layer.trainable_variables]

    def step(x):
        y = layer(x)
        loss = torch.sum(torch.square(y.float()))
        return torch.autograd.grad(loss, [x, *weights])

    return _first_run(step, x)


def compile_step(make_layer, shape, jit):
    """Builds a forward+backward step; returns (step, x, compile_seconds).

    `jit` picks XLA under TensorFlow; JAX always jits, torch stays eager.
    """
    if keras.backend.backend() == "jax":
        return _compile_jax(make_layer, shape)
    if keras.backend.backend() == "torch":
        return _compile_torch(make_layer, shape)
    return _compile_tf(make_layer, shape, jit)


def measure_group(candidates, shape, jit, reps):
    """Compiles every candidate, then times them round-robin (so machine
    load affects all alike).

    Args:
        candidates: `{name: (make_layer, skip)}`; `skip` is None or the
            "skipped (...)" text to report instead of measuring.
        shape: the input shape `(B, H, W, C)`.
        jit: bool, XLA under TensorFlow.
        reps: the most repeats (fewer once a round takes over
            `MAX_SECONDS_PER_MEASURE`, after two).

    Returns:
        `{name: (compile_s, min_s, median_s)}` or `{name: "skipped (...)"}`,
        in the order of `candidates`.
    """
    compiled, results = {}, {}
    for name, (make, skip) in candidates.items():
        if skip is not None:
            results[name] = skip
            continue
        try:
            compiled[name] = compile_step(make, shape, jit)
        except (_OpError, MemoryError) as err:
            msg = str(err).splitlines()[0][:60]
            results[name] = f"skipped (error: {type(err).__name__}: {msg})"
    times = {name: [] for name in compiled}
    for i in range(reps):
        for name, (step, x, _) in compiled.items():
            start = time.perf_counter()
            _run(step, x)
            times[name].append(time.perf_counter() - start)
        total = max(sum(t) for t in times.values()) if times else 0.0
        if i >= 1 and total > MAX_SECONDS_PER_MEASURE:
            break
    for name, (_, _, compile_s) in compiled.items():
        ts = times[name]
        results[name] = (compile_s, min(ts), statistics.median(ts))
    return {name: results[name] for name in candidates}


def reps_for(shape, quick):
    """Repeats of a measurement: 3 for large inputs or `quick`, else 15."""
    if quick:
        return 3
    return 3 if np.prod(shape) > 2_000_000 else 15
