"""Images in: decoding a file to (H, W, 3) uint8 RGB, and the one check every image input meets."""
import numpy as np


def read_image(path):
    """Decode an image file into (H, W, 3) uint8 RGB. Grayscale, palette, RGBA and CMYK images
    are converted; 16-bit ones are scaled to 8 bits (not clipped); an animation gives its first
    frame. A missing file is FileNotFoundError, anything undecodable (truncated, empty, not an
    image, a decompression bomb) one ValueError naming the file."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.seek(0)                                      # the first frame of an animation
            if im.mode.startswith('I;16') or im.mode == 'I':   # 16-bit gray (some read as 32-bit)
                gray = np.asarray(im, dtype=np.float64)
                if gray.max(initial=0) > 65535 or gray.min(initial=0) < 0:
                    raise ValueError(f'{im.mode} values outside 0..65535')
                image = np.repeat(np.round(gray / 257).astype(np.uint8)[:, :, None], 3, axis=2)
            else:
                image = np.asarray(im.convert('RGB'))
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: image file not found') from None
    except IsADirectoryError:
        raise ValueError(f'{path}: a folder, not an image file') from None
    except Exception as e:          # Pillow raises many kinds: OSError, SyntaxError, DecompressionBombError...
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f'{path}: cannot decode image ({message})') from None
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'{path}: expected an (H, W, 3) RGB image, got shape {image.shape}')
    return np.ascontiguousarray(image, dtype=np.uint8)


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
