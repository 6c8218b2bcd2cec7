"""Independent NumPy forward passes of Keras's ResNet50 (v1), DenseNet121, InceptionV3 and
InceptionResNetV2, and synthetic Keras h5 files.

ResNet50 follows ``keras/applications/resnet.py``: ZeroPadding +
valid convolutions with bias, BatchNormalization(epsilon=1.001e-5), stride on the first 1x1
convolution of block 1, NHWC tensors, HWIO kernels.  It reads the h5 file with h5py itself and
shares no code with thyro.
"""

from __future__ import annotations

import h5py
import numpy as np

BLOCKS = {2: (64, 3, 1), 3: (128, 4, 2), 4: (256, 6, 2), 5: (512, 3, 2)}
EPS = 1.001e-5
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def synthetic_resnet50_layers(seed: int = 0, densenet_extra: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Random weights with Keras ResNet50 layer names and shapes (float32)."""
    rng = np.random.default_rng(seed)
    layers: dict[str, dict[str, np.ndarray]] = {}

    def conv(name, k, cin, cout):
        layers[name] = {"kernel": rng.normal(0, np.sqrt(2.0 / (k * k * cin)), (k, k, cin, cout)).astype(np.float32),
                        "bias": rng.normal(0, 0.2, cout).astype(np.float32)}

    def bn(name, c, gamma=1.0):
        layers[name] = {"gamma": (gamma * rng.uniform(0.5, 1.0, c)).astype(np.float32),
                        "beta": rng.normal(0, 0.1, c).astype(np.float32),
                        "moving_mean": rng.normal(0, 0.2, c).astype(np.float32),
                        "moving_variance": rng.uniform(0.5, 1.5, c).astype(np.float32)}

    conv("conv1_conv", 7, 3, 64)
    bn("conv1_bn", 64)
    cin = 64
    for stage, (f, n, _s) in BLOCKS.items():
        for b in range(1, n + 1):
            p = f"conv{stage}_block{b}"
            if b == 1:
                conv(f"{p}_0_conv", 1, cin, 4 * f)
                bn(f"{p}_0_bn", 4 * f)
            conv(f"{p}_1_conv", 1, cin, f)
            bn(f"{p}_1_bn", f)
            conv(f"{p}_2_conv", 3, f, f)
            bn(f"{p}_2_bn", f)
            conv(f"{p}_3_conv", 1, f, 4 * f)
            bn(f"{p}_3_bn", 4 * f, gamma=0.3)
            cin = 4 * f
    return layers


def write_keras_h5(path, layers: dict[str, dict[str, np.ndarray]], layout: str = "save_weights",
                   weightless=("input_1", "conv1_pad", "conv1_relu", "pool1_pad", "pool1_pool")) -> None:
    """Write ``layers`` as Keras 2 does: ``model.save`` (model_weights/...) or ``save_weights``."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if layout == "model.save" else f
        if layout == "model.save":
            f.attrs["model_config"] = '{"class_name": "Functional"}'
        names = list(weightless) + list(layers)
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.6.0"
        order = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")
        for name in names:
            g = root.create_group(name)
            ws = layers.get(name, {})
            wnames = [f"{name}/{w}:0" for w in order if w in ws]
            g.attrs["weight_names"] = np.array([w.encode() for w in wnames])
            for w in order:
                if w in ws:
                    g.create_dataset(f"{name}/{w}:0", data=ws[w])


def read_layers(path) -> dict[str, dict[str, np.ndarray]]:
    """Read the h5 back (either layout) as float64 arrays."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for name in root:
            g = root[name]
            for w in g.attrs["weight_names"]:
                w = w.decode()
                out.setdefault(name, {})[w.split("/")[-1][:-2]] = np.asarray(g[w], dtype=np.float64)
    return out


def conv2d(x, kernel, bias, stride=1, pad=0):
    """Keras Conv2D (valid) after ZeroPadding2D(pad), NHWC, HWIO kernel."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
            out += patch @ kernel[i, j]
    return out + bias


def batchnorm(x, p):
    return (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + EPS) * p["gamma"] + p["beta"]


def maxpool_3x3_s2_after_zeropad1(x):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # Keras pool1_pad: ZeroPadding2D
    n, h, w, c = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i:i + 2 * (oh - 1) + 1:2, j:j + 2 * (ow - 1) + 1:2, :])
    return out


def relu(x):
    return np.maximum(x, 0)


def keras_resnet50_features(layers, x_bgr_caffe):
    """Output of ``conv5_block3_out`` (NHWC) for an already preprocessed NHWC input."""
    L = layers

    def cbn(x, name, stride=1, pad=0):
        return batchnorm(conv2d(x, L[name + "_conv"]["kernel"], L[name + "_conv"]["bias"], stride, pad), L[name + "_bn"])

    x = relu(cbn(x_bgr_caffe, "conv1", stride=2, pad=3))
    x = maxpool_3x3_s2_after_zeropad1(x)
    for stage, (_f, n, stride) in BLOCKS.items():
        for b in range(1, n + 1):
            p = f"conv{stage}_block{b}"
            s = stride if b == 1 else 1
            shortcut = cbn(x, f"{p}_0", stride=s) if b == 1 else x
            y = relu(cbn(x, f"{p}_1", stride=s))
            y = relu(cbn(y, f"{p}_2", pad=1))  # padding="same" at stride 1
            y = cbn(y, f"{p}_3")
            x = relu(shortcut + y)
    return x


def caffe_preprocess(grey01):
    """Keras ``resnet50.preprocess_input`` of a grey image shown as RGB: NHWC, BGR, 0-255, mean removed."""
    rgb = np.repeat(grey01[..., None] * 255.0, 3, axis=-1)
    bgr = rgb[..., ::-1]
    return bgr - CAFFE_MEAN_BGR


# ---------------------------------------------------------------------------------------------
# Keras InceptionV3 (keras/applications/inception_v3.py): conv2d_bn = Conv2D(use_bias=False) +
# BatchNormalization(scale=False, epsilon=1e-3) + ReLU; layers auto-named conv2d, conv2d_1, ...


class _InceptionWeights:
    """Hands out the weights of successive conv2d_bn calls; creates random ones when ``rng`` is given."""

    def __init__(self, layers=None, rng=None):
        self.layers = layers if layers is not None else {}
        self.rng = rng
        self.i = 0

    def next(self, kh, kw, cin, cout):
        suffix = "" if self.i == 0 else f"_{self.i}"
        conv, bn = f"conv2d{suffix}", f"batch_normalization{suffix}"
        self.i += 1
        if self.rng is not None:
            r = self.rng
            self.layers[conv] = {"kernel": r.normal(0, np.sqrt(1.0 / (kh * kw * cin)), (kh, kw, cin, cout)).astype(np.float32)}
            self.layers[bn] = {"beta": r.normal(0, 0.1, cout).astype(np.float32),
                               "moving_mean": r.normal(0, 0.1, cout).astype(np.float32),
                               "moving_variance": r.uniform(0.5, 1.5, cout).astype(np.float32)}
        return self.layers[conv], self.layers[bn]


def _conv2d_bn(w: _InceptionWeights, x, filters, kh, kw, strides=1, padding="same"):
    conv, bn = w.next(kh, kw, x.shape[-1], filters)
    k = np.asarray(conv["kernel"], dtype=np.float64)
    if padding == "same":  # stride 1, odd kernels: symmetric padding
        x = np.pad(x, ((0, 0), ((kh - 1) // 2, (kh - 1) // 2), ((kw - 1) // 2, (kw - 1) // 2), (0, 0)))
    y = conv2d(x, k, 0.0, stride=strides, pad=0)
    y = (y - bn["moving_mean"]) / np.sqrt(np.asarray(bn["moving_variance"], np.float64) + 1e-3) + bn["beta"]
    return relu(y)


def _avgpool_same(x):
    """AveragePooling2D((3, 3), strides=(1, 1), padding='same'): the mean over real pixels only."""
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ones = np.pad(np.ones((1, h, w, 1)), ((0, 0), (1, 1), (1, 1), (0, 0)))
    total, count = np.zeros_like(x), np.zeros((1, h, w, 1))
    for i in range(3):
        for j in range(3):
            total += xp[:, i:i + h, j:j + w]
            count += ones[:, i:i + h, j:j + w]
    return total / count


def _maxpool_valid(x):
    n, h, w, c = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i:i + 2 * (oh - 1) + 1:2, j:j + 2 * (ow - 1) + 1:2])
    return out


def keras_inception_v3_features(x, layers=None, rng=None):
    """Output of ``mixed10`` (NHWC); with ``rng`` it also fills ``layers`` with random weights.

    Returns ``(features, layers)``.
    """
    w = _InceptionWeights(layers, rng)
    cat = lambda *t: np.concatenate(t, axis=-1)  # noqa: E731
    x = _conv2d_bn(w, x, 32, 3, 3, strides=2, padding="valid")
    x = _conv2d_bn(w, x, 32, 3, 3, padding="valid")
    x = _conv2d_bn(w, x, 64, 3, 3)
    x = _maxpool_valid(x)
    x = _conv2d_bn(w, x, 80, 1, 1, padding="valid")
    x = _conv2d_bn(w, x, 192, 3, 3, padding="valid")
    x = _maxpool_valid(x)
    for pool_features in (32, 64, 64):  # mixed 0, 1, 2
        b1 = _conv2d_bn(w, x, 64, 1, 1)
        b5 = _conv2d_bn(w, _conv2d_bn(w, x, 48, 1, 1), 64, 5, 5)
        b3 = _conv2d_bn(w, _conv2d_bn(w, _conv2d_bn(w, x, 64, 1, 1), 96, 3, 3), 96, 3, 3)
        bp = _conv2d_bn(w, _avgpool_same(x), pool_features, 1, 1)
        x = cat(b1, b5, b3, bp)
    b3 = _conv2d_bn(w, x, 384, 3, 3, strides=2, padding="valid")  # mixed 3
    bd = _conv2d_bn(w, _conv2d_bn(w, _conv2d_bn(w, x, 64, 1, 1), 96, 3, 3), 96, 3, 3, strides=2, padding="valid")
    x = cat(b3, bd, _maxpool_valid(x))
    for c in (128, 160, 160, 192):  # mixed 4, 5, 6, 7
        b1 = _conv2d_bn(w, x, 192, 1, 1)
        b7 = _conv2d_bn(w, _conv2d_bn(w, _conv2d_bn(w, x, c, 1, 1), c, 1, 7), 192, 7, 1)
        bd = _conv2d_bn(w, x, c, 1, 1)
        bd = _conv2d_bn(w, bd, c, 7, 1)
        bd = _conv2d_bn(w, bd, c, 1, 7)
        bd = _conv2d_bn(w, bd, c, 7, 1)
        bd = _conv2d_bn(w, bd, 192, 1, 7)
        bp = _conv2d_bn(w, _avgpool_same(x), 192, 1, 1)
        x = cat(b1, b7, bd, bp)
    b3 = _conv2d_bn(w, _conv2d_bn(w, x, 192, 1, 1), 320, 3, 3, strides=2, padding="valid")  # mixed 8
    b7 = _conv2d_bn(w, x, 192, 1, 1)
    b7 = _conv2d_bn(w, b7, 192, 1, 7)
    b7 = _conv2d_bn(w, b7, 192, 7, 1)
    b7 = _conv2d_bn(w, b7, 192, 3, 3, strides=2, padding="valid")
    x = cat(b3, b7, _maxpool_valid(x))
    for _ in range(2):  # mixed 9, 10
        b1 = _conv2d_bn(w, x, 320, 1, 1)
        b3 = _conv2d_bn(w, x, 384, 1, 1)
        b3 = cat(_conv2d_bn(w, b3, 384, 1, 3), _conv2d_bn(w, b3, 384, 3, 1))
        bd = _conv2d_bn(w, _conv2d_bn(w, x, 448, 1, 1), 384, 3, 3)
        bd = cat(_conv2d_bn(w, bd, 384, 1, 3), _conv2d_bn(w, bd, 384, 3, 1))
        bp = _conv2d_bn(w, _avgpool_same(x), 192, 1, 1)
        x = cat(b1, b3, bd, bp)
    return x, w.layers


# ---------------------------------------------------------------------------------------------
# Keras InceptionResNetV2 (keras/applications/inception_resnet_v2.py)


def _named_conv(w: _InceptionWeights, x, name, filters, bias):
    """conv2d_bn(..., name=NAME): Conv2D NAME (+ BatchNormalization NAME_bn when it has no bias)."""
    cin = x.shape[-1]
    if w.rng is not None:
        r = w.rng
        w.layers[name] = {"kernel": r.normal(0, np.sqrt(1.0 / cin), (1, 1, cin, filters)).astype(np.float32)}
        if bias:
            w.layers[name]["bias"] = r.normal(0, 0.1, filters).astype(np.float32)
        else:
            w.layers[name + "_bn"] = {"beta": r.normal(0, 0.1, filters).astype(np.float32),
                                      "moving_mean": r.normal(0, 0.1, filters).astype(np.float32),
                                      "moving_variance": r.uniform(0.5, 1.5, filters).astype(np.float32)}
    conv = w.layers[name]
    y = conv2d(x, np.asarray(conv["kernel"], np.float64), np.asarray(conv.get("bias", 0.0), np.float64))
    if not bias:
        bn = w.layers[name + "_bn"]
        y = relu((y - bn["moving_mean"]) / np.sqrt(np.asarray(bn["moving_variance"], np.float64) + 1e-3) + bn["beta"])
    return y


def keras_inception_resnet_v2_features(x, layers=None, rng=None):
    """Output of ``conv_7b_ac`` (NHWC); with ``rng`` it also fills ``layers`` with random weights."""
    w = _InceptionWeights(layers, rng)
    cat = lambda *t: np.concatenate(t, axis=-1)  # noqa: E731
    cb = lambda t, f, kh, kw=None, **kw_: _conv2d_bn(w, t, f, kh, kw or kh, **kw_)  # noqa: E731
    x = cb(x, 32, 3, strides=2, padding="valid")
    x = cb(x, 32, 3, padding="valid")
    x = cb(x, 64, 3)
    x = _maxpool_valid(x)
    x = cb(x, 80, 1, padding="valid")
    x = cb(x, 192, 3, padding="valid")
    x = _maxpool_valid(x)
    b0 = cb(x, 96, 1)
    b1 = cb(cb(x, 48, 1), 64, 5)
    b2 = cb(cb(cb(x, 64, 1), 96, 3), 96, 3)
    bp = cb(_avgpool_same(x), 64, 1)
    x = cat(b0, b1, b2, bp)

    def block(x, kind, idx, scale, activation=True):
        if kind == "block35":
            branches = [cb(x, 32, 1), cb(cb(x, 32, 1), 32, 3), cb(cb(cb(x, 32, 1), 48, 3), 64, 3)]
        elif kind == "block17":
            branches = [cb(x, 192, 1), cb(cb(cb(x, 128, 1), 160, 1, 7), 192, 7, 1)]
        else:
            branches = [cb(x, 192, 1), cb(cb(cb(x, 192, 1), 224, 1, 3), 256, 3, 1)]
        up = _named_conv(w, cat(*branches), f"{kind}_{idx}_conv", x.shape[-1], bias=True)
        x = x + up * scale
        return relu(x) if activation else x

    for i in range(1, 11):
        x = block(x, "block35", i, 0.17)
    b0 = cb(x, 384, 3, strides=2, padding="valid")
    b1 = cb(cb(cb(x, 256, 1), 256, 3), 384, 3, strides=2, padding="valid")
    x = cat(b0, b1, _maxpool_valid(x))
    for i in range(1, 21):
        x = block(x, "block17", i, 0.1)
    b0 = cb(cb(x, 256, 1), 384, 3, strides=2, padding="valid")
    b1 = cb(cb(x, 256, 1), 288, 3, strides=2, padding="valid")
    b2 = cb(cb(cb(x, 256, 1), 288, 3), 320, 3, strides=2, padding="valid")
    x = cat(b0, b1, b2, _maxpool_valid(x))
    for i in range(1, 10):
        x = block(x, "block8", i, 0.2)
    x = block(x, "block8", 10, 1.0, activation=False)
    x = _named_conv(w, x, "conv_7b", 1536, bias=False)
    return x, w.layers


# ---------------------------------------------------------------------------------------------
# Keras DenseNet121 (keras/applications/densenet.py): BatchNormalization(epsilon=1.001e-5)


def keras_densenet121_features(x, layers=None, rng=None):
    """Output of the final ``relu`` (NHWC); with ``rng`` it also fills ``layers`` with random weights."""
    layers = {} if layers is None else layers

    def conv(name, t, filters, k, stride=1, pad=0):
        if rng is not None:
            cin = t.shape[-1]
            layers[name] = {"kernel": rng.normal(0, np.sqrt(2.0 / (k * k * cin)), (k, k, cin, filters)).astype(np.float32)}
        return conv2d(t, np.asarray(layers[name]["kernel"], np.float64), 0.0, stride=stride, pad=pad)

    def bn_relu(name, t):
        if rng is not None:
            c = t.shape[-1]
            layers[name] = {"gamma": rng.uniform(0.5, 1.0, c).astype(np.float32),
                            "beta": rng.normal(0, 0.1, c).astype(np.float32),
                            "moving_mean": rng.normal(0, 0.1, c).astype(np.float32),
                            "moving_variance": rng.uniform(0.5, 1.5, c).astype(np.float32)}
        p = {k: np.asarray(v, np.float64) for k, v in layers[name].items()}
        return relu(batchnorm(t, p))

    x = conv("conv1/conv", x, 64, 7, stride=2, pad=3)       # ZeroPadding2D(3) + valid conv
    x = maxpool_3x3_s2_after_zeropad1(bn_relu("conv1/bn", x))
    for stage, n in ((2, 6), (3, 12), (4, 24), (5, 16)):
        for b in range(1, n + 1):
            p = f"conv{stage}_block{b}"
            y = conv(f"{p}_1_conv", bn_relu(f"{p}_0_bn", x), 128, 1)
            y = conv(f"{p}_2_conv", bn_relu(f"{p}_1_bn", y), 32, 3, pad=1)  # padding="same"
            x = np.concatenate([x, y], axis=-1)
        if stage < 5:
            y = conv(f"pool{stage}_conv", bn_relu(f"pool{stage}_bn", x), x.shape[-1] // 2, 1)
            nb, h, w, c = y.shape
            x = y[:, : h // 2 * 2, : w // 2 * 2].reshape(nb, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    return bn_relu("bn", x), layers
