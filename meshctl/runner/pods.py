"""From a Deployment's pod template to the command line and environment of a local pod process.

`meshctl up` runs a container's ``command`` + ``args`` as a local process (the ``image`` is ignored),
so the same manifest works here and on a cluster. Kubernetes' rules apply: ``$(VAR)`` in command and
args expands from the container's environment, ``$$(VAR)`` stays literal, an undefined reference
stays as written; ``command`` absent means the image's entrypoint, which has no local meaning, so
``args`` alone run as the command. Each pod also gets the downward-API variables Kubernetes
manifests commonly wire in (``POD_IP``, ``POD_NAME``, ``POD_NAMESPACE``, ``SERVICE_ACCOUNT``,
``NODE_NAME``) and, in proxy mode, the proxy variables that route its traffic through its node's
explicit proxy port.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import attrs

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class PodCommandError(ValueError):
    """A pod template that cannot become a process (no command and no args)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes dependent-variable expansion (``$(VAR)``, ``$$`` → ``$``, unknown left as is)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def expand_env(entries: Sequence[tuple[str, str]], base: Mapping[str, str]) -> dict[str, str]:
    """Container ``env`` in order: each value may refer to ``base`` and to entries defined before it."""
    resolved = dict(base)
    for name, value in entries:
        resolved[name] = expand(value, resolved)
    return resolved


@attrs.frozen(kw_only=True)
class PodIdentity:
    name: str
    namespace: str
    ip: str
    node: str
    service_account: str = "default"


def downward_env(pod: PodIdentity) -> dict[str, str]:
    return {
        "POD_IP": pod.ip,
        "POD_NAME": pod.name,
        "POD_NAMESPACE": pod.namespace,
        "SERVICE_ACCOUNT": pod.service_account,
        "NODE_NAME": pod.node,
    }


def proxy_env(proxy_address: str, proxy_port: int = 15080) -> dict[str, str]:
    """Variables that send a pod's outbound traffic to its node's explicit proxy (proxy mode).

    Lower- and upper-case forms both: curl reads only lower-case ``http_proxy``, other tools only
    upper-case. ``ALL_PROXY`` uses ``socks5h`` so names are resolved by the mesh, not locally.
    """
    http = f"http://{proxy_address}:{proxy_port}"
    socks = f"socks5h://{proxy_address}:{proxy_port}"
    no_proxy = "localhost,127.0.0.1"
    return {
        "http_proxy": http,
        "HTTP_PROXY": http,
        "https_proxy": http,
        "HTTPS_PROXY": http,
        "all_proxy": socks,
        "ALL_PROXY": socks,
        "no_proxy": no_proxy,
        "NO_PROXY": no_proxy,
    }


def pod_command(
    command: Sequence[str], args: Sequence[str], container_env: Sequence[tuple[str, str]], pod: PodIdentity,
    *, extra_env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and the environment (on top of the runner's own) of one pod process."""
    if not command and not args:
        raise PodCommandError(
            f"pod {pod.namespace}/{pod.name}: the container has neither command nor args; locally the "
            "image is not run, so give the command to start"
        )
    env = expand_env(container_env, {**downward_env(pod), **(extra_env or {})})
    argv = [expand(part, env) for part in (*command, *args)]
    return argv, env
