"""What `pip install .` puts in the wheel: every file the package reads at run time."""
import fnmatch
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_data_file_of_the_package_is_in_its_package_data():
    # a file the code opens (a kernel, a C++ speed path, a shipped model) but the wheel lacks
    # works in a checkout and fails, or silently falls back, once installed
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        globs = tomllib.load(f)['tool']['setuptools']['package-data']['tinyrcnn']
    package = os.path.join(ROOT, 'tinyrcnn')
    data = []
    for folder, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        data += [os.path.relpath(os.path.join(folder, f), package) for f in files
                 if not f.endswith(('.py', '.pyc'))]
    assert {'speed/felzenszwalb.cpp', 'speed/winograd.cpp', 'speed/winograd4.cpp', 'speed/nms.cpp',
            'speed/adam.cpp', 'speed/max_pool.cpp', 'speed/roi_pool.cpp',
            'assets/vgg_tiny_shapes.npz'} <= set(data)
    missing = [p for p in data if not any(fnmatch.fnmatch(p, g) for g in globs)]
    assert not missing, f'add them to [tool.setuptools.package-data] in pyproject.toml: {missing}'
