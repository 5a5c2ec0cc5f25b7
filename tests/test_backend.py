"""The allocator switch of tinyrcnn.backend (the rest of the backend is tested with the ops)."""


def test_keep_freed_memory_takes_effect_on_glibc(monkeypatch):
    import platform
    from tinyrcnn import backend
    backend.keep_freed_memory.cache_clear()
    monkeypatch.setenv('TINYRCNN_DEFAULT_MALLOC', '1')
    assert backend.keep_freed_memory() is False                  # the opt-out is honoured
    backend.keep_freed_memory.cache_clear()
    monkeypatch.delenv('TINYRCNN_DEFAULT_MALLOC')
    assert backend.keep_freed_memory() is (platform.libc_ver()[0] == 'glibc')
