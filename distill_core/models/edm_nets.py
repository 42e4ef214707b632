"""EDM's two network families as this project's own code, parameter-compatible with NVlabs' state.

EDM (Karras et al., 2022; NVlabs/edm `training/networks.py`) publishes its teachers on two U-Nets:
`SongUNet` (DDPM++ with a positional noise embedding and a standard encoder; NCSN++ with a Fourier
embedding, a residual encoder and FIR resampling [1, 3, 3, 1]) and `DhariwalUNet` (ADM, class-conditional
on ImageNet-64). The modules here carry the same names and tensors as NVlabs' (`enc.32x32_block0.conv0.weight`,
...), so a state read by `distill_core.edm_pickle` loads with `load_state_dict(strict=True)`; the
computations follow the EDM paper's appendix and NVlabs' description of them, written anew.

`EDMNetwork` is the adapter to our `edm` family: the family feeds every network the log-SNR -2 ln sigma and
integer labels; EDM's networks take c_noise = ln(sigma) / 4 and one-hot labels.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    """EDM's GroupNorm: up to 32 groups of at least 4 channels."""
    return nn.GroupNorm(min(32, channels // 4), channels, eps=eps)


class Conv(nn.Module):
    """A k x k convolution (k = 0: none) with optional 2x up- or down-sampling through a separable FIR filter
    (`resample_filter`, a buffer), fused into the convolution as NVlabs' `fused_resample` does."""

    def __init__(self, c_in, c_out, kernel, bias=True, up=False, down=False, resample_filter=(1, 1), fused=False):
        super().__init__()
        self.c_in, self.c_out, self.up, self.down, self.fused = c_in, c_out, up, down, fused
        self.weight = nn.Parameter(torch.zeros(c_out, c_in, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(c_out)) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        self.register_buffer("resample_filter", (torch.outer(f, f) / f.sum() ** 2)[None, None] if up or down else None)

    def forward(self, x):
        w, f = self.weight, self.resample_filter
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused and self.up and w is not None:
            x = F.conv_transpose2d(x, (4 * f).tile(self.c_in, 1, 1, 1), groups=self.c_in, stride=2,
                                   padding=max(f_pad - w_pad, 0))
            x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        elif self.fused and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile(self.c_out, 1, 1, 1), groups=self.c_out, stride=2)
        else:
            if self.up:
                x = F.conv_transpose2d(x, (4 * f).tile(self.c_in, 1, 1, 1), groups=self.c_in, stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile(self.c_in, 1, 1, 1), groups=self.c_in, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        return x + self.bias.reshape(1, -1, 1, 1) if self.bias is not None else x


class Block(nn.Module):
    """The U-Net block of DDPM++, NCSN++ and ADM: GroupNorm-SiLU-conv, the embedding as a shift (or ADM's
    scale and shift), GroupNorm-SiLU-dropout-conv, a skip (a 1x1 projection where the shape changes),
    then optional single- or multi-head self-attention."""

    def __init__(self, c_in, c_out, emb, up=False, down=False, attention=False, num_heads=None,
                 channels_per_head=64, dropout=0.0, skip_scale=1.0, eps=1e-5, resample_filter=(1, 1),
                 resample_proj=False, adaptive_scale=True):
        super().__init__()
        self.in_channels, self.out_channels = c_in, c_out
        self.drop = nn.Dropout(dropout)  # (a module, so that a student's dropout is set like any network's: 0)
        self.skip_scale, self.adaptive_scale = skip_scale, adaptive_scale
        self.num_heads = 0 if not attention else num_heads if num_heads is not None else c_out // channels_per_head
        self.norm0 = group_norm(c_in, eps)
        self.conv0 = Conv(c_in, c_out, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = nn.Linear(emb, c_out * (2 if adaptive_scale else 1))
        self.norm1 = group_norm(c_out, eps)
        self.conv1 = Conv(c_out, c_out, 3)
        self.skip = None
        if c_out != c_in or up or down:
            kernel = 1 if resample_proj or c_out != c_in else 0
            self.skip = Conv(c_in, c_out, kernel, up=up, down=down, resample_filter=resample_filter)
        if self.num_heads:
            self.norm2 = group_norm(c_out, eps)
            self.qkv = Conv(c_out, c_out * 3, 1)
            self.proj = Conv(c_out, c_out, 1)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None]
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(self.drop(h))
        x = (h + (self.skip(x) if self.skip is not None else x)) * self.skip_scale
        if self.num_heads:
            x = (self.proj(self._attend(self.qkv(self.norm2(x)), x.shape)) + x) * self.skip_scale
        return x

    def _attend(self, qkv, shape):
        n, c = shape[0] * self.num_heads, shape[1] // self.num_heads
        q, k, v = qkv.reshape(n, c, 3, -1).unbind(2)
        w = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(c)).softmax(dim=2).to(q.dtype)
        return torch.einsum("nqk,nck->ncq", w, v).reshape(shape)


class PositionalEmbedding(nn.Module):
    def __init__(self, channels, max_positions=10000, endpoint=False):
        super().__init__()
        self.channels, self.max_positions, self.endpoint = channels, max_positions, endpoint

    def forward(self, x):
        half = self.channels // 2
        freqs = (1 / self.max_positions) ** (torch.arange(half, dtype=torch.float32, device=x.device)
                                             / (half - (1 if self.endpoint else 0)))
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    def __init__(self, channels, scale=16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * scale)

    def forward(self, x):
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


def _decoder_entry(dec, res: int, cout: int, lowest: bool, block: dict) -> None:
    """A resolution's first decoder blocks: at the lowest, one with attention and one without; elsewhere, one
    that upsamples."""
    if lowest:
        dec[f"{res}x{res}_in0"] = Block(cout, cout, attention=True, **block)
        dec[f"{res}x{res}_in1"] = Block(cout, cout, **block)
    else:
        dec[f"{res}x{res}_up"] = Block(cout, cout, up=True, **block)


def _decode(dec, x, skips, emb):
    """The decoder blocks of both U-Nets: a block whose input is wider than x takes the next skip first."""
    if x.shape[1] != dec.in_channels:
        x = torch.cat([x, skips.pop()], dim=1)
    return dec(x, emb)


class SongUNet(nn.Module):
    """DDPM++ / NCSN++ (Song et al., 2021) as EDM configures them; arguments as NVlabs' SongUNet records them."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0, model_channels=128,
                 channel_mult=(1, 2, 2, 2), channel_mult_emb=4, num_blocks=4, attn_resolutions=(16,), dropout=0.10,
                 label_dropout=0, embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                 decoder_type="standard", resample_filter=(1, 1)):
        super().__init__()
        if embedding_type not in ("fourier", "positional") or encoder_type not in ("standard", "skip", "residual") \
                or decoder_type not in ("standard", "skip"):
            raise ValueError(f"SongUNet: unknown embedding/encoder/decoder ({embedding_type}, {encoder_type}, {decoder_type})")
        emb, noise = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        block = dict(emb=emb, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                     resample_filter=resample_filter, resample_proj=True, adaptive_scale=False)
        self.label_dim = label_dim
        self.map_noise = PositionalEmbedding(noise, endpoint=True) if embedding_type == "positional" \
            else FourierEmbedding(noise)
        self.map_label = nn.Linear(label_dim, noise) if label_dim else None
        self.map_augment = nn.Linear(augment_dim, noise, bias=False) if augment_dim else None
        self.map_layer0, self.map_layer1 = nn.Linear(noise, emb), nn.Linear(emb, emb)
        self.enc, cout, caux = nn.ModuleDict(), in_channels, in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"], cout = Conv(cout, model_channels, 3), model_channels
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv(caux, caux, 0, down=True, resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv(caux, cout, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv(caux, cout, 3, down=True, resample_filter=resample_filter,
                                                                 fused=True)
                    caux = cout
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = Block(cout, model_channels * mult, attention=res in attn_resolutions,
                                                          **block)
                cout = model_channels * mult
        skips = [b.out_channels if isinstance(b, Block) else b.c_out for n, b in self.enc.items() if "aux" not in n]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            _decoder_entry(self.dec, res, cout, level == len(channel_mult) - 1, block)
            for i in range(num_blocks + 1):
                attention = i == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{i}"] = Block(cout + skips.pop(), model_channels * mult, attention=attention,
                                                          **block)
                cout = model_channels * mult
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv(out_channels, out_channels, 0, up=True,
                                                           resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = group_norm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv(cout, out_channels, 3)

    def embed(self, noise_labels, class_labels):
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # sin first, then cos
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels * math.sqrt(self.map_label.in_features))
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def forward(self, x, noise_labels, class_labels=None):
        emb = self.embed(noise_labels, class_labels)
        skips, aux = [], x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, Block) else block(x)
                skips.append(x)
        aux = tmp = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                aux = block(aux)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(F.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                x = _decode(block, x, skips, emb)
        return aux


class DhariwalUNet(nn.Module):
    """ADM (Dhariwal & Nichol, 2021) as EDM configures it for ImageNet-64; arguments as NVlabs' records them."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0, model_channels=192,
                 channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3, attn_resolutions=(32, 16, 8),
                 dropout=0.10, label_dropout=0):
        super().__init__()
        emb = model_channels * channel_mult_emb
        block = dict(emb=emb, channels_per_head=64, dropout=dropout)
        self.label_dim = label_dim
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = nn.Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0, self.map_layer1 = nn.Linear(model_channels, emb), nn.Linear(emb, emb)
        self.map_label = nn.Linear(label_dim, emb, bias=False) if label_dim else None
        self.enc, cout = nn.ModuleDict(), in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"], cout = Conv(cout, model_channels * mult, 3), model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, down=True, **block)
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = Block(cout, model_channels * mult, attention=res in attn_resolutions,
                                                          **block)
                cout = model_channels * mult
        skips = [b.out_channels if isinstance(b, Block) else b.c_out for b in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            _decoder_entry(self.dec, res, cout, level == len(channel_mult) - 1, block)
            for i in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{i}"] = Block(cout + skips.pop(), model_channels * mult,
                                                          attention=res in attn_resolutions, **block)
                cout = model_channels * mult
        self.out_norm = group_norm(cout)
        self.out_conv = Conv(cout, out_channels, 3)

    def embed(self, noise_labels, class_labels):
        emb = self.map_layer1(F.silu(self.map_layer0(self.map_noise(noise_labels))))
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels)
        return F.silu(emb)

    def forward(self, x, noise_labels, class_labels=None):
        emb = self.embed(noise_labels, class_labels)
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, Block) else block(x)
            skips.append(x)
        for block in self.dec.values():
            x = _decode(block, x, skips, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


ARCHITECTURES = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


class EDMNetwork(nn.Module):
    """One of EDM's networks behind our network interface: `net(z, log_snr, labels)` with integer labels; EDM's
    network gets c_noise = ln(sigma) / 4 = -log_snr / 8 and one-hot labels (`num_classes` of them)."""

    def __init__(self, in_channels: int, out_heads: int = 1, architecture: str = "SongUNet", kwargs: dict = None,
                 dropout=None):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"an EDM network of class {architecture}, which is not known here (known: "
                             f"{', '.join(ARCHITECTURES)})")
        kwargs = dict(kwargs or {})
        if dropout is not None:
            kwargs["dropout"] = float(dropout)
        self.architecture, self.kwargs = architecture, kwargs
        self.inner = ARCHITECTURES[architecture](in_channels=in_channels, out_channels=in_channels * out_heads, **kwargs)
        self.num_classes = int(kwargs.get("label_dim") or 0) or None

    def forward(self, z, log_snr, labels=None):
        one_hot = F.one_hot(labels, self.num_classes).to(z.dtype) if self.num_classes and labels is not None else None
        return self.inner(z, -log_snr.reshape(-1).to(z.dtype) / 8, one_hot)
