"""
An independent transcription of the authors' IVT forward pass, written directly against the
original checkpoint's tensor names: the converter and IVTModel are checked against it, so a renaming or a
modelling mistake cannot hide in both at once.
"""

import torch
import torch.nn.functional as F


def _block(x, sd, prefix, num_heads, mlp, additive_mask):
    batch, length, width = x.shape
    h = F.layer_norm(x, (width,), sd[prefix + "norm1.weight"], sd[prefix + "norm1.bias"], eps=1e-6)
    qkv = F.linear(h, sd[prefix + "attn.qkv.weight"], sd[prefix + "attn.qkv.bias"])
    qkv = qkv.reshape(batch, length, 3, num_heads, width // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = (q @ k.transpose(-2, -1)) * (width // num_heads) ** -0.5
    if additive_mask is not None:
        scores = scores + additive_mask
    h = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, width)
    x = x + F.linear(h, sd[prefix + "attn.proj.weight"], sd[prefix + "attn.proj.bias"])
    h = F.layer_norm(x, (width,), sd[prefix + "norm2.weight"], sd[prefix + "norm2.bias"], eps=1e-6)
    h = F.linear(h, sd[prefix + f"{mlp}.fc1.weight"], sd[prefix + f"{mlp}.fc1.bias"])
    h = F.linear(F.gelu(h), sd[prefix + f"{mlp}.fc2.weight"], sd[prefix + f"{mlp}.fc2.bias"])
    return x + h


def _encode(x, sd, num_heads, mlp, additive_mask):
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder_vl.blocks."))
    for i in range(depth):
        x = _block(x, sd, f"encoder_vl.blocks.{i}.", num_heads, mlp, additive_mask)
    width = x.shape[-1]
    x = F.layer_norm(x, (width,), sd["encoder_vl.norm.weight"], sd["encoder_vl.norm.bias"], eps=1e-6)
    return x[:, 0]


def original_image_features(sd, pixel_values, num_heads, stride):
    x = F.conv2d(pixel_values, sd["encoder_vl.patch_embed.proj.weight"], sd["encoder_vl.patch_embed.proj.bias"], stride=stride)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["encoder_vl.cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + sd["encoder_vl.pos_embed"] + sd["encoder_vl.type_embed"]
    return _encode(x, sd, num_heads, "mlp_vis", None)


def original_text_features(sd, input_ids, attention_mask, num_heads):
    p = "encoder_vl.embeddings."
    length = input_ids.shape[1]
    x = (
        sd[p + "word_embeddings.weight"][input_ids]
        + sd[p + "position_embeddings.weight"][:length].unsqueeze(0)
        + sd[p + "token_type_embeddings.weight"][0]
    )
    x = F.layer_norm(x, (x.shape[-1],), sd[p + "LayerNorm.weight"], sd[p + "LayerNorm.bias"], eps=1e-12)
    additive_mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
    return _encode(x, sd, num_heads, "mlp_txt", additive_mask)


def random_original_checkpoint(width, depth, vocab, stride, seed=0, image_tokens=None, ddp=True):
    """A random state dict in the authors' layout (384 x 128 input), with DDP prefixes and non-encoder extras."""
    g = torch.Generator().manual_seed(seed)
    n = image_tokens or (((384 - 16) // stride + 1) * ((128 - 16) // stride + 1) + 1)
    shapes = {
        "cls_token": (1, 1, width),
        "pos_embed": (1, n, width),
        "type_embed": (1, n, width),
        "patch_embed.proj.weight": (width, 3, 16, 16),
        "patch_embed.proj.bias": (width,),
        "embeddings.word_embeddings.weight": (vocab, width),
        "embeddings.position_embeddings.weight": (512, width),
        "embeddings.token_type_embeddings.weight": (2, width),
        "embeddings.LayerNorm.weight": (width,),
        "embeddings.LayerNorm.bias": (width,),
        "norm.weight": (width,),
        "norm.bias": (width,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (width,), b + "norm1.bias": (width,),
            b + "norm2.weight": (width,), b + "norm2.bias": (width,),
            b + "attn.qkv.weight": (3 * width, width), b + "attn.qkv.bias": (3 * width,),
            b + "attn.proj.weight": (width, width), b + "attn.proj.bias": (width,),
        })
        for mlp in ("mlp_vis", "mlp_txt"):
            shapes.update({
                b + f"{mlp}.fc1.weight": (4 * width, width), b + f"{mlp}.fc1.bias": (4 * width,),
                b + f"{mlp}.fc2.weight": (width, 4 * width), b + f"{mlp}.fc2.bias": (width,),
            })
    prefix = "module.encoder_vl." if ddp else "encoder_vl."
    sd = {}
    for key, shape in shapes.items():
        scale = 1.0 if "norm" in key.lower() and key.endswith("weight") else 0.05
        base = 1.0 if scale == 1.0 else 0.0
        sd[prefix + key] = base + scale * torch.randn(shape, generator=g)
    sd[prefix + "embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    extra = "module." if ddp else ""
    sd[extra + "temp"] = torch.tensor(0.07)
    sd[extra + "classifier_img.weight"] = torch.randn(11, width, generator=g)
    sd[extra + "bottleneck_img.weight"] = torch.ones(width)
    sd[extra + "bottleneck_img.bias"] = torch.zeros(width)
    sd[extra + "bottleneck_img.running_mean"] = torch.zeros(width)
    sd[extra + "bottleneck_img.running_var"] = torch.ones(width)
    sd[extra + "bottleneck_img.num_batches_tracked"] = torch.tensor(0)
    return sd
