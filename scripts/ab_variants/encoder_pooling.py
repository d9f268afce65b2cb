"""The encoder with only its first stage in the space-to-depth form (`Conv2d.pooled`: as before 2026-12-04, and
as now off CPU) against every stage in it (the present code on CPU). For scripts/update_ab.py."""

from agents.common import conv

present = conv.ConvEncoder.__call__


def first_stage_only(self, image):
    x = image.astype(conv.jnp.float32) / 255.0 - 0.5
    for index, (layer, norm) in enumerate(zip(self.convs, self.norms)):
        x = layer.pooled(x) if index == 0 else conv.max_pool_2x2(layer(x))
        x = conv.normed_activation(norm, self.act, x)
    return x.reshape(*x.shape[:-3], -1)


def use_first_stage_only():
    conv.ConvEncoder.__call__ = first_stage_only


def use_every_stage():
    conv.ConvEncoder.__call__ = present


VARIANTS = {"first stage pooled": use_first_stage_only, "every stage pooled": use_every_stage}
