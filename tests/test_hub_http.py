"""Uploads and Hub errors through the real huggingface_hub API, with only the HTTP layer mocked.

huggingface_hub sends every request through one ``httpx2.Client`` made by the factory that
``huggingface_hub.utils._http.set_client_factory`` installs. The fixture installs a client whose
transport is an ``httpx2.MockTransport`` (keeping huggingface_hub's own request hook), so HfApi,
its commit/upload pipeline and its error mapping all run as in production; the mock only plays
the Hub's endpoints and records what was sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import ModelCard, constants
from huggingface_hub.utils import _http

from maestro.cli import main
from maestro.errors import ConfigError
from maestro.hub import push_to_hub
from maestro.hub.folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from maestro.models import MaestroEncoder, from_pretrained
from maestro.models.synthetic import tiny_config

TOKEN = "hf_test_token"
COMMIT = "d" * 40


@dataclass
class Sent:
    method: str
    path: str
    headers: httpx2.Headers
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def commit_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]


class MockHub:
    """Plays the Hub endpoints an upload uses; ``fail`` maps a path suffix to (status, error code)."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.fail: dict[str, tuple[int, str | None]] = {}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        sent = Sent(request.method, request.url.path, request.headers, request.read())
        self.sent.append(sent)
        for suffix, (status, code) in self.fail.items():
            if sent.path.endswith(suffix) or f"{suffix}/" in sent.path:
                headers = {"X-Error-Code": code} if code else {}
                return httpx2.Response(status, headers=headers, json={"error": "mocked failure"})
        path = sent.path
        if path == "/api/repos/create":
            name = sent.json()
            return httpx2.Response(
                200, json={"url": f"https://huggingface.co/{name['organization']}/{name['name']}"}
            )
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if "/branch/" in path:
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = sent.json()["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if "/commit/" in path:
            repo = path.split("/api/models/")[1].split("/commit/")[0]
            return httpx2.Response(
                200, json={"commitUrl": f"https://huggingface.co/{repo}/commit/{COMMIT}", "commitOid": COMMIT}
            )
        return httpx2.Response(404, json={"error": "not mocked"})

    def to(self, kind: str) -> list[Sent]:
        return [sent for sent in self.sent if kind in sent.path]

    def committed(self, sent: Sent) -> dict[str, bytes]:
        return {
            line["value"]["path"]: base64.b64decode(line["value"]["content"])
            for line in sent.commit_lines()
            if line["key"] == "file"
        }


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MockHub]:
    mock = MockHub()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))

    def factory() -> httpx2.Client:
        return httpx2.Client(
            transport=httpx2.MockTransport(mock),
            event_hooks={"request": [_http.hf_request_event_hook]},
            follow_redirects=True,
        )

    _http.set_client_factory(factory)
    yield mock
    _http.set_client_factory(_http.default_client_factory)


def _only(requests: list[Sent]) -> Sent:
    assert len(requests) == 1, [r.path for r in requests]
    return requests[0]


def test_publish_creates_the_repo_branch_and_one_commit_with_the_three_files(hub, tmp_path):
    from test_hub_publish import pretrain_checkpoint

    pretrain_checkpoint(tmp_path / "run")
    out = tmp_path / "out"
    assert (
        main(
            [
                "publish",
                str(tmp_path / "run"),
                "--repo",
                "org/name",
                "--private",
                "--revision",
                "v1",
                "--out",
                str(out),
            ]
        )
        == 0
    )

    create = _only(hub.to("/api/repos/create")).json()
    assert create["organization"] == "org" and create["name"] == "name"
    assert create.get("private") is True or create.get("visibility") == "private"
    assert _only(hub.to("/api/models/org/name/branch/v1")).method == "POST"
    preupload = _only(hub.to("/api/models/org/name/preupload/v1")).json()
    assert sorted(f["path"] for f in preupload["files"]) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]

    commit = _only(hub.to("/api/models/org/name/commit/v1"))
    assert commit.headers["authorization"] == f"Bearer {TOKEN}"
    header = commit.commit_lines()[0]
    assert header["key"] == "header" and header["value"]["summary"].startswith("Publish maestro-encoder")
    files = hub.committed(commit)
    assert sorted(files) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    for name, content in files.items():
        assert content == (out / name).read_bytes(), name
    assert json.loads(files[CONFIG_NAME])["model_type"] == "maestro-encoder"
    card = ModelCard(files[CARD_NAME].decode())
    assert card.data.library_name == "maestro-eo" and 'from_pretrained("org/name@v1")' in card.text


def test_push_to_hub_uploads_what_from_pretrained_reads_back(hub, tmp_path):
    torch.manual_seed(0)
    encoder = MaestroEncoder(tiny_config().encoder)
    url = encoder.push_to_hub("org/enc")
    assert url == f"https://huggingface.co/org/enc/commit/{COMMIT}"
    assert not hub.to("/branch/")
    commit = _only(hub.to("/api/models/org/enc/commit/main"))
    files = hub.committed(commit)
    assert sorted(files) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    assert 'MaestroEncoder.from_pretrained("org/enc")' in files[CARD_NAME].decode()

    folder = tmp_path / "downloaded"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    loaded = from_pretrained(folder)
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_a_refused_token_says_how_to_log_in(hub):
    hub.fail["/api/repos/create"] = (401, None)
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="hf auth login"):
        push_to_hub(MaestroEncoder(tiny_config().encoder), "org/enc")
    assert not hub.to("/commit/")


def test_no_upload_while_offline(hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        push_to_hub(MaestroEncoder(tiny_config().encoder), "org/enc")
    assert not hub.sent


@pytest.mark.parametrize(
    ("spec", "fail", "expected"),
    [
        (
            "org/missing",
            ("/api/models/org/missing/revision/main", (404, "RepoNotFound")),
            "Hub repo org/missing does not exist or is private",
        ),
        (
            "org/name@nope",
            ("/api/models/org/name/revision/nope", (404, "RevisionNotFound")),
            "Hub repo org/name has no revision 'nope': give an existing branch, tag or commit",
        ),
        (
            "org/gated",
            ("/api/models/org/gated/revision/main", (403, "GatedRepo")),
            "is gated: accept its terms",
        ),
    ],
)
def test_hub_errors_say_what_to_do(hub, spec: str, fail: tuple, expected: str):
    hub.fail[fail[0]] = fail[1]
    with pytest.raises(ConfigError, match=expected):
        from_pretrained(spec)
    assert hub.to(fail[0])


def test_a_private_repo_hint_names_the_login(hub):
    hub.fail["/api/models/org/private/revision/main"] = (401, "RepoNotFound")
    with pytest.raises(ConfigError, match="log in"):
        from_pretrained("org/private")
