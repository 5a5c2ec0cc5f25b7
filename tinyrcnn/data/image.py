"""Images in: decoding a file to (H, W, 3) uint8 RGB, and the one check every image input meets."""
import numpy as np


def read_image(path):
    """Decode a JPEG/PNG into (H, W, 3) uint8 RGB; grayscale, palette, RGBA and CMYK are converted."""
    import imageio.v3 as iio  # pulled in by scikit-image; imported here to keep `import tinyrcnn` light
    try:
        image = iio.imread(path, mode='RGB')
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: image file not found') from None
    except Exception as e:
        raise ValueError(f'{path}: cannot decode image ({e})') from None
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'{path}: expected an (H, W, 3) RGB image, got shape {image.shape}')
    if image.dtype != np.uint8:  # 16-bit PNGs
        image = (image.astype(np.float64) * 255.0 / np.iinfo(image.dtype).max).round().astype(np.uint8)
    return np.ascontiguousarray(image)


def check_image(image, what='image', uint8=True, min_side=1):
    """`image` as an (H, W, 3) RGB array of at least min_side x min_side pixels, uint8 unless
    uint8=False (the transforms also take float pixels in 0..255); else one ValueError that
    names `what` and says what was expected."""
    image = np.asarray(image)
    kind = 'uint8 ' if uint8 else ''
    if image.ndim != 3 or image.shape[2] != 3 or (uint8 and image.dtype != np.uint8):
        raise ValueError(f'{what} must be an (H, W, 3) {kind}RGB array, got shape {image.shape} '
                         f'and dtype {image.dtype}')
    if image.shape[0] < min_side or image.shape[1] < min_side:
        raise ValueError(f'{what} must be at least {min_side}x{min_side} pixels, got shape {image.shape}')
    return image
