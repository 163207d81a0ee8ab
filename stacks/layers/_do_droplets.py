"""What the droplet-based DigitalOcean layers share: settings types and base models,
declared resources, upstream network, and the secret seed.

The secret seed: layers whose nodes boot with keys or tokens derive them all from one
``secret_seed`` setting (see :mod:`components.do._pki` for why derived and not random).
Keep it in the stack config as a Pulumi secret::

    pulumi config set --secret --path 'infragym:settings.secret_seed' "$(openssl rand -hex 32)"

When it is absent the layer generates one, warns, and exports it as the secret output
``secret_seed``. Store that value as above before the next ``pulumi up``: a new seed means
new keys, hence new ``user_data``, hence replaced droplets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field, SecretStr

from stacks.registry import LayerContext, LayerSettings

if TYPE_CHECKING:
    from components.do._nodes import DropletSpec, Network

MAX_DROPLETS = 100
"""Upper bound of a count setting; the account's Droplet limit (25 by default, do-facts
§1) binds first unless DigitalOcean raised it."""

DropletCount = Annotated[int, Field(ge=1, le=MAX_DROPLETS)]
"""A number of droplets: at least one."""


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError(
            f"{value} servers cannot keep a Raft quorum through a failure any better than "
            f"{value - 1}; use an odd number (1, 3 or 5)"
        )
    return value


ServerCount = Annotated[int, Field(ge=1, le=7), AfterValidator(_odd)]
"""Raft servers (Consul, Nomad, Swarm managers): odd, 1 to 7."""

SshKey = Annotated[str, Field(pattern=r"^(\d+|([0-9a-f]{2}:){15}[0-9a-f]{2})$")]
"""A DigitalOcean SSH key: its numeric id or its MD5 fingerprint (``aa:bb:...``)."""


def _seed(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        from components.do._pki import check_seed

        check_seed(value.get_secret_value())
    return value


SecretSeed = Annotated[SecretStr | None, AfterValidator(_seed)]
"""A secret seed of at least 32 characters, or ``None`` to generate one (see above)."""

SECRET_SEED_DESCRIPTION = (
    "Secret the layer's keys and tokens are derived from (>= 32 characters; set it with "
    "`pulumi config set --secret`). Absent: one is generated and exported as the secret "
    "output secret_seed, which must be stored before the next `up` or the droplets are "
    "replaced."
)

CORE_OUTPUTS = ("region", "vpc_id", "vpc_ip_range", "tag")

DROPLET_LAYER_RESOURCES: tuple[str, ...] = (
    "digitalocean:index/tag:Tag",
    "digitalocean:index/firewall:Firewall",
    "digitalocean:index/droplet:Droplet",
    "digitalocean:index/projectResources:ProjectResources",
)
"""What every droplet layer's component creates: role tags, their firewalls, droplets,
and the droplets' project membership."""


class DropletLayerSettings(LayerSettings):
    """Settings every droplet layer has: the image and SSH keys of its droplets."""

    image: str = Field("ubuntu-24-04-x64", description="Droplet image (Ubuntu 24.04).")
    ssh_keys: list[SshKey] = Field(
        default_factory=list, description="DigitalOcean SSH key ids or fingerprints."
    )

    def droplet(self, size: str) -> DropletSpec:
        """A droplet of ``size`` with the layer's image and SSH keys."""
        return droplet_spec(size, self.image, self.ssh_keys)


class SeededDropletLayerSettings(DropletLayerSettings):
    """Droplet layer settings plus the secret seed its nodes' keys and tokens derive from."""

    secret_seed: SecretSeed = Field(None, description=SECRET_SEED_DESCRIPTION)


def network(ctx: LayerContext) -> Network:
    """The do-core network from the upstream outputs.

    Raises:
        ConfigError: An upstream do-core output is missing.
    """
    from components.do._nodes import Network

    region, vpc_id, vpc_ip_range, tag = (ctx.need(k) for k in CORE_OUTPUTS)
    return Network(
        deployment=ctx.deployment,
        region=region,
        vpc_id=vpc_id,
        vpc_ip_range=vpc_ip_range,
        tag=tag,
        project_id=ctx.upstream.get("project_id"),
    )


def droplet_spec(size: str, image: str, ssh_keys: list[str]) -> DropletSpec:
    """A :class:`~components.do._nodes.DropletSpec` from settings fields."""
    from components.do._nodes import DropletSpec

    return DropletSpec(size=size, image=image, ssh_keys=tuple(ssh_keys))


def secret_seed(ctx: LayerContext, seed: SecretStr | None) -> tuple[str, Any]:
    """The layer's seed, and the secret output that exports it.

    A missing seed is generated (and a warning tells the user to store it).
    """
    import pulumi

    from components.do._pki import new_seed

    if seed is not None:
        value = seed.get_secret_value()
    else:
        value = new_seed()
        pulumi.log.warn(
            "no secret_seed in the settings: generated one. Store it before the next "
            "`pulumi up`, or every droplet of this layer is replaced: pulumi stack output "
            "secret_seed --show-secrets, then pulumi config set --secret --path "
            "'infragym:settings.secret_seed' <value>"
        )
    return value, pulumi.Output.secret(value)
