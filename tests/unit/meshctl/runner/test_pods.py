"""Deployment containers become local processes with Kubernetes' expansion rules."""

import pytest

from meshctl.runner.pods import PodCommandError, PodIdentity, expand, expand_env, pod_command, proxy_env

POD = PodIdentity(name="search-v1-0", namespace="prod", ip="127.9.1.0", node="node-0", service_account="search")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--bind=$(POD_IP)", "--bind=127.9.1.0"),
        ("$(POD_IP):$(PORT)", "127.9.1.0:8080"),
        ("$$(POD_IP)", "$(POD_IP)"),  # escaped reference stays literal
        ("$(UNDEFINED)", "$(UNDEFINED)"),  # unknown reference stays as written
        ("$POD_IP", "$POD_IP"),  # shell syntax is not Kubernetes syntax
        ("cost: $$5", "cost: $5"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"POD_IP": "127.9.1.0", "PORT": "8080"}) == expected


def test_env_entries_see_earlier_entries_only() -> None:
    env = expand_env([("A", "x"), ("B", "$(A)-$(C)"), ("C", "z")], {})
    assert env == {"A": "x", "B": "x-$(C)", "C": "z"}


def test_pod_command_with_downward_variables_and_proxy() -> None:
    argv, env = pod_command(
        ["python3", "-m", "http.server"],
        ["--bind", "$(POD_IP)", "$(PORT)"],
        [("PORT", "8080")],
        POD,
        extra_env=proxy_env("127.9.0.1"),
    )
    assert argv == ["python3", "-m", "http.server", "--bind", "127.9.1.0", "8080"]
    assert env["POD_NAMESPACE"] == "prod" and env["SERVICE_ACCOUNT"] == "search" and env["NODE_NAME"] == "node-0"
    assert env["http_proxy"] == env["HTTP_PROXY"] == "http://127.9.0.1:15080"
    assert env["ALL_PROXY"] == "socks5h://127.9.0.1:15080"
    assert env["NO_PROXY"] == "localhost,127.0.0.1"


def test_args_alone_run_as_the_command() -> None:
    argv, _ = pod_command([], ["sleep", "3600"], [], POD)
    assert argv == ["sleep", "3600"]


def test_neither_command_nor_args_is_explained() -> None:
    with pytest.raises(PodCommandError, match="neither command nor args"):
        pod_command([], [], [], POD)
