"""What a benchmark ran on: the device Keras computes on, in words.

The backends name their devices differently (`jax.devices()`,
`torch.cuda`, `tf.config`); a results file says which one it measured.
"""

import platform

import keras


def device_name():
    """This process's Keras backend's first accelerator, else the CPU.

    Returns:
        e.g. `"NVIDIA H200 (gpu)"` or `"CPU (x86_64)"`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.device_kind} ({device.platform})"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name()} (gpu)"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"{details.get('device_name', gpus[0].name)} (gpu)"
    return f"CPU ({platform.processor() or platform.machine()})"
