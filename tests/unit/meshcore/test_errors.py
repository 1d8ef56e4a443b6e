from meshcore.errors import MeshError


class ConnectTimeout(MeshError):
    hint = "connection to {peer}:15008 timed out; is something blocking the HBONE port?"
    response_flag = "UF"


def test_hint_is_formatted_from_context() -> None:
    err = ConnectTimeout("upstream connect timeout", peer="10.0.0.1")
    assert str(err) == (
        "upstream connect timeout (hint: connection to 10.0.0.1:15008 timed out; "
        "is something blocking the HBONE port?)"
    )
    assert err.response_flag == "UF"


def test_missing_context_keeps_the_raw_hint() -> None:
    assert "{peer}" in str(ConnectTimeout("boom"))


def test_plain_error_has_no_hint_suffix() -> None:
    assert str(MeshError("plain")) == "plain"
