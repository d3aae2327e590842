"""
An independent transcription of IRRA's inference forward pass, written directly against the tensor names of IRRA's
checkpoints with `nn.MultiheadAttention` (as IRRA's code runs it): the converter and IRRAModel are checked against it,
so that a renaming, a transposed projection or a modelling mistake cannot hide in both at once.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _block(x, sd, prefix, additive_mask):
    """Pre-LN residual block on (length, batch, width) tokens; QuickGELU MLP; heads = width / 64."""
    width = x.shape[-1]
    attention = nn.MultiheadAttention(width, width // 64)
    attention.load_state_dict(
        {
            "in_proj_weight": sd[prefix + "attn.in_proj_weight"],
            "in_proj_bias": sd[prefix + "attn.in_proj_bias"],
            "out_proj.weight": sd[prefix + "attn.out_proj.weight"],
            "out_proj.bias": sd[prefix + "attn.out_proj.bias"],
        }
    )
    h = F.layer_norm(x, (width,), sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"], eps=1e-5)
    x = x + attention(h, h, h, need_weights=False, attn_mask=additive_mask)[0]
    h = F.layer_norm(x, (width,), sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"], eps=1e-5)
    h = F.linear(h, sd[prefix + "mlp.c_fc.weight"], sd[prefix + "mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)
    return x + F.linear(h, sd[prefix + "mlp.c_proj.weight"], sd[prefix + "mlp.c_proj.bias"])


def _transformer(x, sd, prefix, additive_mask=None):
    depth = 1 + max(int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix))
    x = x.permute(1, 0, 2)
    for i in range(depth):
        x = _block(x, sd, f"{prefix}{i}.", additive_mask)
    return x.permute(1, 0, 2)


def float_state_dict(checkpoint_state_dict):
    """The `base_model.` tensors in fp32, with any DDP prefix removed."""
    sd = {k.removeprefix("module."): v for k, v in checkpoint_state_dict.items()}
    return {k.removeprefix("base_model."): v.float() for k, v in sd.items() if k.startswith("base_model.")}


def irra_image_features(sd, pixel_values, stride):
    """(ln_post(x) @ proj)[:, 0] over [class, patches] + positions, after ln_pre and the transformer."""
    x = F.conv2d(pixel_values, sd["visual.conv1.weight"], stride=stride)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    class_token = sd["visual.class_embedding"] + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([class_token, x], dim=1) + sd["visual.positional_embedding"]
    width = x.shape[-1]
    x = F.layer_norm(x, (width,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], eps=1e-5)
    x = _transformer(x, sd, "visual.transformer.resblocks.")
    x = F.layer_norm(x, (width,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], eps=1e-5)
    return (x @ sd["visual.proj"])[:, 0]


def irra_text_features(sd, input_ids):
    """(ln_final(x) @ text_projection) at argmax(ids), with an additive -inf causal mask over all positions."""
    length = input_ids.shape[1]
    x = sd["token_embedding.weight"][input_ids] + sd["positional_embedding"][:length]
    causal = torch.full((length, length), float("-inf")).triu_(1)
    x = _transformer(x, sd, "transformer.resblocks.", causal)
    x = F.layer_norm(x, (x.shape[-1],), sd["ln_final.weight"], sd["ln_final.bias"], eps=1e-5)
    x = x @ sd["text_projection"]
    return x[torch.arange(x.shape[0]), input_ids.argmax(dim=-1)]


def random_irra_checkpoint(
    vision_width=64, text_width=64, depth=2, embed=32, stride=16, vocab=49408, context=77, seed=0, ddp=False
):
    """
    A random state dict in IRRA's layout for 384 x 128 images: fp16 for every Linear / Conv / attention projection
    and for `proj` / `text_projection`, fp32 for embeddings and LayerNorms, plus IRRA's training-only modules.
    """
    g = torch.Generator().manual_seed(seed)
    positions = ((384 - 16) // stride + 1) * ((128 - 16) // stride + 1) + 1
    half, full = torch.float16, torch.float32
    shapes = {
        "visual.conv1.weight": ((vision_width, 3, 16, 16), half),
        "visual.class_embedding": ((vision_width,), full),
        "visual.positional_embedding": ((positions, vision_width), full),
        "visual.ln_pre.weight": ((vision_width,), full),
        "visual.ln_pre.bias": ((vision_width,), full),
        "visual.ln_post.weight": ((vision_width,), full),
        "visual.ln_post.bias": ((vision_width,), full),
        "visual.proj": ((vision_width, embed), half),
        "token_embedding.weight": ((vocab, text_width), full),
        "positional_embedding": ((context, text_width), full),
        "ln_final.weight": ((text_width,), full),
        "ln_final.bias": ((text_width,), full),
        "text_projection": ((text_width, embed), half),
    }
    for tower, width in (("visual.transformer", vision_width), ("transformer", text_width)):
        for i in range(depth):
            b = f"{tower}.resblocks.{i}."
            shapes.update({
                b + "attn.in_proj_weight": ((3 * width, width), half), b + "attn.in_proj_bias": ((3 * width,), half),
                b + "attn.out_proj.weight": ((width, width), half), b + "attn.out_proj.bias": ((width,), half),
                b + "ln_1.weight": ((width,), full), b + "ln_1.bias": ((width,), full),
                b + "ln_2.weight": ((width,), full), b + "ln_2.bias": ((width,), full),
                b + "mlp.c_fc.weight": ((4 * width, width), half), b + "mlp.c_fc.bias": ((4 * width,), half),
                b + "mlp.c_proj.weight": ((width, 4 * width), half), b + "mlp.c_proj.bias": ((width,), half),
            })
    sd = {}
    for key, (shape, dtype) in shapes.items():
        if ".ln_" in "." + key and key.endswith(".weight"):
            value = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            value = 0.1 * torch.randn(shape, generator=g)
        sd["base_model." + key] = value.to(dtype)
    extras = {
        "classifier.weight": (11, embed), "classifier.bias": (11,),
        "cross_attn.in_proj_weight": (3 * embed, embed), "cross_attn.in_proj_bias": (3 * embed,),
        "cross_attn.out_proj.weight": (embed, embed), "cross_attn.out_proj.bias": (embed,),
        "cross_modal_transformer.resblocks.0.attn.in_proj_weight": (3 * embed, embed),
        "cross_modal_transformer.resblocks.0.mlp.c_fc.weight": (4 * embed, embed),
        "ln_pre_t.weight": (embed,), "ln_pre_i.weight": (embed,), "ln_post.weight": (embed,),
        "mlm_head.dense.weight": (embed, embed), "mlm_head.fc.weight": (vocab, embed),
    }
    for key, shape in extras.items():
        sd[key] = torch.randn(shape, generator=g).half()
    return {("module." + k if ddp else k): v for k, v in sd.items()}
