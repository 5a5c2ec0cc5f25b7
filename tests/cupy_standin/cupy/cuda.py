"""`cupy.cuda` of the stand-in: one device and a stream whose synchronize() only counts.

Nothing here measures anything: there is no GPU, so the memory pool reports 0 bytes and
there is no CUDA version to tell.
"""
import types

from . import _standin


class CUDARuntimeError(RuntimeError):
    pass


def _device_synchronize():
    _standin.record('sync', 'deviceSynchronize')


runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1, getDevice=lambda: 0, deviceSynchronize=_device_synchronize,
    CUDARuntimeError=CUDARuntimeError,
    getDeviceProperties=lambda i: {'name': b'CuPy stand-in (NumPy on the CPU)', 'totalGlobalMem': 0,
                                   'major': 9, 'minor': 0},
    runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0)      # no CUDA at all


class Device:
    """cupy.cuda.Device(0): the only device there is."""

    compute_capability = '90'
    mem_info = (0, 0)

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise CUDARuntimeError('cudaErrorInvalidDevice: invalid device ordinal (the CuPy '
                                   'stand-in has one device)')

    def synchronize(self):
        _standin.record('sync', 'Device.synchronize')

    def use(self):
        return self

    __enter__ = use

    def __exit__(self, *exc):
        return False


class Stream(Device):
    """Streams exist, but nothing runs concurrently on the stand-in."""

    def __init__(self, null=False, non_blocking=False, ptds=False):
        super().__init__(0)

    def synchronize(self):
        _standin.record('sync', 'Stream.synchronize')


def get_current_stream():
    return Stream(null=True)


class MemoryPool:
    """Reports nothing: the stand-in cannot show device memory."""

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass
